"""One open document: a :class:`DocumentSession` driven over NATS JetStream.

This adapter holds no protocol rules. It moves bytes between the session and the broker:
loading (latest snapshot by direct get, then the stored messages after it), live delivery (an
ordered consumer from the last applied sequence), publishing with the broker's
compare-and-set headers, and reporting the session's events to the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pycrdt

from secsync.config import SecsyncConfig
from secsync.errors import (
    AccessError,
    BrokerRequestError,
    BrokerUnavailableError,
    CompareAndSetBusyError,
    DocumentClosedError,
    DuplicateBatchError,
    DuplicateMismatchError,
    IdentityInUseError,
    PayloadTooLargeError,
    SecsyncError,
    SnapshotApplyError,
    SnapshotRateError,
    SnapshotSearchError,
    StreamNotFoundError,
    TransportError,
    WrongKeyError,
    WrongLastSequenceError,
)
from secsync.logs import get_logger
from secsync.protocol import wire
from secsync.protocol.events import (
    ConnectionChanged,
    DocumentLoaded,
    DocumentRestored,
    EphemeralReceived,
    Event,
    GapDetected,
    MessageRejected,
    PublishFailed,
    RecoveryNeeded,
    SnapshotApplied,
    SnapshotStored,
    StorageFailed,
    SyncFailed,
)
from secsync.protocol.messages import EphemeralMessage, Message, Snapshot, Update
from secsync.protocol.session import DocumentSession, SnapshotChoice
from secsync.transport import chunks, jetstream
from secsync.transport.presence import Presence
from secsync.transport.subjects import DocumentSubjects, snapshot_msg_id, update_msg_id
from secsync.transport.waiting import wait_woken

if TYPE_CHECKING:
    from secsync.transport.client import SecsyncClient

log = get_logger("secsync.document")

EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
MSG_ID = "Nats-Msg-Id"
# Headers and framing of a stored message, kept free below the broker's payload limit.
HEADER_ROOM = 4096
# Codes of snapshot rejections that mean "the stored history is not what we hold".
_UNVERIFIABLE_SNAPSHOT = frozenset({102, 112, 115})
# Failures of a read for healing that say nothing about the document: try again later.
_BROKER_SIDE = (BrokerUnavailableError, StreamNotFoundError, BrokerRequestError, TimeoutError)

# What a publish attempt came to: (first sequence, last sequence, duplicate), or an error.
_Outcome = tuple[int, int, bool] | SecsyncError


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class _Latest:
    """What :meth:`Document._fetch_latest` found."""

    snapshot: Snapshot | None
    sequence: int  # where the chosen snapshot's message ends (0: none)
    judged: int  # the last snapshot-subject sequence weighed when choosing
    after: list[jetstream.StoredMessage]  # stored after the chosen snapshot, in order


# Sequences in the first window read back before the last snapshot message; each next one
# doubles, so a snapshot n sequences back is found after about log2(n) windows.
_FIRST_SPAN = 16


@dataclass(slots=True)
class _SearchRead:
    """What looking back over the snapshot subject read, for its bound (and for tests)."""

    messages: int
    bytes: int
    windows: int


@dataclass(frozen=True, slots=True)
class _Search:
    choice: SnapshotChoice
    candidates: list[Snapshot]
    sequences: list[int]
    read: _SearchRead


def _part_index(message: jetstream.StoredMessage) -> int:
    """A stored part's 1-based index (1 for a whole message, or a malformed header)."""
    value = message.headers.get(chunks.PART_HEADER)
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 9:
        return 1
    return max(1, int(value))


def _decode_window(
    messages: list[jetstream.StoredMessage], decode: Callable[[bytes], Message | None]
) -> list[tuple[int, Snapshot]]:
    """The snapshots among ``messages`` (in stream order, starting where a message starts)."""
    assembler = chunks.Reassembler()
    out: list[tuple[int, Snapshot]] = []
    for message in messages:
        try:
            data = assembler.feed(message.sequence, message.data, message.headers)
        except SecsyncError:
            continue  # broken parts: not a snapshot
        if data is None:
            continue
        decoded = decode(data)
        if isinstance(decoded, Snapshot):
            out.append((message.sequence, decoded))
    return out


def _weigh(
    session: DocumentSession,
    decoded: list[tuple[int, Snapshot]],
    passed_over: frozenset[bytes],
    read: _SearchRead,
) -> _Search:
    """The session's choice among the snapshots read: each id at its first place in the
    stream (a later copy is a replay, never the latest), without those ``passed_over``."""
    seen: set[bytes] = set()
    candidates: list[Snapshot] = []
    sequences: list[int] = []
    for sequence, snapshot in decoded:
        if snapshot.snapshot_id in seen:
            continue
        seen.add(snapshot.snapshot_id)
        if snapshot.snapshot_id in passed_over:
            continue  # its content did not apply: not a snapshot to load
        candidates.append(snapshot)
        sequences.append(sequence)
    return _Search(session.choose(candidates), candidates, sequences, read)


def _settled(
    search: _Search, decoded: list[tuple[int, Snapshot]], chains: bool, chain_window: int
) -> bool:
    """Whether reading further back could not change the choice (see
    :meth:`Document._fetch_latest`): its parent was read before it, and with membership
    chains ``chain_window`` snapshot messages before it too."""
    index = search.choice.index
    if index is None:
        return False
    chosen, sequence = search.candidates[index], search.sequences[index]
    parent = chosen.public_data.parent_snapshot_id
    before = [s for seq, s in decoded if seq < sequence]
    if not parent or not any(s.snapshot_id == parent for s in before):
        return False  # a first snapshot, or a parent not read yet: only the start settles it
    return not chains or len(before) >= chain_window


class Document:
    """A document kept in sync: edit the CRDT object you passed in; this does the rest.

    Use :meth:`flush` to wait until every local change is stored, iterate :meth:`events` to
    learn about remote changes, snapshots, recoveries and errors, and :meth:`close` (or
    ``async with``) when done.
    """

    def __init__(
        self,
        client: SecsyncClient,
        session: DocumentSession,
        config: SecsyncConfig,
        awareness: Any = None,
        *,
        storage_key: bytes | None = None,
    ) -> None:
        self._client = client
        self._store = client.store
        self._storage_key = storage_key
        self._online = False
        self._online_task: asyncio.Task[None] | None = None
        self._sending_paused = False
        self._receiving_paused = False
        self._last_checkpoint = 0.0
        self._dirty = False
        self.session = session
        self.config = config
        self.doc_id = session.doc_id
        self.subjects = DocumentSubjects.of(session.doc_id, config.subject_root)
        self._read_stream = config.read_stream or config.stream_name
        self._log = log.bind(doc=self.subjects.token[:8])
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._can_send = asyncio.Event()  # set whenever online and not paused may have begun
        self._closed = False
        self._started = False  # set once open() succeeded
        self._last_seq = 0
        # What we applied at _last_seq (stored bytes, or our own message), to tell whether the
        # stream still holds it; None when not known (restored, or a snapshot weighed only).
        self._last_data: bytes | Snapshot | Update | None = None
        self._restored_digest = b""  # the digest of it a checkpoint kept, after a restart
        self._snapshot_seq: dict[bytes, int] = {}
        self._reassembler = chunks.Reassembler()
        self._sub: Any = None
        self._sender: asyncio.Task[None] | None = None
        # Why the sender stopped, if it ended with an error: nothing is sent any more.
        self._sender_error: TransportError | None = None
        self._ephemeral_sub: Any = None
        self._notify = getattr(session.crdt, "set_change_listener", None)
        self._saved_locally = True
        session.change_log = self._log_changes
        self._tasks: set[asyncio.Future[None]] = set()
        self._own_sequences: set[int] = set()
        self._unresolved: set[int] = set()
        self._window = asyncio.Semaphore(config.max_in_flight)
        self._in_flight_tasks: set[asyncio.Future[Any]] = set()
        # Updates whose pipelined publish did not settle (no answer, 10164, refused, duplicate),
        # with that outcome; one task publishes them again one at a time, lowest clock first.
        # Concurrent retries on a cluster would only keep each other busy (10164).
        self._retries: list[tuple[Update, _Outcome | None, dict[str, str] | None]] = []
        self._retrier: asyncio.Future[None] | None = None
        # Our published updates by msg id, until the live consumer delivers them back: the
        # exact bytes we sent need no verification and no decryption.
        self._own_payloads: OrderedDict[str, tuple[bytes, Update]] = OrderedDict()
        self._inbox: list[jetstream.StoredMessage] = []  # delivered, not processed yet
        self._unanswered = 0  # updates published whose acknowledgement is still awaited
        if awareness is None and isinstance(getattr(session.crdt, "doc", None), pycrdt.Doc):
            awareness = pycrdt.Awareness(session.crdt.doc)  # type: ignore[attr-defined]
        self.presence = Presence(self, awareness)
        """Cursors and user state of the participants online now."""
        self.load_errors: list[SecsyncError] = []
        # What the last look for a snapshot to load read back (messages, bytes, windows).
        self.load_search: _SearchRead | None = None
        """Why the latest snapshot was refused when the document was loaded, if it was."""
        self.redelivered = 0
        """Stored messages delivered again after they were applied (e.g. after a reconnect)."""

    # --- public API -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_sequence(self) -> int:
        """The last stream sequence of this document that was applied."""
        return self._last_seq

    @property
    def pending_changes(self) -> int:
        """Local changes not yet sent."""
        return self.session.pending_changes

    @property
    def unacknowledged(self) -> int:
        """Messages sent that the broker has not acknowledged yet."""
        return self.session.unacknowledged

    @property
    def is_synced(self) -> bool:
        """True when every local change is stored by the broker."""
        return self.session.is_synced

    def notify_changed(self) -> None:
        """Tell the sender the document changed (Yjs documents do this by themselves)."""
        self._local_change()

    @property
    def online(self) -> bool:
        """True while the document follows the broker live: it caught up, and the connection
        is up now."""
        return self._online and self._client.connected.is_set()

    @property
    def saved_locally(self) -> bool:
        """True when every local edit is in the local store (always False without one). With
        a store, an edit is durable once its transaction has ended (Yjs, on the event loop's
        thread) or once :meth:`notify_changed` returned (Automerge): see docs/local-first.md."""
        return (
            self._store is not None
            and self._storage_key is not None
            and self._saved_locally
            and self.session.untaken_changes == 0
        )

    def write_snapshot(self) -> None:
        """Write a snapshot soon (and again if another wins the race) — after a membership
        change, for instance."""
        self.session.request_snapshot()
        self._wake.set()

    def pause_sending(self) -> None:
        """Keep local changes (and their durable copy) here until :meth:`resume_sending`."""
        self._sending_paused = True

    def resume_sending(self) -> None:
        """Send what accumulated while paused, batched."""
        self._sending_paused = False
        self._can_send.set()
        self._wake.set()

    async def pause_receiving(self) -> None:
        """Apply no remote change until :meth:`resume_receiving` (sending goes on)."""
        self._receiving_paused = True
        await self._stop_live()

    async def resume_receiving(self) -> None:
        """Catch up on what was stored meanwhile, then follow live again."""
        self._receiving_paused = False
        if self._online:
            await self._catch_up()
            await self._start_live()
            self._wake.set()  # a snapshot caught up may have re-queued local changes

    def _local_change(self) -> None:
        """Local edits: take them into the outbox (logged durably on the way), wake the sender."""
        if self._closed:
            return
        if self.session.collect_local_changes():
            self._dirty = True
            self._wake.set()  # not otherwise: the sender polls Automerge documents through here

    def _log_changes(self, changes: list[bytes]) -> None:
        """The session's change log: every local change taken from the CRDT, on every path
        (sender, status, export, snapshot, close), reaches the local store first."""
        if self._store is None or self._storage_key is None:
            return
        try:
            self._store.append_changes(self.subjects.token, self._storage_key, changes)
        except SecsyncError as exc:
            self._saved_locally = False
            self._emit([StorageFailed(exc)])

    def checkpoint(self) -> None:
        """Write the full local state now (it is also written regularly and on close)."""
        if self._store is None or self._storage_key is None:
            return
        from secsync.store import LocalState

        self._local_change()
        self._store.save(
            self.subjects.token,
            self._storage_key,
            LocalState(
                crdt_state=self.session.crdt.encode_state(),
                session=self.session.export_state(),
                last_sequence=self._last_seq,
                snapshot_sequences=dict(self._snapshot_seq),
                last_digest=self._last_digest(),
            ),
        )
        self._last_checkpoint = time.monotonic()
        self._dirty = False
        self._saved_locally = True  # everything is in the checkpoint now

    def _maybe_checkpoint(self) -> None:
        if (
            self._dirty
            and time.monotonic() - self._last_checkpoint >= self.config.checkpoint_interval
        ):
            self.checkpoint()

    @property
    def identity_in_use(self) -> IdentityInUseError | None:
        """Set when another client writes under this document's signing key: nothing more is
        sent; :meth:`unsent_changes` are kept (and, with a store, survive a restart) until the
        document is opened again under another identity (a device of the user)."""
        return self.session.identity_in_use

    def unsent_changes(self) -> list[bytes]:
        """Local changes the broker is not known to store (see :attr:`identity_in_use`)."""
        return self.session.unsent_changes()

    async def flush(self, timeout: float | None = None) -> None:
        """Return once every local change is stored by the broker, and the snapshot asked for
        with :meth:`write_snapshot` (a membership change, say) too.

        Raises :class:`IdentityInUseError` if the document stopped writing because another
        client writes under its identity (see :attr:`identity_in_use`), and
        :class:`TransportError` if its sender stopped on an unexpected error (reported as
        ``SyncFailed``)."""
        async with asyncio.timeout(timeout):
            while (
                not self.session.is_synced
                or self.session.snapshot_requested
                or self._sending_paused
            ):
                if self._closed:
                    raise DocumentClosedError()
                if self._sender_error is not None:
                    raise self._sender_error
                if self.session.identity_in_use is not None:
                    raise self.session.identity_in_use
                if self._sending_paused or not self._online:
                    # nothing can be sent now: wait for that to change, not in a busy loop
                    self._can_send.clear()
                    if self._sending_paused or not self._online:
                        await self._can_send.wait()
                    continue
                self._progress.clear()
                if (
                    self.session.pending_changes or self.session.snapshot_requested
                ) and not self.session.refused:
                    # else what is in flight ends with an acknowledgement, and what the broker
                    # refused goes out once the newer snapshot is received
                    self._wake.set()
                await self._progress.wait()

    async def send_presence(self, payload: bytes) -> None:
        """Send an ephemeral (presence) payload to the peers that are online now."""
        await self._publish_ephemeral(self.session.send_ephemeral(payload))

    async def events(self) -> AsyncIterator[Event]:
        """Events as they happen; ends when the document is closed."""
        while True:
            if self._closed and self._events.empty():
                return
            get = asyncio.ensure_future(self._events.get())
            try:
                yield await get
            finally:
                get.cancel()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def next_event(self, timeout: float | None = None) -> Event:
        async with asyncio.timeout(timeout):
            return await self._events.get()

    async def close(self) -> None:
        """Stop syncing; unsent changes stay in the session (and the CRDT object)."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            await self.presence.close()
        if self._online_task is not None:
            self._online_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._online_task
        if self._started:  # a failed open leaves no state behind
            with contextlib.suppress(SecsyncError):
                self.checkpoint()
        self._closed = True
        self._wake.set()
        self._progress.set()
        self._can_send.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._in_flight_tasks):
            task.cancel()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sender
        await self._stop_live()
        if self._ephemeral_sub is not None:
            with contextlib.suppress(Exception):
                await self._ephemeral_sub.unsubscribe()
        if self._notify is not None:
            self._notify(None)
        self.session.close()
        self._client._forget(self)
        self._log.info("document_closed")

    async def __aenter__(self) -> Document:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- loading ----------------------------------------------------------------------------

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._notify is not None:
            loop_thread = threading.get_ident()

            def changed() -> None:
                # On the loop's thread (where edits usually happen) the change is taken and
                # logged now, at the end of the edit's transaction, before control returns to
                # the application: that is the durability guarantee. From another thread it is
                # taken on the loop's next turn.
                if threading.get_ident() == loop_thread:
                    self._local_change()
                else:
                    loop.call_soon_threadsafe(self._local_change)

            self._notify(changed)
        restored = self._restore()
        if self._client.connected.is_set():
            try:
                await self._go_online()
            except BrokerUnavailableError:
                if not restored and self._store is None:
                    raise
                self._online_task = asyncio.create_task(self._stay_online())
        else:
            self._online_task = asyncio.create_task(self._stay_online())
        self._sender = asyncio.create_task(
            self._send_loop(self.session.unacknowledged_messages()),
            name=f"secsync-send-{self.doc_id}",
        )
        self._sender.add_done_callback(self._sender_ended)
        self._started = True

    def _sender_ended(self, task: asyncio.Task[None]) -> None:
        """A sender that ends with an error while the document is open is reported, and
        :meth:`flush` raises it, instead of local changes silently waiting for ever."""
        if task.cancelled() or self._closed:
            return
        exc = task.exception()
        if exc is None:
            return
        self._sender_error = TransportError(f"the sender stopped: {type(exc).__name__}: {exc}")
        self._log.error("sender_failed", error=type(exc).__name__, exc_info=exc)
        self._emit([SyncFailed(self._sender_error)])
        self._progress.set()

    def _restore(self) -> bool:
        """Resume from the local store: content, outbox, sequences. True if there was state."""
        if self._store is None or self._storage_key is None:
            return False
        state = self._store.load(self.subjects.token, self._storage_key)
        if state is None:
            return False
        crdt = self.session.crdt
        if state.crdt_state:
            crdt.apply_snapshot(state.crdt_state)
        if state.session:
            self.session.restore_state(state.session)
        if state.changes:
            crdt.apply_changes(state.changes)  # edits logged after the last checkpoint
            self.session.add_local_changes(state.changes)
        self._last_seq = state.last_sequence
        self._restored_digest = state.last_digest
        self._snapshot_seq = dict(state.snapshot_sequences)
        active = self.session.active_snapshot
        self._emit(
            [
                DocumentRestored(
                    active.snapshot_id if active else None,
                    self._last_seq,
                    self.session.pending_changes + self.session.unacknowledged,
                )
            ]
        )
        self._log.info("document_restored", last_sequence=self._last_seq)
        return True

    async def _stay_online(self) -> None:
        """Until the document is online: wait for the connection, catch up, with backoff."""
        from secsync.transport.client import backoff_delay

        attempt = 0
        while not self._closed and not self._online:
            await self._client.connected.wait()
            try:
                await self._go_online()
            except (BrokerUnavailableError, TimeoutError):
                await asyncio.sleep(
                    backoff_delay(attempt, self.config.retry_initial, self.config.retry_max)
                )
                attempt += 1
            except SecsyncError as exc:
                # refused for good (e.g. no longer permitted): say so, stay offline
                self._log.warning("document_offline", code=exc.code, reason=exc.message)
                self._emit([SyncFailed(exc)])
                return

    async def _go_online(self) -> None:
        async with asyncio.timeout(self.config.open_timeout):
            if self.session.loaded and self._last_seq and await self._history_lost():
                await self._resync()
            if self.session.loaded:
                updates = await self._catch_up()
                snapshot = self.session.active_snapshot
                self._emit(
                    [
                        DocumentLoaded(
                            snapshot.snapshot_id if snapshot else None, updates, self._last_seq
                        )
                    ]
                )
            else:
                latest, loaded = await self._load_latest()
                snapshot_msg = latest.snapshot
                self.load_errors = [e.error for e in loaded if isinstance(e, MessageRejected)]
                self._emit(loaded)
                if snapshot_msg is not None:
                    # updates on it are stored only while no snapshot message follows those
                    # weighed when choosing it
                    self._snapshot_seq[snapshot_msg.snapshot_id] = latest.judged
                self._adopt_stream_position(latest)
                self._emit(
                    [
                        DocumentLoaded(
                            snapshot_msg.snapshot_id if snapshot_msg else None,
                            len(latest.after),
                            latest.sequence,
                        )
                    ]
                )
            if not self._receiving_paused:
                await self._start_live()
            if self._ephemeral_sub is None:
                self._ephemeral_sub = await self._client.nc.subscribe(
                    self.subjects.ephemeral, cb=self._on_ephemeral
                )
        self._online = True
        self._can_send.set()
        self._dirty = True
        self.presence.greet()
        self.presence.start()
        self._wake.set()
        self._log.info("document_online", last_sequence=self._last_seq)

    async def _read(self, subject: str, start: int) -> list[jetstream.StoredMessage]:
        """Stored messages of this document on ``subject`` from ``start`` on, through a consumer
        scoped to the document (what per-document permissions allow)."""
        return await jetstream.messages_scoped(
            self._client.js,
            self._read_stream,
            subject,
            start,
            timeout=self.config.request_timeout,
        )

    async def _catch_up(self) -> int:
        """Apply what was stored after the last applied sequence; return how many messages."""
        self._drain_inbox()
        stored = await self._read(self.subjects.stored, self._last_seq + 1)
        self._handle_stored_many(stored)
        return len(stored)

    def _connection_changed(self, connected: bool) -> None:
        self._emit([ConnectionChanged(connected)])
        if connected and not self._online and self._online_task is None:
            self._online_task = asyncio.create_task(self._stay_online())
        elif connected and self._online:
            self._spawn(self._check_after_reconnect())

    def _adopt_stream_position(self, latest: _Latest) -> None:
        """After loading ``latest``: apply what followed it, and stand where it ends."""
        self._last_seq = latest.sequence
        self._last_data = None
        self._handle_stored_many(latest.after)
        if latest.judged > self._last_seq:
            self._last_seq, self._last_data = latest.judged, None

    async def _history_lost(self) -> bool:
        """Does the stream still hold, at our last applied sequence, what we applied there?

        A stream restored from an older backup holds less, and new writes then take sequences
        we have applied already: reading on after them would miss those writes for good.
        """
        found = await jetstream.messages_scoped(
            self._client.js,
            self._read_stream,
            self.subjects.stored,
            self._last_seq,
            timeout=self.config.request_timeout,
            limit=1,
        )
        if not found or found[0].sequence != self._last_seq:
            return True  # gone (rolled back, or compacted away: starting over is right then too)
        if chunks.PARTS_HEADER in found[0].headers:
            return False  # a part of a larger message: nothing to compare with
        expected = self._last_digest() or self._restored_digest
        return bool(expected) and _digest(found[0].data) != expected

    def _last_digest(self) -> bytes:
        """Digest of what we applied at ``_last_seq``, if known."""
        data = self._last_data
        if data is None:
            return b""
        if not isinstance(data, bytes):
            data = wire.encode(data, include_doc_id=False)
        return _digest(data)

    async def _resync(self) -> None:
        """Start over from what the stream holds now; every local change is kept and re-sent."""
        self._log.warning("history_lost", last_sequence=self._last_seq)
        latest = await self._fetch_latest()
        self._emit(
            self.session.rewind(
                latest.snapshot,
                self._updates_in(latest),
                reason="the stream no longer holds what was applied (restored from a backup?)",
                now=time.monotonic(),
            )
        )
        self._snapshot_seq = {}
        if latest.snapshot is not None:
            self._snapshot_seq[latest.snapshot.snapshot_id] = latest.judged
        self._own_sequences.clear()
        self._unresolved.clear()
        self._own_payloads.clear()
        self._reassembler = chunks.Reassembler()
        self._last_seq = max(latest.judged, max((m.sequence for m in latest.after), default=0))
        self._last_data, self._restored_digest = None, b""
        self._dirty = True
        self._wake.set()

    async def _check_after_reconnect(self) -> None:
        """Back online after a disconnection: if the stream lost what we applied, start over
        (the live consumer restarts after the new position). A server that just came back
        may not have its stream yet (a restore under way): the check waits for it."""

        async def check() -> None:
            if not self._last_seq or not await self._history_lost():
                return
            await self._stop_live()
            await self._resync()
            if not self._receiving_paused and not self._closed:
                await self._start_live()

        error = await self._retrying(check, "history_check_retry")
        if error is not None:
            self._emit([SyncFailed(error)])

    async def _retrying(
        self, step: Callable[[], Awaitable[None]], event: str
    ) -> SecsyncError | None:
        """Run ``step`` until it succeeds or the document is closed, trying again with backoff
        after a broker-side failure (no leader, no responders, no stream yet, no answer in
        time). Any other error ends it and is returned."""
        attempt = 0
        while not self._closed:
            try:
                await step()
                return None
            except _BROKER_SIDE as exc:
                self._log.info(event, attempt=attempt, reason=str(exc))
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
            except SecsyncError as exc:
                return exc
        return None

    def _updates_in(self, latest: _Latest) -> list[Update]:
        """The updates stored after the snapshot ``latest`` chose, decoded (junk left out)."""
        frames = (m.data for m in latest.after if m.subject == self.subjects.update)
        return [m for m in map(self._decode, frames) if isinstance(m, Update)]

    async def _load_latest(self) -> tuple[_Latest, list[Event]]:
        """Load the newest stored snapshot that opens and whose content the CRDT takes: one
        whose content is refused (hostile or damaged, ``SnapshotApplyError``) is passed over,
        and reported, for the one before it."""
        passed_over: set[bytes] = set()
        events: list[Event] = []
        while True:
            latest = await self._fetch_latest(frozenset(passed_over))
            loaded = self.session.load(latest.snapshot, now=time.monotonic())
            events += loaded
            snapshot = latest.snapshot
            if (
                snapshot is None
                or self.session.active_snapshot is not None
                or not any(
                    isinstance(e, MessageRejected) and isinstance(e.error, SnapshotApplyError)
                    for e in loaded
                )
            ):
                return latest, events
            passed_over.add(snapshot.snapshot_id)

    async def _fetch_latest(self, passed_over: frozenset[bytes] = frozenset()) -> _Latest:
        """The snapshot to load, and what was stored after it.

        The last message on the snapshot subject is only a hint: anyone who may write there
        can store junk, replay an old snapshot, or seal one under another key. So the subject
        is read back from its end (:meth:`_search`), in windows that double, until the session
        chooses (:meth:`DocumentSession.choose`) a snapshot among those read that is settled:
        its parent was read too (or the whole subject was), so an earlier copy of it — which
        makes it a replay — would have been seen; with membership chains, at least
        ``load_chain_window`` snapshot messages before it were weighed as well. Past
        ``load_snapshot_messages`` messages or ``load_snapshot_bytes`` bytes read without a
        settled choice it raises :class:`SnapshotSearchError` (119). Raises
        :class:`WrongKeyError` (or the key provider's :class:`NotAMemberError`) when the whole
        subject was read and no snapshot in it opens with our key.
        """
        last = await jetstream.last_scoped(
            self._client.js,
            self._read_stream,
            self.subjects.snapshot,
            timeout=self.config.request_timeout,
        )
        if last is None:
            after = await self._read(self.subjects.stored, 1)
            return _Latest(None, 0, 0, after)
        judged = last.sequence
        search = await self._search(last, passed_over)
        self.load_search = search.read
        choice, candidates, sequences = search.choice, search.candidates, search.sequences
        self._emit(list(choice.rejected))
        if choice.index is None:
            if choice.unreadable:
                # the key provider's own verdict says most (not a member, a forged roster)
                for rejection in choice.rejected:
                    if isinstance(rejection.error, AccessError):
                        raise rejection.error
                raise WrongKeyError(
                    "the key does not open this document: none of its "
                    f"{len(candidates)} stored snapshot(s) decrypts with it; nothing was written"
                )
            after = await self._read(self.subjects.stored, 1)
            return _Latest(None, 0, judged, after)
        snapshot, sequence = candidates[choice.index], sequences[choice.index]
        if sequence >= judged:
            rest = await self._read(self.subjects.stored, sequence + 1)
        else:
            # Snapshot messages up to `judged` were weighed above and passed over: not read
            # again; the updates after the chosen one and what followed `judged` are.
            updates = await self._read(self.subjects.update, sequence + 1)
            later = await self._read(self.subjects.snapshot, judged + 1)
            rest = sorted(updates + later, key=lambda m: m.sequence)
        rest = [m for m in rest if m.subject != self.subjects.snapshot or m.sequence > judged]
        return _Latest(snapshot, sequence, judged, rest)

    async def _search(
        self, last: jetstream.StoredMessage, passed_over: frozenset[bytes]
    ) -> _Search:
        """Read the snapshot subject back from ``last`` until the choice is settled (see
        :meth:`_fetch_latest`); bounded by ``load_snapshot_messages``/``load_snapshot_bytes``."""
        config = self.config
        chains = getattr(self.session.keys, "membership_chain", None) is not None
        read = _SearchRead(messages=1, bytes=len(last.data), windows=1)
        lowest = last.sequence  # [lowest, last] is read
        fresh = [last]  # read and not decoded yet, in stream order
        decoded: list[tuple[int, Snapshot]] = []  # (sequence of its last part, snapshot)
        span = _FIRST_SPAN
        search: _Search | None = None
        total: int | None = None  # snapshot messages stored, once the first window fell short
        while True:
            # A window starts where a message starts: fetch the first parts of a chunked one.
            index = _part_index(fresh[0]) if fresh else 1
            start = fresh[0].sequence - index + 1 if fresh else lowest
            if index > 1 and 1 <= start < lowest:
                fresh = await self._snapshots_between(start, lowest - 1, read) + fresh
                lowest = start
                continue
            if fresh or search is None:  # an empty window changes nothing to weigh
                decoded = _decode_window(fresh, self._decode) + decoded
                search = _weigh(self.session, decoded, passed_over, read)
            fresh = []
            complete = lowest <= 1 or (total is not None and read.messages >= total)
            if complete or _settled(search, decoded, chains, config.load_chain_window):
                return search
            if total is None and read.windows > 1:
                # Read back to the subject's first message, without counting down the
                # sequences to 1 (a compacted document starts far into the stream).
                total = await jetstream.count_scoped(
                    self._client.js,
                    self._read_stream,
                    self.subjects.snapshot,
                    timeout=self.config.request_timeout,
                )
                if read.messages >= total:
                    return search
            if (
                read.messages >= config.load_snapshot_messages
                or read.bytes >= config.load_snapshot_bytes
            ):
                return self._unsettled(search, read)
            start = max(1, lowest - span)
            try:
                fresh = await self._snapshots_between(start, lowest - 1, read)
            except SnapshotSearchError:
                return self._unsettled(search, read)
            lowest = start
            span *= 2

    def _unsettled(self, search: _Search, read: _SearchRead) -> _Search:
        """The bound is reached. A snapshot that verifies and opens was chosen, but its parent
        (or, for a group, enough earlier chains) lies further back: it is loaded, so that a
        long run of snapshots stored after a parent (a flood, the repair after it) never
        makes a document unopenable. Only a replayed old snapshot stored last, with more
        than the bound after its parent, goes unnoticed then; readers that hold the document
        see it lack content and repair it. Nothing chosen: ``SnapshotSearchError``."""
        if search.choice.index is None:
            raise self._search_error(read)
        self._log.warning(
            "snapshot_search_unsettled",
            messages=read.messages,
            bytes=read.bytes,
            windows=read.windows,
        )
        return search

    async def _snapshots_between(
        self, first: int, last: int, read: _SearchRead
    ) -> list[jetstream.StoredMessage]:
        """The snapshot messages stored at ``first..last``, counted in ``read``."""
        left = self.config.load_snapshot_messages - read.messages
        found, count = await jetstream.messages_between(
            self._client.js,
            self._read_stream,
            self.subjects.snapshot,
            first,
            last,
            stored_after=read.messages,
            max_count=max(0, left),
            timeout=self.config.request_timeout,
        )
        read.windows += 1
        if count > left:
            read.messages += count
            raise self._search_error(read)
        read.messages += len(found)
        read.bytes += sum(len(m.data) for m in found)
        return found

    def _search_error(self, read: _SearchRead) -> SnapshotSearchError:
        self._log.warning(
            "snapshot_search_bound", messages=read.messages, bytes=read.bytes, windows=read.windows
        )
        return SnapshotSearchError(
            f"no snapshot to load among the last {read.messages} snapshot message(s) "
            f"({read.bytes} bytes) of this document: more was stored after the latest loadable "
            "one than loading reads (load_snapshot_messages, load_snapshot_bytes); "
            "nothing was written"
        )

    # --- live delivery ----------------------------------------------------------------------

    async def _start_live(self) -> None:
        import dataclasses
        import secrets

        from nats.js import api

        class NamedConsumerConfig(api.ConsumerConfig):
            # nats-py creates the consumer from config.evolve(), also when it re-creates the
            # ordered consumer after a gap or missed heartbeats: give each creation a random
            # name. A named create carries the filter in its subject, which per-document
            # permissions can match (an unnamed one cannot be scoped), and a fresh name never
            # collides with the consumer it replaces, which may still exist for a while.
            def evolve(self, **params: Any) -> Any:
                params.setdefault("name", f"secsync_{secrets.token_hex(16)}")
                return dataclasses.replace(self, **params)

        config = NamedConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self._last_seq + 1,
        )
        self._sub = await self._client.js.subscribe(
            self.subjects.stored,
            stream=self._read_stream,
            cb=self._on_stored,
            ordered_consumer=True,
            idle_heartbeat=self.config.idle_heartbeat,
            config=config,
        )

    async def _stop_live(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        with contextlib.suppress(Exception):
            info = await asyncio.wait_for(sub.consumer_info(), self.config.request_timeout)
            await asyncio.wait_for(
                self._client.js.delete_consumer(self._read_stream, info.name),
                self.config.request_timeout,
            )
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _on_stored(self, msg: Any) -> None:
        # Collect what the subscription delivers in one go and process it together (one
        # receive_many for a run of updates) once the burst is taken.
        if self._closed or self._receiving_paused:
            return  # not applied, so the catch-up on resume reads it again
        self._inbox.append(jetstream.delivered(msg))
        if len(self._inbox) == 1:
            asyncio.get_running_loop().call_soon(self._drain_inbox)

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        if inbox and not self._closed and not self._receiving_paused:
            self._handle_stored_many(inbox)
            self._wake.set()

    def _handle_stored_many(self, messages: list[jetstream.StoredMessage]) -> None:
        """Stored messages in stream order; runs of plain updates go to one receive_many."""
        run: list[bytes] = []
        for stored in messages:
            if (
                stored.subject != self.subjects.update
                or stored.sequence <= self._last_seq
                or self._reassembler.pending
                or chunks.PARTS_HEADER in stored.headers
            ):
                self._receive_run(run)
                self._handle_stored(stored)
                continue
            self._last_seq = stored.sequence
            self._last_data = stored.data
            self._restored_digest = b""
            if self._own_payloads and self._acknowledge_own(stored):
                continue
            self._dirty = True
            run.append(stored.data)
        self._receive_run(run)

    def _receive_run(self, run: list[bytes]) -> None:
        if run:
            events = self.session.receive_many(run, now=time.monotonic())
            run.clear()
            self._emit(events)
            self._react(events, None)

    def _acknowledge_own(self, stored: jetstream.StoredMessage) -> bool:
        """Our own update delivered back, byte for byte: it is stored; nothing to verify."""
        own = self._own_payloads.pop(stored.headers.get(MSG_ID, ""), None)
        if own is None or own[0] != stored.data or chunks.PARTS_HEADER in stored.headers:
            return False
        update = own[1]
        self._emit(self.session.update_stored(update.public_data.ref_snapshot_id, update.clock))
        return True

    def _handle_stored(self, stored: jetstream.StoredMessage) -> None:
        if stored.sequence <= self._last_seq:
            # applied already: our own acknowledged publish, or a redelivery
            if self._own_payloads:
                self._own_payloads.pop(stored.headers.get(MSG_ID, ""), None)
            if stored.sequence in self._own_sequences:
                self._own_sequences.discard(stored.sequence)
            else:
                self.redelivered += 1
            return
        self._last_seq = stored.sequence
        self._last_data = None if chunks.PARTS_HEADER in stored.headers else stored.data
        self._restored_digest = b""
        if (
            self._own_payloads
            and stored.subject == self.subjects.update
            and self._acknowledge_own(stored)
        ):
            return
        try:
            data = self._reassembler.feed(stored.sequence, stored.data, stored.headers)
        except SecsyncError as exc:
            self._emit([MessageRejected(exc)])
            return
        if data is None:
            return
        self._dirty = True
        first = self._reassembler.first_sequence or stored.sequence
        events = self.session.receive(data, now=time.monotonic())
        decoded_snapshot = next(
            (e for e in events if isinstance(e, SnapshotApplied) and not e.recovered), None
        )
        held = next(
            (
                e.error
                for e in events
                if isinstance(e, MessageRejected)
                and isinstance(e.error, SnapshotRateError)
                and e.error.held
            ),
            None,
        )
        if decoded_snapshot is not None:
            self._snapshot_seq[decoded_snapshot.snapshot_id] = stored.sequence
        elif held is not None:
            # a real snapshot, taken when its author's rate allows (DocumentSession.handle_timer):
            # where it is stored is what updates on it expect
            self._snapshot_seq[held.snapshot_id] = stored.sequence
            self._wake.set()
        elif stored.subject == self.subjects.snapshot and not any(
            isinstance(e, SnapshotStored) for e in events
        ):
            # A stored snapshot we did not take: altered on its way to us, or junk in the
            # stream. Until fetched again, write no snapshot over it.
            self._unresolved.add(stored.sequence)
            self._spawn(self._recheck(first, stored.sequence))
        self._emit(events)
        self._react(events, stored)

    async def _recheck(self, first: int, last: int) -> None:
        """Fetch a refused snapshot message again, straight from the stream.

        If it now verifies, it was altered in transit to us and is applied. If it is refused
        again, it is junk as stored: nobody can build on it, so our updates may follow it.
        A read that fails for a broker-side reason is tried again with backoff.
        """
        stored: list[jetstream.StoredMessage] = []

        async def read() -> None:
            stored[:] = await self._read(self.subjects.snapshot, first)

        error = await self._retrying(read, "recheck_retry")
        if error is not None:
            self._emit([MessageRejected(error)])
            return  # stays unresolved: no snapshot is written over what we could not check
        if self._closed:
            return
        try:
            assembler = chunks.Reassembler()
            data = None
            for message in stored:
                if message.sequence > last:
                    break
                with contextlib.suppress(SecsyncError):
                    data = assembler.feed(message.sequence, message.data, message.headers) or data
            events = self.session.receive(data, now=time.monotonic()) if data is not None else []
            self._emit(events)
            applied = next((e for e in events if isinstance(e, SnapshotApplied)), None)
            if applied is None and any(
                isinstance(e, MessageRejected) and e.error.code in _UNVERIFIABLE_SNAPSHOT
                for e in events
            ):
                # A real snapshot that does not fit what we hold (it leaves out an update of
                # ours, or forks): others build on it, so it is no junk to write over. It stays
                # unresolved until the recovery this refusal started adopts it.
                return
            if applied is not None:
                self._snapshot_seq[applied.snapshot_id] = last
            else:
                active = self.session.active_snapshot
                if active is not None:
                    current = self._snapshot_seq.get(active.snapshot_id, 0)
                    self._snapshot_seq[active.snapshot_id] = max(current, last)
                    # what this junk made the broker refuse goes out again, as it was
                    self._spawn(self._resend(self.session.resend_refused(active.snapshot_id)))
        except SecsyncError as exc:
            self._emit([MessageRejected(exc)])
            return  # stays unresolved: no snapshot is written over what we could not check
        self._unresolved.discard(last)
        self._wake.set()

    async def _resend(self, updates: list[Update]) -> None:
        for update in updates:
            await self._pipeline(update)

    def _react(self, events: list[Event], stored: jetstream.StoredMessage | None) -> None:
        for event in events:
            if isinstance(event, GapDetected | RecoveryNeeded):
                self._spawn(self._heal(event))
            elif (
                isinstance(event, MessageRejected)
                and stored is not None
                and stored.subject == self.subjects.snapshot
                and event.error.code in _UNVERIFIABLE_SNAPSHOT
            ):
                self._spawn(self._heal(RecoveryNeeded(f"stored snapshot: {event.error}")))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heal(self, event: GapDetected | RecoveryNeeded) -> None:
        """Fetch what a gap lacks; recover from the latest snapshot when that is not enough.

        A read that fails for a broker-side reason (no leader, no responders, no answer in
        time) is tried again with backoff until it succeeds or the document is closed: a gap
        left open would hold back the author's later updates for good.
        """
        error = await self._retrying(lambda: self._heal_once(event), "heal_retry")
        if error is not None:
            self._emit([MessageRejected(error)])

    async def _heal_once(self, event: GapDetected | RecoveryNeeded) -> None:
        if isinstance(event, GapDetected):
            start = self._snapshot_seq.get(event.snapshot_id, 0) + 1
            stored = await self._read(self.subjects.update, start)
            decoded = (self._decode(m.data) for m in stored)
            wanted = [m for m in decoded if m is not None and m.author == event.author]
            self._emit(self.session.receive_many(wanted, now=time.monotonic()))
            return
        latest = await self._fetch_latest()
        snapshot = latest.snapshot
        if snapshot is None:
            return
        self._log.warning("recovering", reason=event.reason)
        events = self.session.recover(
            snapshot,
            self._updates_in(latest),
            reason=event.reason,
            now=time.monotonic(),
        )
        self._snapshot_seq[snapshot.snapshot_id] = latest.judged
        active = self.session.active_snapshot
        if active is not None and active.snapshot_id == snapshot.snapshot_id:
            # settled: every snapshot message up to `judged` was weighed when choosing, and
            # ours is still the latest one can build on: what the broker refused goes out again
            self._unresolved = {u for u in self._unresolved if u > latest.judged}
            self._spawn(self._resend(self.session.resend_refused(active.snapshot_id)))
        self._emit(events)
        self._wake.set()

    def _decode(self, data: bytes) -> Message | None:
        try:
            return wire.decode(data, doc_id=self.doc_id, max_bytes=self.config.max_message_bytes)
        except SecsyncError:
            return None

    async def _on_ephemeral(self, msg: Any) -> None:
        if self._closed:
            return
        peers = len(self.session.ephemeral.peers)
        events = self.session.receive(msg.data, now=time.monotonic())
        for event in events:
            self._emit([event])
            if isinstance(event, EphemeralReceived):
                self._emit(self.presence.receive(event.author, event.payload))
        if len(self.session.ephemeral.peers) != peers:
            self.presence.peer_verified()
        self._wake.set()  # handshake replies go out with the next send

    # --- sending ----------------------------------------------------------------------------

    async def _send_loop(self, retransmit: list[Message]) -> None:
        """``retransmit``: restored messages sent before a restart and never acknowledged;
        they go first, byte for byte."""
        while not self._closed:
            timeout = self._next_wait()
            await wait_woken(self._wake, timeout)
            self._wake.clear()
            if self.closed:
                return
            if self._notify is None:
                self._local_change()  # documents without change notifications are polled
            timer_events = self.session.handle_timer(time.monotonic())
            self._emit(timer_events)
            self._react(timer_events, None)
            try:
                if not self._online or self._sending_paused:
                    continue
                if retransmit:
                    still = set(map(id, self.session.unacknowledged_messages()))
                    for message in retransmit:
                        if id(message) in still and isinstance(message, Snapshot | Update):
                            await self._publish_stored(message)
                    retransmit = []
                if (
                    self.session.pending_changes
                    and self.config.batch_interval
                    and not self.session.refused
                ):
                    await asyncio.sleep(self.config.batch_interval)  # let a burst accumulate
                    self._local_change()
                for message in self.session.data_to_send():
                    self._dirty = True
                    if isinstance(message, EphemeralMessage):
                        await self._publish_ephemeral(message)
                    elif isinstance(message, Update):
                        await self._pipeline(message)
                    else:
                        await self._drain_pipeline()  # a snapshot follows what is in flight
                        await self._publish_stored(message)
            except DocumentClosedError:
                return
            finally:
                try:
                    self._maybe_checkpoint()
                except SecsyncError as exc:
                    self._emit([StorageFailed(exc)])
                self._progress.set()

    async def _pipeline(self, update: Update) -> None:
        """Publish without waiting for the acknowledgement (up to ``max_in_flight`` at once).

        Updates on one snapshot carry the same compare-and-set expectation, so they need not
        wait for each other; receivers order them by clock. The acknowledgement is handled in
        a callback (:meth:`_acknowledged`); whatever did not end in a plain acknowledgement is
        settled by the retry task (:meth:`_retry_all`), and while it has work, new updates
        queue behind it.
        """
        await self._window.acquire()
        if self._retries:
            self._retry_later(update)  # behind the retries, not racing them
            return
        payload = wire.encode(update, include_doc_id=False)
        headers = self._headers(update)
        if len(payload) <= self._part_limit():
            try:
                await self._client.publisher.publish_then(
                    self.subjects.update,
                    payload,
                    headers,
                    functools.partial(self._acknowledged, update, headers),
                )
            except SecsyncError as exc:
                self._emit([PublishFailed(exc, self.subjects.update, retrying=True)])
            else:
                self._own_payloads[headers[MSG_ID]] = (payload, update)
                while len(self._own_payloads) > 4 * self.config.max_in_flight:
                    self._own_payloads.popitem(last=False)  # never delivered back: forget
                self._unanswered += 1
                return
        self._retry_later(update)

    def _acknowledged(
        self,
        update: Update,
        headers: dict[str, str],
        result: tuple[int, bool] | None,
        error: SecsyncError | None,
    ) -> None:
        self._unanswered -= 1
        if self._closed:
            self._window.release()
            return
        if error is None and result is not None and not result[1]:
            self._stored(update, result[0], result[0])
            self._published()
            return
        outcome: _Outcome
        if error is None and result is not None:
            outcome = (result[0], result[0], True)  # a duplicate: checked before it counts
        elif error is None:
            outcome = TransportError("publish settled without a result")
        else:
            outcome = error
        if not isinstance(outcome, tuple | CompareAndSetBusyError | WrongLastSequenceError):
            if isinstance(outcome, BrokerUnavailableError | StreamNotFoundError):
                outcome = self._client.denied(self.subjects.update) or outcome
            self._emit([PublishFailed(outcome, self.subjects.update, retrying=True)])
        self._retry_later(update, outcome, headers)

    def _retry_later(
        self,
        update: Update,
        outcome: _Outcome | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Settle ``update`` in the retry task, after the others waiting there (window held).

        ``outcome``: what its last attempt, published with ``headers``, came to.
        """
        self._retries.append((update, outcome, headers))
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.ensure_future(self._retry_all())
            self._in_flight_tasks.add(self._retrier)
            self._retrier.add_done_callback(self._in_flight_tasks.discard)

    async def _retry_all(self) -> None:
        """Publish the waiting updates again one at a time, lowest clock first, until each is
        stored or refused for good (or the document is closed)."""
        while self._retries and not self._closed:
            index = min(range(len(self._retries)), key=lambda i: self._retries[i][0].clock)
            update, outcome, headers = self._retries.pop(index)
            try:
                await self._publish_stored(update, outcome, headers)
            except DocumentClosedError:
                return
            finally:
                self._published()

    def _published(self) -> None:
        """One publish of the window is over (stored, refused, or given up on close)."""
        self._window.release()
        self._progress.set()
        if self.session.snapshot_requested and not self._unanswered and not self._in_flight_tasks:
            self._wake.set()  # a requested snapshot may go now that the rest is stored

    async def _drain_pipeline(self) -> None:
        while self._unanswered or self._in_flight_tasks:
            if self._in_flight_tasks:  # retries; a failed publish is replaced by its retry
                await asyncio.wait(list(self._in_flight_tasks))
            else:
                self._progress.clear()
                if self._unanswered:
                    await self._progress.wait()

    def _next_wait(self) -> float | None:
        waits = []
        if self._dirty and self._store is not None:
            waits.append(self.config.checkpoint_interval)
        deadline = self.session.next_deadline()
        if deadline is not None:
            waits.append(max(0.0, deadline - time.monotonic()))
        if self._notify is None:
            waits.append(self.config.poll_interval)
        return min(waits) if waits else None

    def _headers(self, message: Snapshot | Update) -> dict[str, str]:
        if isinstance(message, Snapshot):
            # Stored only if nothing was stored for this document since what we have applied
            # (held back below it while a refused snapshot message is being checked again).
            expected = min(self._unresolved) - 1 if self._unresolved else self._last_seq
            return {
                MSG_ID: snapshot_msg_id(message.snapshot_id),
                EXPECTED_LAST_SUBJECT_SEQ: str(expected),
                EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: self.subjects.stored,
            }
        ref = message.public_data.ref_snapshot_id
        # Stored only if the snapshot it builds on is still the document's latest.
        return {
            MSG_ID: update_msg_id(message),
            EXPECTED_LAST_SUBJECT_SEQ: str(self._snapshot_seq.get(ref, 0)),
            EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: self.subjects.snapshot,
        }

    def _part_limit(self) -> int:
        if self.config.max_part_bytes:
            return self.config.max_part_bytes
        return max(1024, int(self._client.nc.max_payload) - HEADER_ROOM)

    async def _publish_stored(
        self,
        message: Snapshot | Update,
        outcome: _Outcome | None = None,
        sent: dict[str, str] | None = None,
    ) -> None:
        """Publish until the broker stores ``message`` or refuses it for good.

        ``outcome``: what an earlier attempt, published with the headers ``sent``, came to
        (then it is settled first, not resent).
        Transient answers are retried with the same bytes and message id: no answer (backoff
        up to ``retry_max``), 10164 (``busy_retry_*``, the same headers too). A duplicate
        counts only once the stored bytes are ours; a compare-and-set mismatch only once the
        document's latest snapshot is established not to be the one the update builds on. A
        snapshot the session gave up on meanwhile (it applied another one) is not sent again.
        """
        subject = self.subjects.snapshot if isinstance(message, Snapshot) else self.subjects.update
        payload = wire.encode(message, include_doc_id=False)
        delay = self.config.retry_initial
        busy = self.config.busy_retry_initial
        headers = sent if sent is not None and outcome is not None else self._headers(message)
        while True:
            if self._closed:
                raise DocumentClosedError()
            if isinstance(message, Snapshot) and self._abandoned(message):
                # Its expectation would now be computed on top of the snapshot that replaced
                # it: stored, it would fork the history. Its changes were queued again on the
                # snapshot the session applied instead (rebase).
                return
            if outcome is None:
                outcome = await self._attempt(subject, payload, headers)
            try:
                if isinstance(outcome, tuple):
                    first, last, duplicate = outcome
                    if (
                        duplicate
                        and isinstance(message, Update)
                        and not await self._holds(message, payload, first)
                    ):
                        self._emit(
                            self.session.update_preempted(
                                message.public_data.ref_snapshot_id, message.clock
                            )
                        )
                        return
                    break
                raise outcome
            except CompareAndSetBusyError:
                # not evaluated: the same publish again shortly (nothing was stored)
                await asyncio.sleep(busy * (0.5 + random.random()))
                busy = min(self.config.busy_retry_max, busy * 2)
                continue
            except WrongLastSequenceError as exc:
                if isinstance(message, Update):
                    if await self._still_latest(message, headers):
                        headers = self._headers(message)
                        continue  # our expectation was off, not the document: send again
                    self._conflict(message, exc)
                    return
                landed = await self._landed(message, subject, headers[MSG_ID])
                if landed is None:
                    self._conflict(message, exc)
                    return
                first = last = landed
                break
            except DuplicateBatchError:
                # An earlier attempt of this batch was stored; where, only a snapshot needs.
                landed = await self._landed(message, subject, headers[MSG_ID])
                first = last = landed if landed is not None else -1
                break
            except (BrokerUnavailableError, StreamNotFoundError) as exc:
                # no answer, or no responder (a cluster between stream leaders says so too)
                denied = self._client.denied(subject)
                error: SecsyncError = denied or exc
                self._emit([PublishFailed(error, subject, retrying=True)])
            except TransportError as exc:
                self._emit([PublishFailed(exc, subject, retrying=True)])
                delay = self.config.retry_max
            finally:
                outcome = None
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(self.config.retry_max, delay * 2)
            headers = self._headers(message)
        expected = (
            int(headers[EXPECTED_LAST_SUBJECT_SEQ]) if isinstance(message, Snapshot) else None
        )
        self._stored(message, first, last, expected)

    def _abandoned(self, snapshot: Snapshot) -> bool:
        """Whether the session neither waits for ``snapshot`` nor holds it as the active one."""
        waiting = self.session.unacknowledged_messages()
        active = self.session.active_snapshot
        return not (waiting and waiting[0] is snapshot) and (
            active is None or active.snapshot_id != snapshot.snapshot_id
        )

    async def _attempt(self, subject: str, payload: bytes, headers: dict[str, str]) -> _Outcome:
        try:
            return await self._store_message(subject, payload, headers)
        except SecsyncError as exc:
            return exc

    async def _holds(self, update: Update, payload: bytes, sequence: int) -> bool:
        """After a "duplicate" answer: does the stream hold exactly ``payload`` at ``sequence``?

        Read from the stream itself (not a mirror), through a consumer scoped to the update
        subject, until the read succeeds.
        """
        attempt = 0
        while True:
            if self._closed:
                raise DocumentClosedError()
            try:
                found = await jetstream.messages_scoped(
                    self._client.js,
                    self.config.stream_name,
                    self.subjects.update,
                    sequence,
                    timeout=self.config.request_timeout,
                    limit=1,
                )
            except _BROKER_SIDE as exc:
                self._log.info("duplicate_check_failed", reason=str(exc))
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            stored = found[0] if found else None
            if stored is not None and stored.sequence == sequence and stored.data == payload:
                return True
            self._log.warning(
                "duplicate_mismatch",
                sequence=sequence,
                clock=update.clock,
                found=stored.sequence if stored else None,
            )
            self._emit(
                [
                    PublishFailed(
                        DuplicateMismatchError(f"other bytes under our message id at {sequence}"),
                        self.subjects.update,
                        retrying=True,
                    )
                ]
            )
            return False

    async def _still_latest(self, update: Update, headers: dict[str, str]) -> bool:
        """After a compare-and-set mismatch of ``update``: is its snapshot the document's latest
        after all (then the expectation we sent was off, and is corrected)?"""
        ref = update.public_data.ref_snapshot_id
        sent = int(headers[EXPECTED_LAST_SUBJECT_SEQ])
        if self._snapshot_seq.get(ref, 0) != sent:
            return True  # the expectation moved on meanwhile (a snapshot checked as junk)
        try:
            last = await jetstream.last_message(
                self._client.js,
                self.config.stream_name,
                self.subjects.snapshot,
                timeout=self.config.request_timeout,
            )
        except _BROKER_SIDE:
            await asyncio.sleep(self._backoff(0))
            return True  # undecided: the same publish again decides it
        if self._snapshot_seq.get(ref, 0) != sent:
            return True  # moved on while we read
        if last is None or last.headers.get(MSG_ID) != snapshot_msg_id(ref):
            return False
        if last.sequence == self._snapshot_seq.get(ref, 0):
            return False  # a replica behind the leader answered: the mismatch stands
        self._snapshot_seq[ref] = last.sequence
        return True

    def _backoff(self, attempt: int) -> float:
        from secsync.transport.client import backoff_delay

        return backoff_delay(attempt, self.config.retry_initial, self.config.retry_max)

    async def _put(self, subject: str, payload: bytes, headers: dict[str, str]) -> tuple[int, int]:
        """Store ``payload`` (see :meth:`_store_message`); its first and last sequence."""
        first, last, _duplicate = await self._store_message(subject, payload, headers)
        return first, last

    async def _store_message(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> tuple[int, int, bool]:
        """Store ``payload``, in parts by one atomic batch when it exceeds the payload limit;
        the first and last sequence, and whether the broker answered "duplicate"."""
        limit = self._part_limit()
        if len(payload) <= limit:
            try:
                seq, duplicate = await jetstream.publish(
                    self._client.js,
                    subject,
                    payload,
                    headers=headers,
                    timeout=self.config.publish_timeout,
                )
                return seq, seq, duplicate
            except PayloadTooLargeError:
                limit = max(1024, limit // 2)
        parts = chunks.split(payload, limit)
        n = len(parts)
        items: list[tuple[str, bytes, dict[str, str]]] = []
        for index, part in enumerate(parts, start=1):
            part_headers = {chunks.PARTS_HEADER: str(n), chunks.PART_HEADER: str(index)}
            if index == 1:
                part_headers[EXPECTED_LAST_SUBJECT_SEQ] = headers[EXPECTED_LAST_SUBJECT_SEQ]
                part_headers[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = headers[
                    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT
                ]
            if index == n:
                part_headers[MSG_ID] = headers[MSG_ID]
            items.append((subject, part, part_headers))
        last, count = await jetstream.publish_batch(
            self._client.nc, items, timeout=self.config.publish_timeout * 2
        )
        return last - count + 1, last, False

    async def _landed(self, message: Snapshot | Update, subject: str, msg_id: str) -> int | None:
        """After a compare-and-set refusal: did an earlier attempt of ours land after all?

        A single server checks the expectation before the duplicate window, so a retry of a
        publish that was stored is refused as a conflict; a cluster answers "duplicate".
        """
        if isinstance(message, Update):
            return None  # the newer snapshot tells whether it includes the update
        last = await jetstream.last_message(
            self._client.js, self.config.stream_name, subject, timeout=self.config.request_timeout
        )
        if last is not None and last.headers.get(MSG_ID) == msg_id:
            return last.sequence
        return None

    def _conflict(self, message: Snapshot | Update, exc: WrongLastSequenceError) -> None:
        self._log.info(
            "publish_conflict",
            kind="snapshot" if isinstance(message, Snapshot) else "update",
            last_sequence=exc.last_sequence,
        )
        if isinstance(message, Snapshot):
            self._emit(self.session.snapshot_rejected(message.snapshot_id))
        else:
            self._emit(
                self.session.update_rejected(message.public_data.ref_snapshot_id, message.clock)
            )

    def _stored(
        self, message: Snapshot | Update, first: int, last: int, expected: int | None = None
    ) -> None:
        # Stream sequences are shared by every document in the stream. We may move our last
        # applied sequence past our own write only when nothing of this document can lie in
        # between: the stream's next sequence, or a snapshot whose compare-and-set over the
        # document's subjects held at the sequence we had applied.
        if first > 0 and (first == self._last_seq + 1 or expected == self._last_seq):
            self._last_seq = last
            self._last_data = message if first == last else None
            self._restored_digest = b""
            self._own_sequences.update(range(first, last + 1))
        if isinstance(message, Snapshot):
            if last > 0:
                self._snapshot_seq[message.snapshot_id] = last
            self._emit(self.session.snapshot_stored(message.snapshot_id, now=time.monotonic()))
        else:
            self._emit(
                self.session.update_stored(message.public_data.ref_snapshot_id, message.clock)
            )

    async def _publish_ephemeral(self, message: EphemeralMessage) -> None:
        try:
            await self._client.nc.publish(
                self.subjects.ephemeral, wire.encode(message, include_doc_id=False)
            )
        except Exception as exc:  # presence is best effort; never let it stop a document
            self._emit([PublishFailed(TransportError(str(exc)), self.subjects.ephemeral, False)])

    # --- events -----------------------------------------------------------------------------

    def _emit(self, events: list[Event]) -> None:
        if not self.presence.keyed and self.session.active_snapshot is not None:
            self.presence.key_available()
        for event in events:
            if self._events.qsize() >= self.config.event_queue_size:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._events.get_nowait()
            self._events.put_nowait(event)
