"""The gateway as an ASGI application: the pump around the sans-IO core.

:class:`Gateway` serves unmodified secsync JS clients over WebSocket. Per document it keeps one
view (:class:`~secsync.gateway.pump.DocumentFeed`) shared by every connection to the document
on this gateway; per socket one :class:`~secsync.gateway.pump.SocketPump`. This module answers
the WebSocket (origin, URL, the document's load), runs the access checks (``has_access``) and
the publishes (compare-and-set, as Python clients publish). It holds no document key.

Several gateways may serve the same documents: each follows the stream, and JetStream's
compare-and-set orders what they publish, as it orders Python clients.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from secsync.config import GatewayConfig, SecsyncConfig
from secsync.errors import (
    ConfigurationError,
    WrongLastSequenceError,
)
from secsync.gateway.connection import (
    Access,
    Action,
    AskAccess,
    CasConflict,
    Close,
    Output,
    Publish,
    PublishFailed,
    PublishResult,
    Send,
    Stored,
    refuse,
)
from secsync.gateway.params import BadConnection, parse_connection
from secsync.gateway.pump import DocumentFeed, SendAsgi, SocketPump
from secsync.logs import get_logger
from secsync.transport.client import SecsyncClient, connect

log = get_logger("secsync.gateway")

HasAccess = Callable[[Action, str, str, bytes | None], bool | Access | Awaitable[bool | Access]]
"""``has_access(action, document_id, session_key, public_key)``: may this connection do
``action``? ``public_key`` is the author's Ed25519 key for writes (None for ``read`` and
``broadcast``); ``session_key`` is the client's credential from its URL. Sync or async."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

_SESSION_KEY = re.compile(r"(sessionKey=)[^&\s\"']*")
# ASGI servers log the request target, query string included, which carries the session key.
_SERVER_LOGGERS = ("uvicorn.error", "uvicorn.access", "hypercorn.error", "hypercorn.access")


class _HideSessionKeys(logging.Filter):
    """Replaces ``sessionKey=...`` in a log record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "sessionKey=" in record.msg:
            record.msg = _SESSION_KEY.sub(r"\1<hidden>", record.msg)
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "sessionKey=" in a for a in args):
            record.args = tuple(
                _SESSION_KEY.sub(r"\1<hidden>", a) if isinstance(a, str) else a for a in args
            )
        return True


_HIDE_SESSION_KEYS = _HideSessionKeys()


def hide_session_keys(*logger_names: str) -> None:
    """Make ``logger_names`` (default: uvicorn's and hypercorn's) log no session keys; the
    gateway does this for them when created. Other servers' loggers: call it with theirs."""
    for name in logger_names or _SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if _HIDE_SESSION_KEYS not in logger.filters:
            logger.addFilter(_HIDE_SESSION_KEYS)


def allow_all(action: Action, document_id: str, session_key: str, public_key: bytes | None) -> bool:
    """An access check that grants everything: for trusted networks and tests only."""
    return True


class Gateway:
    """An ASGI application serving unmodified secsync JS clients: ``app.mount("/secsync",
    Gateway(["nats://..."], has_access))`` in Starlette or FastAPI, or run it alone with
    ``secsync gateway`` (:mod:`secsync.gateway.serving`).

    A client connects to ``ws(s)://host/mount/{docId}?sessionKey=...``. The NATS connection
    is made on the first client (or at ASGI lifespan startup when the app is not mounted);
    :meth:`aclose` (or lifespan shutdown) closes sockets, views and the connection.
    """

    def __init__(
        self,
        nats_servers: str | list[str],
        has_access: HasAccess,
        *,
        config: GatewayConfig | None = None,
        secsync_config: SecsyncConfig | None = None,
        nats_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not callable(has_access):
            raise ConfigurationError("has_access must be callable")
        self.nats_servers = [nats_servers] if isinstance(nats_servers, str) else nats_servers
        self.has_access = has_access
        self.config = config or GatewayConfig()
        self.secsync_config = secsync_config or SecsyncConfig()
        self._nats_options = dict(nats_options or {})
        self._client: SecsyncClient | None = None
        self._starting: asyncio.Lock | None = None
        self._feeds: dict[str, DocumentFeed] = {}
        self._sockets: set[SocketPump] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        hide_session_keys()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> SecsyncClient:
        """Connect to NATS (once; later calls return the connection)."""
        if self._closed:
            raise ConfigurationError("the gateway is closed")
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._client is None:
                self._client = await connect(
                    self.nats_servers, config=self.secsync_config, **self._nats_options
                )
                log.info("gateway_started", servers=len(self.nats_servers))
            return self._client

    async def aclose(self) -> None:
        """Close every socket and view, then the NATS connection."""
        self._closed = True
        for socket in list(self._sockets):
            socket.close()
        for socket in list(self._sockets):
            await socket.finish()
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await feed.stop()
        for task in list(self._background):
            task.cancel()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @property
    def documents(self) -> int:
        """How many documents have a view on this gateway now."""
        return len(self._feeds)

    @property
    def connections(self) -> int:
        return len(self._sockets)

    def expire(self, feed: DocumentFeed) -> None:
        self._forget(feed)
        task = asyncio.ensure_future(feed.stop())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _forget(self, feed: DocumentFeed) -> None:
        if self._feeds.get(feed.doc_id) is feed:
            del self._feeds[feed.doc_id]

    async def _feed(self, doc_id: str) -> DocumentFeed:
        feed = self._feeds.get(doc_id)
        if feed is None:
            client = await self.start()
            feed = self._feeds.get(doc_id)
            if feed is None:
                feed = DocumentFeed(self, doc_id)
                self._feeds[doc_id] = feed
                feed.acquire()
                try:
                    await feed.start(client)
                except BaseException:
                    self._forget(feed)
                    await feed.stop()
                    raise
                return feed
        feed.acquire()
        return feed

    # --- what sockets ask ----------------------------------------------------------------------

    async def check(self, ask: AskAccess) -> Access | bool:
        """``has_access`` for ``ask``: denied when it raises, times out or answers junk."""
        answer: object
        try:
            answer = self.has_access(
                ask.action, ask.document_id, ask.session_key.reveal(), ask.public_key
            )
            if inspect.isawaitable(answer):
                answer = await asyncio.wait_for(answer, self.config.access_timeout)
        except Exception as exc:
            log.warning("gateway_access_check_failed", action=ask.action, error=type(exc).__name__)
            return Access.DENIED
        if isinstance(answer, Access | bool):
            return answer
        log.warning("gateway_access_check_failed", action=ask.action, error="not bool or Access")
        return Access.DENIED

    async def publish(self, feed: DocumentFeed, publish: Publish) -> PublishResult:
        link = feed.link
        try:
            if not publish.headers:
                await link.publish_core(publish.subject, publish.payload)
                return Stored(0)
            _first, last, _duplicate = await link.store(
                publish.subject, publish.payload, dict(publish.headers)
            )
        except WrongLastSequenceError:
            return CasConflict()
        except Exception as exc:  # secsync's, and nats-py's own on a lost connection
            log.info("gateway_publish_failed", error=type(exc).__name__)
            return PublishFailed(type(exc).__name__)
        return Stored(last)

    # --- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: SendAsgi) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 426,
                    "headers": [(b"upgrade", b"websocket"), (b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"secsync gateway: WebSocket only\n"})

    async def _lifespan(self, receive: Receive, send: SendAsgi) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _origin_allowed(self, scope: Scope) -> bool:
        allowed = self.config.allowed_origins
        if allowed is None:
            return True
        for name, value in scope.get("headers", ()):
            if name.lower() == b"origin":
                return value.decode("latin-1") in allowed
        return True

    async def _websocket(self, scope: Scope, receive: Receive, send: SendAsgi) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        if self._closed or not self._origin_allowed(scope):
            log.info("gateway_refused", reason="closed" if self._closed else "origin")
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        params = parse_connection(_target(scope))
        if isinstance(params, BadConnection):
            await _send_outputs(send, refuse(params))
            return
        started = time.monotonic()
        try:
            feed = await asyncio.wait_for(self._feed(params.document_id), self.config.load_timeout)
        except Exception as exc:
            log.warning("gateway_document_unavailable", error=type(exc).__name__)
            await _try_again_later(send)
            return
        socket: SocketPump | None = None
        try:
            remaining = self.config.load_timeout - (time.monotonic() - started)
            try:
                await asyncio.wait_for(feed.ready.wait(), max(remaining, 0.001))
            except TimeoutError:
                log.warning("gateway_document_unavailable", error="load timeout")
                await _try_again_later(send)
                return
            socket = SocketPump(self, feed, params, send)
            self._sockets.add(socket)
            feed.sockets.add(socket)
            await self._open(socket)
            await self._serve(socket, receive)
        finally:
            if socket is not None:
                feed.sockets.discard(socket)
                self._sockets.discard(socket)
                await socket.finish()
            feed.release()

    async def _open(self, socket: SocketPump) -> None:
        conn = socket.conn
        outputs = conn.open()
        view = socket.feed.view
        if (
            self.config.missing_documents == "not-found"
            and view.active is None
            and view.last_sequence == 0
        ):
            ask = outputs[0]
            assert isinstance(ask, AskAccess)
            access = await self.check(ask)
            if view.last_sequence == 0 and access not in (False, Access.DENIED):
                socket.perform(conn.not_found())
                return
            outputs = conn.answer(ask, access)
        await socket.run(outputs)

    async def _serve(self, socket: SocketPump, receive: Receive) -> None:
        closed = asyncio.create_task(socket.closed.wait())
        receiving: asyncio.Task[MutableMapping[str, Any]] | None = None
        try:
            while not socket.closed.is_set():
                receiving = asyncio.ensure_future(receive())
                done, _ = await asyncio.wait(
                    {receiving, closed}, return_when=asyncio.FIRST_COMPLETED
                )
                if receiving not in done:
                    return
                event = receiving.result()
                receiving = None
                if event["type"] == "websocket.disconnect":
                    socket.closed.set()
                    return
                if event["type"] != "websocket.receive":
                    continue
                data = event.get("text")
                if data is None:
                    data = event.get("bytes") or b""
                await socket.run(socket.conn.receive(data))
        finally:
            closed.cancel()
            if receiving is not None:
                receiving.cancel()


def _target(scope: Scope) -> str:
    """The request target below the mount point: ``/{docId}?query``, percent-encoded as the
    client sent it (ASGI servers decode ``path``; ``raw_path`` keeps the client's bytes)."""
    raw = scope.get("raw_path")
    root = scope.get("root_path", "")
    if raw:
        path = raw.decode("latin-1")
        root_raw = root.encode("utf-8").decode("latin-1") if root else ""
        if root_raw and path.startswith(root_raw):
            path = path[len(root_raw) :]
    else:
        from urllib.parse import quote

        path = quote(scope.get("path", ""), safe="/")
        if root and path.startswith(root):
            path = path[len(root) :]
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


async def _try_again_later(send: SendAsgi) -> None:
    """The broker is out of reach: close without a frame (``document-error`` would stop the JS
    client for good), so that it reconnects, with its backoff, and loads then."""
    await send({"type": "websocket.close", "code": 1013})


async def _send_outputs(send: SendAsgi, outputs: list[Output]) -> None:
    for output in outputs:
        if isinstance(output, Send):
            await send({"type": "websocket.send", "text": output.text()})
        elif isinstance(output, Close):
            await send({"type": "websocket.close", "code": 1000})
