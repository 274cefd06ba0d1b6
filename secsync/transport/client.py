"""The asyncio client: one NATS connection shared by every open document."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats
from nats.js import JetStreamContext

from secsync.config import SecsyncConfig
from secsync.crdt import CrdtDocument
from secsync.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    PermissionDeniedError,
    SecsyncError,
)
from secsync.logs import get_logger
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.devices import Device, device_or_key
from secsync.protocol.keys import (
    KeyProvider,
    StaticKey,
    document_key,
    key_provider,
)
from secsync.protocol.policy import AuthorPolicy
from secsync.protocol.session import DocumentSession
from secsync.store import LocalStore
from secsync.transport import headers, jetstream
from secsync.transport.document import Document
from secsync.transport.events import LoadProgress
from secsync.transport.live import ShardRouter
from secsync.transport.subjects import stream_subjects
from secsync.transport.waiting import backoff_delay

log = get_logger("secsync.client")

# A permission violation reported by the server explains publishes that time out for this long.
_DENIAL_MEMORY = 60.0


class SecsyncClient:
    """A connection to the broker; open documents with :meth:`open`.

    With ``config.store_path`` set, the client works without the broker: documents open from
    local state, edits are kept, and everything syncs once the broker can be reached.
    """

    def __init__(
        self, servers: Sequence[str], config: SecsyncConfig, options: dict[str, Any]
    ) -> None:
        self.servers = list(servers)
        self.config = config
        self._options = options
        self._nc: Any = None
        self._js: JetStreamContext | None = None
        self._publisher: jetstream.Publisher | None = None
        self._router: ShardRouter | None = None
        self._verify_pool: ThreadPoolExecutor | None = None
        self.connected = asyncio.Event()
        """Set while a connection to the broker is up."""
        self._documents: dict[str, Document] = {}
        self._denied: dict[str, float] = {}
        self._refusals: dict[str, set[asyncio.Future[None]]] = {}
        self._reconnect_attempt = 0
        self._connector: asyncio.Task[None] | None = None
        self.closing = False
        self.store = LocalStore(config.store_path) if config.store_path else None

    # --- connection ---------------------------------------------------------------------------

    @property
    def nc(self) -> Any:
        if self._nc is None:
            raise BrokerUnavailableError("not connected to the broker")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BrokerUnavailableError("not connected to the broker")
        return self._js

    @property
    def publisher(self) -> jetstream.Publisher:
        """Pipelined acknowledged publishes on this connection."""
        if self._publisher is None:
            raise BrokerUnavailableError("not connected to the broker")
        return self._publisher

    @property
    def router(self) -> ShardRouter:
        """The live consumers shared by this client's documents (``live_consumers="per_shard"``)."""
        if self._router is None:
            self._router = ShardRouter(self, self.config)
        return self._router

    async def _connect_once(self) -> None:
        async def error_cb(error: Exception) -> None:
            self._note_error(error)

        async def disconnected_cb() -> None:
            if self.closing:
                return
            log.warning("disconnected")
            self._connection_changed(False)

        async def reconnected_cb() -> None:
            log.info("reconnected")
            self._reconnect_attempt = 0
            self._connection_changed(True)

        def choose_server(servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
            # nats-py waits a fixed time between attempts; back off exponentially, with jitter
            delay = backoff_delay(
                self._reconnect_attempt, self.config.retry_initial, self.config.retry_max
            )
            self._reconnect_attempt += 1
            return random.choice(servers), delay

        options = {
            # nats-py retries a first connect forever when reconnects are unlimited: try each
            # server twice here, and lift the limit once connected.
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": self.config.retry_initial,
            "connect_timeout": self.config.request_timeout,
            "allow_reconnect": True,
            **self._options,
        }
        try:
            nc = await nats.connect(
                servers=self.servers,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                reconnect_to_server_handler=choose_server,
                **options,
            )
        except Exception as exc:
            raise BrokerUnavailableError(f"cannot connect to {self.servers}: {exc}") from None
        nc.options["max_reconnect_attempts"] = self._options.get("max_reconnect_attempts", -1)
        headers.install(nc)
        self._guard_requests(nc)
        js = nc.jetstream(timeout=self.config.request_timeout)
        if self.config.provision_stream:
            try:
                await jetstream.ensure_stream(
                    js,
                    jetstream.StreamSettings(
                        name=self.config.stream_name,
                        subjects=tuple(stream_subjects(self.config.subject_root)),
                        replicas=self.config.stream_replicas,
                        placement_cluster=self.config.stream_placement_cluster,
                        placement_tags=tuple(self.config.stream_placement_tags),
                        max_consumers=self.config.max_consumers,
                        duplicate_window=self.config.duplicate_window,
                        max_bytes=self.config.stream_max_bytes or -1,
                        max_msg_size=self.config.stream_max_msg_size or -1,
                    ),
                )
            except SecsyncError:
                with contextlib.suppress(Exception):
                    await nc.close()
                raise
        publisher = jetstream.Publisher(nc, timeout=self.config.publish_timeout)
        await publisher.start()
        self._nc, self._js, self._publisher = nc, js, publisher
        self.connected.set()
        log.info("connected", servers=self.servers, stream=self.config.stream_name)

    async def _keep_connecting(self) -> None:
        """Offline start: try until the broker answers, backing off with jitter."""
        attempt = 0
        while not self.closing:
            try:
                await self._connect_once()
                self._connection_changed(True)
                return
            except BrokerUnavailableError:
                await asyncio.sleep(
                    backoff_delay(attempt, self.config.retry_initial, self.config.retry_max)
                )
                attempt += 1
            except SecsyncError as exc:
                log.warning("connect_failed", code=exc.code, reason=exc.message)
                return

    async def _start(self) -> None:
        try:
            await self._connect_once()
        except BrokerUnavailableError:
            if self.store is None:
                raise
            log.warning("offline", servers=self.servers)
            self._connector = asyncio.create_task(self._keep_connecting())

    # --- documents ----------------------------------------------------------------------------

    async def open(
        self,
        doc_id: str,
        *,
        key: KeyProvider | bytes | str,
        signing_key: SigningKeyPair | Device | str,
        crdt: CrdtDocument,
        policy: AuthorPolicy | None = None,
        awareness: Any = None,
        storage_key: bytes | str | None = None,
        on_progress: Callable[[LoadProgress], None] | None = None,
    ) -> Document:
        """Load ``doc_id`` into the application's CRDT object and keep it in sync.

        ``key`` is the document key (32 bytes, or the base64url text ``secsync keygen`` and
        :func:`secsync.encode_key` write) or a :class:`KeyProvider` (closed groups);
        ``signing_key`` is the identity that signs every change (a :class:`SigningKeyPair`
        or its text form, :meth:`SigningKeyPair.to_b64`), or a certified
        :class:`~secsync.protocol.devices.Device` of a user (or its text form,
        :meth:`Device.to_b64`): then readers name the user beside the device. Anything else raises
        :class:`InvalidKeyError` at once. A document whose stored snapshots do not open with
        the key raises :class:`WrongKeyError`, and nothing is written to it.

        For a Yjs document, ``awareness`` (a ``pycrdt.Awareness`` of that document) is kept in
        step with the other participants; one is created when none is given. With a local
        store, ``storage_key`` seals the local copy (default: ``key`` when it is a key).

        Loading waits at most ``config.open_timeout`` for each step (a page of messages, a
        read of the snapshot search), not for the whole document: one that makes no progress
        raises :class:`BrokerUnavailableError`. ``on_progress`` is called with a
        :class:`LoadProgress` after each page of messages read and applied, while loading and
        whenever the document catches up later.
        """
        if doc_id in self._documents:
            raise ConfigurationError("this document is already open on this client")
        keys = key_provider(key)
        signer = device_or_key(signing_key)
        if storage_key is not None:
            storage_key = document_key(storage_key, parameter="storage_key")
        elif self.store is not None:
            if not isinstance(keys, StaticKey):
                raise ConfigurationError("a key provider needs an explicit storage_key")
            storage_key = keys.key
        session = DocumentSession(
            doc_id,
            signer,
            keys,
            crdt,
            config=self.config,
            policy=policy,
            verify_executor=self._verification_pool(),
        )
        document = Document(
            self,
            session,
            self.config,
            awareness,
            storage_key=storage_key,
            on_close=self._forget,
            on_progress=on_progress,
        )
        self._documents[doc_id] = document
        try:
            await document.start()
        except BaseException:
            await document.close()
            raise
        return document

    def _verification_pool(self) -> ThreadPoolExecutor | None:
        """One pool of ``verify_threads`` workers shared by every document of this client."""
        if self.config.verify_threads and self._verify_pool is None:
            self._verify_pool = ThreadPoolExecutor(
                max_workers=self.config.verify_threads, thread_name_prefix="secsync-verify"
            )
        return self._verify_pool

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

    def _guard_requests(self, nc: Any) -> None:
        """Make a request the server refuses for lack of permission fail at once.

        The server does not answer such a request: it reports a permissions violation on the
        connection (``error_cb``), and the request would time out as if the broker were away.
        Every request on ``nc`` (JetStream API calls and publishes included) now ends at
        whichever comes first, raising :class:`PermissionDeniedError` naming the subject.
        """
        request = nc.request

        async def guarded(subject: str, *args: Any, **kwargs: Any) -> Any:
            key = subject.lower()  # nats-py reports the violation in lower case
            refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiting = self._refusals.setdefault(key, set())
            waiting.add(refused)
            answer = asyncio.ensure_future(request(subject, *args, **kwargs))
            try:
                await asyncio.wait((answer, refused), return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                answer.cancel()
                raise
            finally:
                waiting.discard(refused)
                if not waiting and self._refusals.get(key) is waiting:
                    del self._refusals[key]
            if answer.done():
                return answer.result()
            answer.cancel()  # nats-py drops the pending reply with it
            raise PermissionDeniedError(subject=subject)

        nc.request = guarded

    def _note_error(self, error: Exception) -> None:
        text = str(error)
        if "permissions violation" in text.lower():
            # e.g. 'nats: permissions violation for publish to "secsync.s.a.b.upd"'
            subject = text.split('"')[1] if text.count('"') >= 2 else ""
            self._denied[subject.lower()] = time.monotonic()
            for refused in self._refusals.get(subject.lower(), ()):
                if not refused.done():
                    refused.set_result(None)
            if self._publisher is not None:
                self._publisher.refuse(subject, PermissionDeniedError(subject=subject))
            log.warning("permission_denied", subject=subject)
        elif isinstance(error, OSError):
            log.debug("broker_unreachable", error=type(error).__name__)  # reconnects go on
        elif not self.closing:
            log.warning("broker_error", error=type(error).__name__, detail=text[:200])

    def _connection_changed(self, connected: bool) -> None:
        for document in self._documents.values():
            document.connection_changed(connected)

    async def close(self) -> None:
        self.closing = True
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connector
        for document in list(self._documents.values()):
            await document.close()
        if self._router is not None:
            await self._router.close()
        if self._publisher is not None:
            await self._publisher.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.drain(), self.config.request_timeout)
            with contextlib.suppress(Exception):
                await self._nc.close()
        if self._verify_pool is not None:
            self._verify_pool.shutdown(wait=False)
            self._verify_pool = None
        if self.store is not None:
            self.store.close()

    async def __aenter__(self) -> SecsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Connecting:
    """What :func:`connect` returns: a connection being made, used one of two ways.

    * ``client = await secsync.connect(url)``: connects and gives the :class:`SecsyncClient`;
      close it with ``await client.close()`` (or ``async with client:``).
    * ``async with secsync.connect(url) as client: ...``: connects on entry, closes on exit.

    A failed connection closes what it had opened before the error propagates. Await it, or
    enter it, once: it stands for one client.
    """

    def __init__(
        self, servers: str | Sequence[str], config: SecsyncConfig, options: Mapping[str, Any]
    ) -> None:
        self._client = SecsyncClient(
            [servers] if isinstance(servers, str) else list(servers), config, dict(options)
        )

    def __await__(self) -> Generator[Any, None, SecsyncClient]:
        return self._connect().__await__()

    async def _connect(self) -> SecsyncClient:
        try:
            await self._client._start()
        except BaseException:
            await self._client.close()
            raise
        return self._client

    async def __aenter__(self) -> SecsyncClient:
        return await self._connect()

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()


def connect(
    servers: str | Sequence[str] = "nats://127.0.0.1:4222",
    *,
    config: SecsyncConfig | None = None,
    **nats_options: Any,
) -> Connecting:
    """Connect to the broker: ``async with secsync.connect(url) as client: ...``, or
    ``client = await secsync.connect(url)`` (see :class:`Connecting`).

    Extra keyword arguments go to ``nats.connect`` (credentials, TLS, ``inbox_prefix``...).
    Without a local store the broker must answer now; with one (``config.store_path``), the
    client starts offline and keeps trying.
    """
    return Connecting(servers, config or SecsyncConfig(), nats_options)
