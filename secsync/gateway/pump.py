"""The I/O around the gateway's core, per document and per socket (see :mod:`.server`).

:class:`DocumentFeed` feeds one document's :class:`~secsync.gateway.view.DocumentView` from an
ordered consumer on its stored subjects and hands what it releases, and the document's ephemeral
messages, to the sockets on it. :class:`SocketPump` carries out what one socket's
:class:`~secsync.gateway.connection.GatewayConnection` decides: frames through a bounded writer
queue, access checks and publishes in order, closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol

from secsync.config import GatewayConfig, SecsyncConfig
from secsync.errors import SecsyncError
from secsync.gateway.connection import (
    Access,
    AskAccess,
    Close,
    GatewayConnection,
    Ignored,
    Output,
    Publish,
    PublishResult,
    Send,
)
from secsync.gateway.params import ConnectionParams
from secsync.gateway.view import DocumentView, ViewEvent
from secsync.logs import get_logger
from secsync.protocol import wire
from secsync.protocol.messages import EphemeralMessage
from secsync.transport import jetstream
from secsync.transport.client import SecsyncClient
from secsync.transport.stream_io import JetStreamLink
from secsync.transport.subjects import DocumentSubjects

log = get_logger("secsync.gateway")

SendAsgi = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_CLOSE = object()


class GatewayHost(Protocol):
    """What feeds and sockets need of the gateway that owns them."""

    config: GatewayConfig
    secsync_config: SecsyncConfig

    async def check(self, ask: AskAccess) -> Access | bool: ...

    async def publish(self, feed: DocumentFeed, publish: Publish) -> PublishResult: ...

    def expire(self, feed: DocumentFeed) -> None:
        """``feed`` has had no socket for ``idle_document_seconds``: stop it."""
        ...


class DocumentFeed:
    """One document's view, fed from the stream, and the sockets served from it."""

    def __init__(self, gateway: GatewayHost, doc_id: str) -> None:
        self.gateway = gateway
        self.doc_id = doc_id
        config = gateway.secsync_config
        self.subjects = DocumentSubjects.of(doc_id, config.subject_root)
        self.view = DocumentView(
            doc_id,
            self.subjects,
            max_message_bytes=config.max_message_bytes,
            max_held=gateway.config.max_held_updates,
        )
        self.sockets: set[SocketPump] = set()
        self.users = 0
        self.ready = asyncio.Event()
        self.stored_at_start = 0
        self._link: JetStreamLink | None = None
        self._sub: Any = None
        self._ephemeral_sub: Any = None
        self._inbox: list[Any] = []
        self._linger: asyncio.TimerHandle | None = None
        self._stopped = False

    @property
    def link(self) -> JetStreamLink:
        assert self._link is not None
        return self._link

    async def start(self, client: SecsyncClient) -> None:
        self._link = JetStreamLink(client, self.gateway.secsync_config)
        subjects = self.subjects
        last_snapshot, last_update = await asyncio.gather(
            self.link.last(subjects.snapshot), self.link.last(subjects.update)
        )
        self.stored_at_start = max(
            last_snapshot.sequence if last_snapshot else 0,
            last_update.sequence if last_update else 0,
        )
        self._ephemeral_sub = await client.nc.subscribe(subjects.ephemeral, cb=self._on_ephemeral)
        self._sub = await self.link.follow(subjects.stored, 1, self._on_stored)
        if self.stored_at_start == 0:
            self.ready.set()

    async def stop(self) -> None:
        self._stopped = True
        if self._linger is not None:
            self._linger.cancel()
        sub, self._sub = self._sub, None
        if sub is not None and self._link is not None:
            await self.link.unfollow(sub)
        ephemeral, self._ephemeral_sub = self._ephemeral_sub, None
        if ephemeral is not None:
            with contextlib.suppress(Exception):
                await ephemeral.unsubscribe()

    def acquire(self) -> None:
        self.users += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and not self._stopped:
            self._linger = asyncio.get_running_loop().call_later(
                self.gateway.config.idle_document_seconds, self._expire
            )

    def _expire(self) -> None:
        if self.users == 0:
            self.gateway.expire(self)

    async def _on_stored(self, msg: Any) -> None:
        # A burst of deliveries is fed to the view in one go, once taken.
        self._inbox.append(jetstream.delivered(msg))
        if len(self._inbox) == 1:
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        inbox, self._inbox = self._inbox, []
        if self._stopped or not inbox:
            return
        events = self.view.feed(inbox)
        if events:
            for socket in list(self.sockets):
                socket.released(events)
        if self.view.last_sequence >= self.stored_at_start:
            self.ready.set()

    async def _on_ephemeral(self, msg: Any) -> None:
        try:
            message = wire.decode(
                msg.data,
                doc_id=self.doc_id,
                max_bytes=self.gateway.secsync_config.max_message_bytes,
            )
        except SecsyncError as exc:
            log.debug("ephemeral_dropped", code=exc.code)
            return
        if not isinstance(message, EphemeralMessage):
            log.debug("ephemeral_dropped", reason="not an ephemeral message")
            return
        for socket in list(self.sockets):
            socket.ephemeral(message)


class SocketPump:
    """One JS client's WebSocket: its connection core, and the carrying out of its outputs."""

    def __init__(
        self, gateway: GatewayHost, feed: DocumentFeed, params: ConnectionParams, send: SendAsgi
    ) -> None:
        self.gateway = gateway
        self.feed = feed
        self.conn = GatewayConnection(
            params,
            feed.view,
            ephemeral_subject=feed.subjects.ephemeral,
            max_frame_bytes=gateway.config.max_frame_bytes,
        )
        self._send = send
        self._writes: asyncio.Queue[object] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.writer = asyncio.create_task(self._write())

    # --- carrying out outputs ------------------------------------------------------------------

    def released(self, events: Iterable[ViewEvent]) -> None:
        self.perform(self.conn.released(events))

    def ephemeral(self, message: EphemeralMessage) -> None:
        self.perform(self.conn.ephemeral(message))

    def perform(self, outputs: list[Output]) -> None:
        """Carry out ``outputs`` now, up to the first that must be awaited; the rest in order
        in a task of this socket (broadcast checks)."""
        for index, output in enumerate(outputs):
            if isinstance(output, AskAccess | Publish):
                task = asyncio.create_task(self.run(outputs[index:]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            self._now(output)

    async def run(self, outputs: list[Output]) -> None:
        """Carry out ``outputs`` in order, awaiting access checks and publishes and carrying
        out what their answers give before the next output."""
        pending: deque[Output] = deque(outputs)
        while pending:
            output = pending.popleft()
            if isinstance(output, AskAccess):
                access = await self.gateway.check(output)
                pending.extendleft(reversed(self.conn.answer(output, access)))
            elif isinstance(output, Publish):
                result = await self.gateway.publish(self.feed, output)
                pending.extendleft(reversed(self.conn.outcome(output, result)))
            else:
                self._now(output)

    def _now(self, output: Output) -> None:
        if isinstance(output, Send):
            if self.closed.is_set():
                return
            if self._writes.qsize() >= self.gateway.config.max_queued_frames:
                log.info("gateway_client_too_slow", frames=self._writes.qsize())
                self.close()
                return
            self._writes.put_nowait(output.text())
        elif isinstance(output, Close):
            log.debug("gateway_closing", reason=output.reason)
            self.close()
        elif isinstance(output, Ignored):
            log.debug("gateway_ignored", reason=output.reason)

    def close(self) -> None:
        """Close after the frames queued so far."""
        if not self.closed.is_set():
            self.closed.set()
            self._writes.put_nowait(_CLOSE)

    async def _write(self) -> None:
        try:
            while True:
                item = await self._writes.get()
                if item is _CLOSE:
                    await self._send({"type": "websocket.close", "code": 1000})
                    return
                assert isinstance(item, str)
                await self._send({"type": "websocket.send", "text": item})
        except Exception as exc:  # the socket went away under us
            log.debug("gateway_write_failed", error=type(exc).__name__)
            self.closed.set()

    async def finish(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if not self.writer.done():
            self.close()
            try:
                await asyncio.wait_for(self.writer, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self.writer.cancel()
