"""One open document: a :class:`DocumentSession` bound to NATS JetStream, as a pump.

The rules of binding a session to the stream (which stored snapshot to load, the
compare-and-set headers, what a conflict or a lost acknowledgement means, which junk to check
again, when to heal) are :mod:`secsync.protocol.stream` and
:mod:`secsync.protocol.stream_search`, pure. This module reads from JetStream, feeds the
:class:`StreamBinding`, and performs what it returns (:meth:`Document._perform`, the one place
its output is looked at): events go to the application, actions become reads and publishes.
Publishing is :mod:`secsync.transport.sending`, the snapshot search's reads
:mod:`secsync.transport.loading`. The lifecycle (open, online and offline, pause, close,
checkpoints), live delivery and the public API stay here.

Size: one class's public surface (each property and method documented for applications) and
the asyncio glue between its tasks; no protocol rule remains to split off, and cutting the
class in two would only move its state behind another object's private attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

import pycrdt

from secsync.config import SecsyncConfig
from secsync.errors import (
    BrokerUnavailableError,
    DocumentClosedError,
    IdentityInUseError,
    SecsyncError,
    TransportError,
)
from secsync.logs import get_logger
from secsync.protocol import wire
from secsync.protocol.events import EphemeralReceived, GapDetected, MessageRejected
from secsync.protocol.messages import EphemeralMessage, Message, Snapshot, Update
from secsync.protocol.session import DocumentSession
from secsync.protocol.stream import (
    MSG_ID,
    Heal,
    Output,
    Recheck,
    Resend,
    StreamAction,
    StreamBinding,
    Wake,
)
from secsync.protocol.stream_search import AfterPlan, Latest, SearchRead
from secsync.transport import jetstream
from secsync.transport.events import (
    ConnectionChanged,
    DocumentEvent,
    DocumentLoaded,
    DocumentRestored,
    LoadProgress,
    PublishFailed,
    StorageFailed,
    SyncFailed,
)
from secsync.transport.loading import fetch_latest, find_latest
from secsync.transport.presence import Presence
from secsync.transport.reads import stream_sequence
from secsync.transport.sending import BROKER_SIDE, Sender
from secsync.transport.stream_io import Connection, JetStreamLink
from secsync.transport.subjects import DocumentSubjects
from secsync.transport.waiting import EventQueue, Signal, backoff_delay, wait_woken

log = get_logger("secsync.document")

_Latest = Latest  # the name benchmarks/open_bound.py compares against
_DELIVER_PAGE = 1024  # messages delivered at a time when read in one go (progress, deadline)


def _nothing() -> None:
    pass


class Document:
    """A document kept in sync: edit the CRDT object you passed in; this does the rest.

    Use :meth:`flush` to wait until every local change is stored, iterate :meth:`events` to
    learn about remote changes, snapshots, recoveries and errors, and :meth:`close` (or
    ``async with``) when done.
    """

    def __init__(
        self,
        client: Connection,
        session: DocumentSession,
        config: SecsyncConfig,
        awareness: Any = None,
        *,
        storage_key: bytes | None = None,
        on_close: Callable[[Document], None] | None = None,
        on_progress: Callable[[LoadProgress], None] | None = None,
    ) -> None:
        self._client = client
        self._on_close = on_close
        self._on_progress = on_progress
        self._moved_on: Callable[[], None] = _nothing  # see _go_online
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
        self._log = log.bind(doc=self.subjects.token[:8])
        self._events: EventQueue[DocumentEvent] = EventQueue()
        self._wake = Signal()
        self._progress = Signal()
        self._can_send = Signal()  # set whenever online and not paused may have begun
        self._closed = False
        self._started = False  # set once open() succeeded
        self.binding = StreamBinding(
            session,
            self.subjects,
            max_message_bytes=config.max_message_bytes,
            remembered=4 * config.max_in_flight,
        )
        """Where the document stands on the stream, and the rules of it (sans-IO)."""
        self._io = JetStreamLink(client, config)
        self._sender = Sender(
            self.binding,
            self._io,
            config,
            emit=self._emit,
            closed=lambda: self._closed,
            progress=self._progress,
            wake=self._wake,
        )
        self._sub: Any = None
        self._send_task: asyncio.Task[None] | None = None
        # Why the sender stopped, if it ended with an error: nothing is sent any more.
        self._sender_error: TransportError | None = None
        self._ephemeral_sub: Any = None
        self._notify = getattr(session.crdt, "set_change_listener", None)
        self._saved_locally = True
        session.change_log = self._log_changes
        self._tasks: set[asyncio.Future[None]] = set()
        self._inbox: list[jetstream.StoredMessage] = []  # delivered, not processed yet
        self._routed = False  # live delivery through the client's shard router
        self._held = False  # routed messages kept until what is stored has been read
        if (
            config.presence
            and awareness is None
            and isinstance(getattr(session.crdt, "doc", None), pycrdt.Doc)
        ):
            awareness = pycrdt.Awareness(session.crdt.doc)  # type: ignore[attr-defined]
        self.presence = Presence(
            session,
            config,
            emit=self._emit,
            publish=self._publish_ephemeral,
            notify_changed=self.notify_changed,
            awareness=awareness,
        )
        """Cursors and user state of the participants online now."""
        self.load_errors: list[SecsyncError] = []
        """Why the latest snapshot was refused when the document was loaded, if it was."""
        # What the last look for a snapshot to load read back (messages, bytes, windows).
        self.load_search: SearchRead | None = None

    @property
    def redelivered(self) -> int:
        """Stored messages delivered again after they were applied (e.g. after a reconnect)."""
        return self.binding.redelivered

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_sequence(self) -> int:
        """The last stream sequence of this document that was applied."""
        return self.binding.last_sequence

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
            await self._listen()
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
                last_sequence=self.binding.last_sequence,
                snapshot_sequences=dict(self.binding.snapshot_sequences),
                last_digest=self.binding.last_digest(),
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

    async def events(self) -> AsyncIterator[DocumentEvent]:
        """Events as they happen; ends when the document is closed."""
        while True:
            if self._closed and self._events.empty():
                return
            get = asyncio.ensure_future(self._events.get())
            try:
                yield await get
            finally:
                get.cancel()

    def __aiter__(self) -> AsyncIterator[DocumentEvent]:
        return self.events()

    async def next_event(self, timeout: float | None = None) -> DocumentEvent:
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
        self._sender.cancel()
        if self._send_task is not None:
            self._send_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._send_task
        await self._stop_live()
        if self._ephemeral_sub is not None:
            with contextlib.suppress(Exception):
                await self._ephemeral_sub.unsubscribe()
        if self._notify is not None:
            self._notify(None)
        self.session.close()
        if self._on_close is not None:
            self._on_close(self)
        self._log.info("document_closed")

    async def __aenter__(self) -> Document:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- loading ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume from the local store, go online (or keep trying), start the sender; the
        client calls it once, on open."""
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
        self._send_task = asyncio.create_task(
            self._send_loop(self.session.unacknowledged_messages()),
            name=f"secsync-send-{self.doc_id}",
        )
        self._send_task.add_done_callback(self._sender_ended)
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
        self.binding.restore(state.last_sequence, state.last_digest, state.snapshot_sequences)
        active = self.session.active_snapshot
        self._emit(
            [
                DocumentRestored(
                    active.snapshot_id if active else None,
                    self.binding.last_sequence,
                    self.session.pending_changes + self.session.unacknowledged,
                )
            ]
        )
        self._log.info("document_restored", last_sequence=self.binding.last_sequence)
        return True

    async def _stay_online(self) -> None:
        """Until the document is online: wait for the connection, catch up, with backoff."""
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
        # open_timeout bounds a stall, not the whole load: every page read (and each step of
        # the snapshot search) moves the deadline on, so a large document never times out
        # while it is loading.
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.open_timeout) as deadline:
                self._moved_on = lambda: deadline.reschedule(loop.time() + self.config.open_timeout)
                await self._load_or_catch_up()
        except TimeoutError:
            raise BrokerUnavailableError(
                f"loading made no progress for {self.config.open_timeout} s (open_timeout)"
            ) from None
        finally:
            self._moved_on = _nothing

    async def _load_or_catch_up(self) -> None:
        if not self._receiving_paused:
            await self._listen()
        if self.session.loaded and self.binding.last_sequence and await self._history_lost():
            await self._resync()
        if self.session.loaded:
            updates = await self._catch_up()
            snapshot = self.session.active_snapshot
            self._emit(
                [
                    DocumentLoaded(
                        snapshot.snapshot_id if snapshot else None,
                        updates,
                        self.binding.last_sequence,
                    )
                ]
            )
        else:
            plan, loaded = await self._load_latest()
            self.load_errors = [e.error for e in loaded if isinstance(e, MessageRejected)]
            self._emit(loaded)
            updates = await self._adopt(plan)
            self._emit(
                [
                    DocumentLoaded(
                        plan.snapshot.snapshot_id if plan.snapshot else None,
                        updates,
                        plan.sequence,
                    )
                ]
            )
        if not self._receiving_paused:
            await self._start_live()
        if self.config.presence and self._ephemeral_sub is None:
            self._ephemeral_sub = await self._client.nc.subscribe(
                self.subjects.ephemeral, cb=self._on_ephemeral
            )
        self._moved_on()
        self._online = True
        self._can_send.set()
        self._dirty = True
        if self.config.presence:
            self.presence.greet()
            self.presence.start()
        self._wake.set()
        self._log.info("document_online", last_sequence=self.binding.last_sequence)

    async def _read(self, subject: str, start: int) -> list[jetstream.StoredMessage]:
        """Stored messages of this document on ``subject`` from ``start`` on."""
        return await self._io.read(subject, start)

    async def _catch_up(self) -> int:
        """Apply what was stored after the last applied sequence; return how many messages."""
        self._drain_inbox()
        out, count = await self._read_delivering(
            self.subjects.stored, self.binding.last_sequence + 1
        )
        self._perform(out)
        return count

    async def _read_delivering(self, subject: str, start: int) -> tuple[Output, int]:
        """Read ``subject`` from ``start`` on, each page given to the binding as it arrives
        (while the broker sends the next): what the binding returned, and how many messages.
        What it returns is performed once, after the last page, as if read in one go."""
        out: Output = []
        count = 0

        def page(messages: list[jetstream.StoredMessage], total: int) -> None:
            nonlocal count
            out.extend(self.binding.deliver(messages, now=time.monotonic()))
            count += len(messages)
            self._loaded_so_far(count, total)

        try:
            await self._io.read(subject, start, on_page=page)
        except BaseException:
            # what was read is applied, and what that asks for done: a retry goes on from the
            # last applied sequence
            self._perform(out)
            raise
        return out, count

    def _loaded_so_far(self, messages: int, total: int) -> None:
        self._moved_on()
        if self._on_progress is not None:
            self._on_progress(LoadProgress(self.doc_id, messages, max(messages, total)))

    async def _adopt(self, plan: AfterPlan) -> int:
        """Apply what was stored after the loaded snapshot (``plan``); how many messages."""
        head = Latest(plan.snapshot, plan.sequence, plan.judged, [])
        self.binding.adopt_start(head)
        if len(plan.reads) == 1:
            [(subject, start)] = plan.reads
            out, count = await self._read_delivering(subject, start)
        else:
            # updates and later snapshots read apart, merged in stream order
            answers = [await self._read(subject, start) for subject, start in plan.reads]
            self._moved_on()
            after = plan.assemble(answers).after
            out, count = [], len(after)
            for first in range(0, count, _DELIVER_PAGE):
                page = after[first : first + _DELIVER_PAGE]
                out += self.binding.deliver(page, now=time.monotonic())
                self._loaded_so_far(first + len(page), count)
        self.binding.adopt_end(head)
        self._perform(out)
        return count

    def connection_changed(self, connected: bool) -> None:
        """The client's connection went down or came back up."""
        self._emit([ConnectionChanged(connected)])
        if connected and not self._online and self._online_task is None:
            self._online_task = asyncio.create_task(self._stay_online())
        elif connected and self._online:
            self._spawn(self._check_after_reconnect())

    async def _history_lost(self) -> bool:
        """Does the stream still hold, at our last applied sequence, what we applied there?
        (A stream restored from an older backup holds less.)"""
        found = await self._io.read(self.subjects.stored, self.binding.last_sequence, limit=1)
        return self.binding.history_lost(found)

    async def _resync(self) -> None:
        """Start over from what the stream holds now; every local change is kept and re-sent."""
        self._log.warning("history_lost", last_sequence=self.binding.last_sequence)
        latest = await self._fetch_latest()
        reason = "the stream no longer holds what was applied (restored from a backup?)"
        self._emit(self.binding.rewind(latest, reason, now=time.monotonic()))
        self._dirty = True
        self._wake.set()

    async def _check_after_reconnect(self) -> None:
        """Back online after a disconnection: if the stream lost what we applied, start over
        (the live consumer restarts after the new position). A server that just came back
        may not have its stream yet (a restore under way): the check waits for it."""

        async def check() -> None:
            if not self.binding.last_sequence or not await self._history_lost():
                return
            await self._stop_live()
            if not self._receiving_paused:
                await self._listen()
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
            except BROKER_SIDE as exc:
                self._log.info(event, attempt=attempt, reason=str(exc))
                await asyncio.sleep(
                    backoff_delay(attempt, self.config.retry_initial, self.config.retry_max)
                )
                attempt += 1
            except SecsyncError as exc:
                return exc
        return None

    async def _load_latest(self) -> tuple[AfterPlan, list[DocumentEvent]]:
        """Load the newest stored snapshot that opens and whose content the CRDT takes: one
        whose content is refused (hostile or damaged, ``SnapshotApplyError``) is passed over,
        and reported, for the one before it. What follows it is still to read (the plan)."""
        passed_over: set[bytes] = set()
        events: list[DocumentEvent] = []

        def searched(read: SearchRead) -> None:
            self.load_search = read

        while True:
            plan = await find_latest(
                self._io,
                self.binding,
                self.config,
                emit=self._emit,
                searched=searched,
                passed_over=frozenset(passed_over),
                progress=self._moved_on,
            )
            loaded = self.session.load(plan.snapshot, now=time.monotonic())
            events += loaded
            head = Latest(plan.snapshot, plan.sequence, plan.judged, [])
            if plan.snapshot is None or not self.binding.content_refused(
                head, self.session, loaded
            ):
                return plan, events
            passed_over.add(plan.snapshot.snapshot_id)

    async def _fetch_latest(self, passed_over: frozenset[bytes] = frozenset()) -> Latest:
        """The snapshot to load, and what was stored after it (:func:`loading.fetch_latest`)."""

        def searched(read: SearchRead) -> None:
            self.load_search = read

        return await fetch_latest(
            self._io,
            self.binding,
            self.config,
            emit=self._emit,
            searched=searched,
            passed_over=passed_over,
        )

    def _decode(self, data: bytes) -> Message | None:
        return self.binding.decode(data)

    # --- live delivery ----------------------------------------------------------------------

    async def _listen(self) -> None:
        """With shared consumers: be routed what is stored from now on, held until
        :meth:`_start_live`, before reading what was stored (so nothing falls in between)."""
        if self.config.live_consumers != "per_shard":
            return
        self._held = True
        if not self._routed:
            await self._client.router.route(
                self.subjects.shard, self.subjects.token, self._take_stored
            )
            self._routed = True

    async def _start_live(self) -> None:
        """Follow the stream live from after the last applied sequence."""
        if self.config.live_consumers == "per_shard":
            await self._listen()
            self._held = False
            self._drain_inbox()  # what arrived while reading: the part already read is dropped
            return
        self._sub = await self._io.follow(
            self.subjects.stored, self.binding.last_sequence + 1, self._on_stored
        )

    async def _stop_live(self) -> None:
        self._held = False
        if self._routed:
            self._routed = False
            await self._client.router.unroute(self.subjects.shard, self.subjects.token)
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._io.unfollow(sub)

    async def _on_stored(self, msg: Any) -> None:
        self._take_stored(msg, stream_sequence(msg.reply))

    def _take_stored(self, msg: Any, sequence: int) -> None:
        # Collect what the subscription delivers in one go and process it together (one
        # receive_many for a run of updates) once the burst is taken.
        if self._closed or self._receiving_paused:
            return  # not applied, so the catch-up on resume reads it again
        if not self._inbox:
            # Our own publish delivered back after its acknowledgement (most of a writer's
            # deliveries) is settled by sequence, without a StoredMessage or a turn of the
            # loop; as deliver() would settle it (nothing waits to be delivered before it).
            headers = msg.headers
            msg_id = headers.get(MSG_ID, "") if headers else ""
            if self.binding.applied_already(sequence, msg_id):
                self._wake.set()
                return
        self._inbox.append(jetstream.delivered(msg, sequence))
        if len(self._inbox) == 1 and not self._held:
            asyncio.get_running_loop().call_soon(self._drain_inbox)

    def _drain_inbox(self) -> None:
        if self._held:
            return
        inbox, self._inbox = self._inbox, []
        if inbox and not self._closed and not self._receiving_paused:
            self._perform(self.binding.deliver(inbox, now=time.monotonic()))
            self._wake.set()

    # --- performing what the binding decided ------------------------------------------------

    def _emit(self, events: Sequence[DocumentEvent]) -> None:
        """Queue ``events`` for the application (the oldest go when the queue is full)."""
        if not self.presence.keyed and self.session.active_snapshot is not None:
            self.presence.key_available()
        queue, bound = self._events, self.config.event_queue_size
        for event in events:
            if queue.qsize() >= bound:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    def _perform(self, output: Output) -> None:
        """What the binding returned: events to the application, actions carried out. The one
        place the transport looks at the session's output."""
        if self.binding.changed:
            self.binding.changed = False
            self._dirty = True
        events: list[DocumentEvent] = []
        for item in output:
            if isinstance(item, Wake):
                self._wake.set()
            elif isinstance(item, Heal | Recheck | Resend):
                self._spawn(self._act(item))
            else:
                events.append(item)
        if events:
            self._emit(events)

    async def _act(self, action: StreamAction) -> None:
        if isinstance(action, Resend):
            await self._sender.resend(action.updates)
        elif isinstance(action, Recheck):
            await self._recheck(action)
        elif isinstance(action, Heal):
            # A read failing broker-side is tried again with backoff until it succeeds or the
            # document is closed: a gap left open would hold back the author's later updates.
            error = await self._retrying(lambda: self._heal_once(action), "heal_retry")
            if error is not None:
                self._emit([MessageRejected(error)])

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recheck(self, check: Recheck) -> None:
        """Read a refused snapshot message again, straight from the stream (see
        :meth:`StreamBinding.rechecked`)."""
        stored: list[jetstream.StoredMessage] = []

        async def read() -> None:
            stored[:] = await self._read(self.subjects.snapshot, check.first)

        error = await self._retrying(read, "recheck_retry")
        if error is not None:
            self._emit([MessageRejected(error)])
            return  # stays unresolved: no snapshot is written over what we could not check
        if not self._closed:
            self._perform(self.binding.rechecked(check, stored, now=time.monotonic()))

    async def _heal_once(self, heal: Heal) -> None:
        """Fetch what a gap lacks; recover from the latest snapshot when that is not enough."""
        trigger = self.binding
        event = heal.trigger
        if isinstance(event, GapDetected):
            stored = await self._read(self.subjects.update, trigger.gap_start(event))
            self._emit(trigger.gap_filled(event, stored, now=time.monotonic()))
            return
        latest = await self._fetch_latest()
        if latest.snapshot is None:
            return
        self._log.warning("recovering", reason=event.reason)
        self._perform(trigger.recovered(latest, event.reason, now=time.monotonic()))

    async def _publish_ephemeral(self, message: EphemeralMessage) -> None:
        try:
            await self._io.publish_core(
                self.subjects.ephemeral, wire.encode(message, include_doc_id=False)
            )
        except Exception as exc:  # presence is best effort; never let it stop a document
            self._emit([PublishFailed(TransportError(str(exc)), self.subjects.ephemeral, False)])

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
            self._perform(self.binding.timers(now=time.monotonic()))
            try:
                if not self._online or self._sending_paused:
                    continue
                if retransmit:
                    still = set(map(id, self.session.unacknowledged_messages()))
                    for message in retransmit:
                        if id(message) in still and isinstance(message, Snapshot | Update):
                            await self._sender.publish_stored(message)
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
                        await self._sender.pipeline(message)
                    else:
                        await self._sender.drain()  # a snapshot follows what is in flight
                        await self._sender.publish_stored(message)
            except DocumentClosedError:
                return
            finally:
                try:
                    self._maybe_checkpoint()
                except SecsyncError as exc:
                    self._emit([StorageFailed(exc)])
                self._progress.set()

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
