"""The asyncio client: one NATS connection shared by every open document."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import nats
import structlog
from nats.js import JetStreamContext

from secsync.config import SecsyncConfig
from secsync.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    PermissionDeniedError,
    SecsyncError,
)
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.events import ConnectionChanged
from secsync.protocol.keys import KeyProvider
from secsync.protocol.policy import AuthorPolicy
from secsync.protocol.session import DocumentSession
from secsync.transport import jetstream
from secsync.transport.document import Document
from secsync.transport.subjects import stream_subjects

log = structlog.get_logger("secsync.client")

# A permission violation reported by the server explains publishes that time out for this long.
_DENIAL_MEMORY = 60.0


class SecsyncClient:
    """A connection to the broker; open documents with :meth:`open`."""

    def __init__(self, nc: Any, config: SecsyncConfig) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=config.request_timeout)
        self.config = config
        self._documents: dict[str, Document] = {}
        self._denied: dict[str, float] = {}
        self.closing = False

    async def open(
        self,
        doc_id: str,
        *,
        key: KeyProvider | bytes,
        signing_key: SigningKeyPair,
        crdt: object,
        policy: AuthorPolicy | None = None,
        awareness: Any = None,
    ) -> Document:
        """Load ``doc_id`` into the application's CRDT object and keep it in sync.

        For a Yjs document, ``awareness`` (a ``pycrdt.Awareness`` of that document) is kept in
        step with the other participants; one is created when none is given.
        """
        if doc_id in self._documents:
            raise ConfigurationError("this document is already open on this client")
        session = DocumentSession(doc_id, signing_key, key, crdt, config=self.config, policy=policy)
        document = Document(self, session, self.config, awareness)
        self._documents[doc_id] = document
        try:
            await document._start()
        except BaseException:
            await document.close()
            raise
        return document

    @property
    def documents(self) -> dict[str, Document]:
        return dict(self._documents)

    def _forget(self, document: Document) -> None:
        if self._documents.get(document.doc_id) is document:
            del self._documents[document.doc_id]

    def denied(self, subject: str) -> PermissionDeniedError | None:
        """A recent permission violation for ``subject``, if the server reported one."""
        seen = self._denied.get(subject.lower())
        if seen is not None and time.monotonic() - seen < _DENIAL_MEMORY:
            return PermissionDeniedError(subject=subject)
        return None

    def _note_error(self, error: Exception) -> None:
        text = str(error)
        if "permissions violation" in text.lower():
            # e.g. 'nats: permissions violation for publish to "secsync.s.a.b.upd"'
            subject = text.split('"')[1] if text.count('"') >= 2 else ""
            self._denied[subject.lower()] = time.monotonic()
            log.warning("permission_denied", subject=subject)
        else:
            log.warning("broker_error", error=type(error).__name__, detail=text[:200])

    def _connection_changed(self, connected: bool) -> None:
        for document in self._documents.values():
            document._emit([ConnectionChanged(connected)])

    async def close(self) -> None:
        self.closing = True
        for document in list(self._documents.values()):
            await document.close()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.nc.close()

    async def __aenter__(self) -> SecsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Connector:
    """``connect(...)`` is both awaitable and an async context manager."""

    def __init__(self, servers: str | Sequence[str], config: SecsyncConfig, options: Any) -> None:
        self._servers = [servers] if isinstance(servers, str) else list(servers)
        self._config = config
        self._options = options
        self._client: SecsyncClient | None = None

    def __await__(self) -> Any:
        return self._connect().__await__()

    async def _connect(self) -> SecsyncClient:
        holder: dict[str, SecsyncClient] = {}

        async def error_cb(error: Exception) -> None:
            if "client" in holder:
                holder["client"]._note_error(error)

        async def disconnected_cb() -> None:
            client = holder.get("client")
            if client is not None and client.closing:
                return
            log.warning("disconnected")
            if client is not None:
                client._connection_changed(False)

        async def reconnected_cb() -> None:
            log.info("reconnected")
            if "client" in holder:
                holder["client"]._connection_changed(True)

        options = {
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": self._config.request_timeout,
            **self._options,
        }
        try:
            nc = await nats.connect(
                servers=self._servers,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                **options,
            )
        except Exception as exc:
            raise BrokerUnavailableError(f"cannot connect to {self._servers}: {exc}") from None
        client = SecsyncClient(nc, self._config)
        holder["client"] = client
        if self._config.provision_stream:
            try:
                await jetstream.ensure_stream(
                    client.js,
                    jetstream.StreamSettings(
                        name=self._config.stream_name,
                        subjects=tuple(stream_subjects(self._config.subject_root)),
                        replicas=self._config.stream_replicas,
                        max_consumers=self._config.max_consumers,
                        duplicate_window=self._config.duplicate_window,
                    ),
                )
            except SecsyncError:
                await client.close()
                raise
        log.info("connected", servers=self._servers, stream=self._config.stream_name)
        return client

    async def __aenter__(self) -> SecsyncClient:
        self._client = await self._connect()
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()


def connect(
    servers: str | Sequence[str] = "nats://127.0.0.1:4222",
    *,
    config: SecsyncConfig | None = None,
    **nats_options: Any,
) -> _Connector:
    """Connect to the broker: ``async with secsync.connect(url) as client: ...``.

    Extra keyword arguments go to ``nats.connect`` (credentials, TLS, ``inbox_prefix``...).
    """
    return _Connector(servers, config or SecsyncConfig(), nats_options)
