"""Presence of one open document over core NATS: my state out (throttled), the peers' in.

Presence travels as ephemeral messages on core NATS, never on the stream: it is delivered in
well under a millisecond on a local broker, costs no disk, and leaves no stored trace of who
was active when. A late joiner learns the others' states from their next heartbeat
(``presence_heartbeat``) or at once when a peer proves its session to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog

from secsync.errors import NoActiveSnapshotError, SecsyncError
from secsync.protocol.events import Event, MessageRejected, PresenceChanged
from secsync.protocol.messages import MessageKind
from secsync.protocol.presence import PresenceTracker
from secsync.transport.waiting import wait_woken

if TYPE_CHECKING:
    import pycrdt

    from secsync.transport.document import Document

log = structlog.get_logger("secsync.presence")


class Presence:
    """Set my presence state with :meth:`set_local_state`; read the peers' from :attr:`states`.

    For a Yjs document, a ``pycrdt.Awareness`` is kept in step both ways: local changes to it
    are sent, and remote states appear in it under their Yjs client ids.
    """

    def __init__(self, document: Document, awareness: pycrdt.Awareness | None = None) -> None:
        self._document = document
        self._config = document.config
        self.tracker = PresenceTracker(
            document.session.public_key, timeout=self._config.presence_timeout
        )
        self.awareness = awareness
        self._dirty = False
        self._last_sent = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscription: str | None = None
        if awareness is not None:
            self.tracker.local_yjs_client_id = awareness.client_id
            self._subscription = awareness.observe(self._on_awareness)

    @property
    def states(self) -> dict[bytes, Any]:
        """The present peers' states, by public key."""
        return self.tracker.states

    def set_local_state(self, state: Any) -> None:
        """Share ``state`` (JSON-compatible; ``None`` to hide) with the peers, throttled.

        With a Yjs awareness, this sets its local state (which is then sent).
        """
        if self.awareness is not None:
            self.awareness.set_local_state(state)
        else:
            self._changed(state)

    def _changed(self, state: Any) -> None:
        self.tracker.local_state = state
        self._dirty = True
        self._wake.set()

    def _on_awareness(self, topic: str, args: tuple[Any, Any]) -> None:
        if topic != "update" or args[1] != "local" or self.awareness is None:
            return
        self._changed(self.awareness.get_local_state())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="secsync-presence")

    def peer_verified(self) -> None:
        """A peer proved its session: show it my state now rather than at the next heartbeat."""
        if self.tracker.local_state is not None:
            self._dirty = True
            self._wake.set()

    async def _run(self) -> None:
        cfg = self._config
        while True:
            now = time.monotonic()
            deadlines = []
            if self.tracker.local_state is not None:
                deadlines.append(self._last_sent + cfg.presence_heartbeat)
            if self._dirty:
                deadlines.append(self._last_sent + cfg.presence_interval)
            expiry = self.tracker.next_expiry()
            if expiry is not None:
                deadlines.append(expiry)
            # nothing to send and nobody to expire: sleep until woken
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            await wait_woken(self._wake, timeout)
            self._wake.clear()
            now = time.monotonic()
            self._document._emit(self._apply(self.tracker.expire(now)))
            due = self._dirty and now - self._last_sent >= cfg.presence_interval
            heartbeat = (
                self.tracker.local_state is not None
                and now - self._last_sent >= cfg.presence_heartbeat
            )
            if due or heartbeat:
                await self._send(self.tracker.heartbeat())
                self._dirty = False
                self._last_sent = now

    async def _send(self, payload: bytes) -> None:
        try:
            await self._document._publish_ephemeral(self._document.session.send_ephemeral(payload))
        except NoActiveSnapshotError:
            pass  # no key yet: the document has no snapshot; nothing to be present in
        except SecsyncError as exc:
            log.warning("presence_not_sent", code=exc.code)

    def receive(self, author: bytes, payload: bytes) -> list[Event]:
        """A verified ephemeral payload from ``author``."""
        try:
            changes = self.tracker.receive(author, payload, time.monotonic())
        except SecsyncError as exc:
            return [MessageRejected(exc, MessageKind.EPHEMERAL, author)]
        if changes:
            self._wake.set()  # expiry deadlines moved
        return self._apply(changes)

    def _apply(self, changes: list[PresenceChanged]) -> list[Event]:
        awareness = self.awareness
        if awareness is not None:
            for change in changes:
                if change.yjs_client_id is None:
                    continue
                if change.state is None:
                    awareness.remove_awareness_states([change.yjs_client_id], "remote")
                else:
                    awareness.apply_awareness_update(
                        _awareness_update(
                            change.yjs_client_id, self.tracker.clock_of(change.author), change.state
                        ),
                        "remote",
                    )
        return list(changes)

    async def close(self) -> None:
        """Tell the peers I left, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.tracker.local_state is not None:
            self.tracker.local_state = None
            await self._send(self.tracker.heartbeat())
        if self.awareness is not None and self._subscription is not None:
            self.awareness.unobserve(self._subscription)


def _awareness_update(client_id: int, clock: int, state: Any) -> bytes:
    """One entry of the Yjs awareness protocol, as ``Awareness.apply_awareness_update`` reads."""
    import json

    import pycrdt

    encoder = pycrdt.Encoder()
    encoder.write_var_uint(1)
    encoder.write_var_uint(client_id)
    encoder.write_var_uint(clock)
    encoder.write_var_string(json.dumps(state, separators=(",", ":")))
    return bytes(encoder.to_bytes())
