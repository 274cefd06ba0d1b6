"""The sans-IO document session: the whole protocol state of one document for one client.

Like h11's ``Connection``, it performs no I/O. The caller feeds it received messages
(:meth:`DocumentSession.receive`) and broker acknowledgements, collects local changes from the
CRDT adapter, and sends what :meth:`DocumentSession.data_to_send` returns. Every call returns
the :mod:`events <secsync.protocol.events>` it caused. A rejected message never changes state,
except that a validly signed update whose content is refused spends its author's clock.

This module is the session's public API; the work and the state are elsewhere:

* state the session owns: :class:`~secsync.protocol.outbox.Outbox` (our changes and messages
  until stored), :class:`~secsync.protocol.ordering.UpdateQueues` (per-author order, updates
  waiting for a predecessor or a snapshot, gap timers),
  :mod:`~secsync.protocol.snapshots` (the active snapshot, the replaced and held ones),
  :class:`~secsync.protocol.collisions.ClockDigests`, and what is saved,
  :class:`~secsync.protocol.state.SessionState`;
* the steps: :mod:`~secsync.protocol.receive_snapshots`, :mod:`~secsync.protocol.receive_updates`,
  :mod:`~secsync.protocol.batches` (``receive_many``), :mod:`~secsync.protocol.writing`.

Size: every public method keeps its full contract in its docstring here, where callers read
it; the methods themselves are short.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from secsync.config import SecsyncConfig
from secsync.crdt import ContentCheck, CrdtAdapter, CrdtDocument, adapter_for
from secsync.errors import (
    CreateSnapshotError,
    DeviceCertificateError,
    EphemeralAuthorRejectedError,
    EphemeralError,
    EphemeralNoSessionError,
    EphemeralRateError,
    IdentityInUseError,
    NoActiveSnapshotError,
    SecsyncError,
    SessionStateError,
)
from secsync.logs import get_logger
from secsync.protocol import (
    batches,
    crdt_identity,
    crypto,
    receive_snapshots,
    receive_updates,
    sealing,
    wire,
    writing,
)
from secsync.protocol.batches import BATCH_CHUNK, next_part
from secsync.protocol.collisions import ClockDigests
from secsync.protocol.devices import Device, DeviceDirectory
from secsync.protocol.encoding import b64encode
from secsync.protocol.ephemeral import EphemeralSessions, EphemeralType
from secsync.protocol.events import (
    EphemeralReceived,
    Event,
    MessageRejected,
    RecoveryNeeded,
    SnapshotStored,
    UpdateStored,
)
from secsync.protocol.keys import KeyProvider, key_provider, signing_key_pair
from secsync.protocol.messages import (
    EphemeralMessage,
    Message,
    MessageKind,
    ProofChainEntry,
    Snapshot,
    SnapshotInfo,
    Update,
)
from secsync.protocol.ordering import UpdateQueues
from secsync.protocol.outbox import Outbox
from secsync.protocol.policy import AllowAll, AuthorPolicy
from secsync.protocol.prefetch import (
    Prepared,
    TaskPool,
)
from secsync.protocol.snapshot_rate import SnapshotRate
from secsync.protocol.snapshots import (
    ActiveSnapshot,
    HeldSnapshots,
    SnapshotChoice,
    SnapshotHistory,
)
from secsync.protocol.state import SessionState

__all__ = ["BATCH_CHUNK", "DocumentSession", "SnapshotChoice"]

log = get_logger("secsync.session")


def _short(key: bytes) -> str:
    """A short, non-secret label for ids and public keys in logs."""
    return b64encode(key)[:8]


class DocumentSession:
    """Protocol state of one document: snapshots, per-author clocks and queues, my outbox."""

    def __init__(
        self,
        doc_id: str,
        signer: crypto.SigningKeyPair | str | Device,
        keys: KeyProvider | bytes | str,
        crdt: CrdtDocument,
        *,
        config: SecsyncConfig | None = None,
        policy: AuthorPolicy | None = None,
        verify_executor: TaskPool | None = None,
        user_of: crdt_identity.UserOf | None = None,
    ) -> None:
        """``verify_executor`` (a ``concurrent.futures.ThreadPoolExecutor``, for example one
        shared by many sessions) runs the ``config.verify_threads`` verification workers of
        :meth:`receive_many`; the session starts no thread itself, and without a pool it does
        that work on the calling thread.

        ``user_of`` maps a message's signing key to its user's public key (default: the user
        of a certified device seen in the document, else the key itself, see :meth:`user_of`),
        to whom CRDT identities are bound (:mod:`~secsync.protocol.crdt_identity`): content of
        a received update under an id bound to another user is refused
        (``UpdateIdentityError``), and the document must write under an id of our user
        (``LocalIdentityError`` here otherwise). An adapter without ``authors_of`` and
        ``bind_identity`` is not checked.
        """
        self.doc_id = doc_id
        # --- devices (secsync.protocol.devices): who signs, and which user that is ---
        self.device: Device | None = signer if isinstance(signer, Device) else None
        """The certified device this session writes as (``None``: the key signs as itself)."""
        self.devices = DeviceDirectory()
        """The users of the certified devices seen (see :meth:`user_of`)."""
        self._signed_extra: Mapping[str, Any] = {}
        if self.device is not None:
            signer = self.device.signer
            self.devices.register(self.device.certificate)
            self._signed_extra = self.device.extra()
        # --- end of devices ---
        self.signer = signing_key_pair(signer)
        self.keys: KeyProvider = key_provider(keys)
        self.crdt: CrdtAdapter = adapter_for(crdt)
        self.config = config or SecsyncConfig()
        self._user_of = user_of
        self._authors_of: Callable[[Sequence[bytes]], Iterable[crdt_identity.CrdtId]] | None = (
            getattr(self.crdt, "authors_of", None)
        )
        bind = getattr(self.crdt, "bind_identity", None)
        if bind is not None:
            bind(self.user_of(self.signer.public_key), legacy=self.config.legacy_crdt_ids)
        self.policy: AuthorPolicy = policy or AllowAll()
        self.ephemeral = EphemeralSessions(
            doc_id,
            self.signer,
            max_payload=self.config.presence_max_bytes,
            per_second=self.config.ephemeral_per_second,
        )
        self.ephemeral.extra = self._signed_extra
        self._log = log.bind(
            doc=crypto.document_token(doc_id)[:8], me=_short(self.signer.public_key)
        )

        self.loaded = False
        cfg = self.config
        self._active: ActiveSnapshot | None = None
        # Snapshots replaced by a newer one, and validly signed ones that did not open.
        self._history = SnapshotHistory(cfg.superseded_snapshots_kept)
        # Snapshots whose parent has not arrived yet (out-of-order delivery).
        self._held = HeldSnapshots(cfg.superseded_snapshots_kept, cfg.max_held_snapshot_bytes)
        # Updates waiting for a predecessor or for their snapshot.
        self._queues = UpdateQueues(cfg)
        self._budget = self._queues.budget
        # Snapshots of one author checked per minute (held and coalesced beyond, see
        # secsync.protocol.snapshot_rate); a loaded session only, never our own.
        self.snapshot_rate = SnapshotRate(
            per_minute=cfg.snapshots_per_author_per_minute,
            burst=cfg.snapshot_burst_per_author,
            max_authors=cfg.max_waiting_authors,
            max_held=cfg.superseded_snapshots_kept,
        )
        # Our own writing: pending changes, messages in flight, refused and confirmed.
        self._out = Outbox()
        self._snapshot_requested = False
        self._first_snapshot_wanted = False
        # Identity collisions (secsync.protocol.collisions): digests per (author, clock) on the
        # active snapshot, and why we stopped writing (our key is in use on another client).
        self._digests = ClockDigests(cfg.max_clock_digests)
        self._identity_in_use: IdentityInUseError | None = None
        # A snapshot lacked other authors' content: a complete one is written on top of it,
        # unless someone else's complete snapshot comes first.
        self._repair_wanted = False
        self._late_events: list[Event] = []
        self._content_check: ContentCheck | None = (
            self.crdt if isinstance(self.crdt, ContentCheck) else None
        )
        set_pending_budget = getattr(self.crdt, "set_pending_budget", None)
        if set_pending_budget is not None:
            set_pending_budget(self.config.max_pending_bytes)

        self.change_log: Callable[[list[bytes]], None] | None = None
        """Called with local changes the moment they are taken from the CRDT, before the session
        uses them (the transport's durable log). If it raises, the changes are still kept in
        memory and the error propagates to whoever took them."""

        self._verify_executor = verify_executor
        self._closed = False
        # What verification threads computed for the message being processed (receive_many).
        self._ahead: Prepared | None = None

    # --- what the application can read ------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        return self.signer.public_key

    def user_of(self, author: bytes) -> bytes:
        """The user a signing key belongs to: the user of a certified device seen in this
        document (or our own device's), else the key itself. The one place a signer is
        resolved to a person (attribution, events, CRDT identities). A ``user_of`` given to the
        session decides instead."""
        if self._user_of is not None:
            return self._user_of(author)
        return self.devices.user_of(author)

    @property
    def active_snapshot(self) -> SnapshotInfo | None:
        return self._active.info if self._active else None

    @property
    def update_clocks(self) -> dict[bytes, int]:
        """Last applied clock per author on the active snapshot."""
        return dict(self._active.clocks) if self._active else {}

    @property
    def pending_changes(self) -> int:
        """Local changes not yet handed out for sending (or to be sent again: refused),
        counting those the CRDT holds that were not taken yet. Reading it changes nothing."""
        out = self._out
        return (
            len(out.pending)
            + sum(len(f.changes) for f in out.refused.values())
            + self.untaken_changes
        )

    @property
    def untaken_changes(self) -> int:
        """Local changes in the CRDT that were not taken from it yet (without taking them)."""
        count = getattr(self.crdt, "untaken_changes", None)
        return int(count()) if count is not None else 0

    @property
    def unacknowledged(self) -> int:
        """Messages handed out for sending that the broker has not confirmed yet."""
        return self._out.unacknowledged

    @property
    def refused(self) -> bool:
        """True while updates of ours wait because the broker refused them: the active snapshot
        is not the document's latest, and nothing is sent until a newer one is applied (or
        :meth:`resend_refused`)."""
        return bool(self._out.refused)

    @property
    def identity_in_use(self) -> IdentityInUseError | None:
        """Why this session stopped writing, if it did: another client writes under its
        identity (see :class:`~secsync.protocol.events.IdentityInUse`). Local changes still
        count in :attr:`pending_changes` and stay in :meth:`unsent_changes`."""
        return self._identity_in_use

    def unsent_changes(self) -> list[bytes]:
        """Every local change the broker is not known to store, in order: pending ones, and
        those of messages refused or not acknowledged yet (to send under another identity)."""
        self._collect_local()
        return self._out.kept()

    @property
    def is_synced(self) -> bool:
        """True when every local change is stored by the broker. Reading it changes nothing."""
        return not self.untaken_changes and self._out.settled

    @property
    def _local_clock(self) -> int:
        """The clock of our last update on the active snapshot (read by tests)."""
        return self._out.local_clock

    # --- persistence ----------------------------------------------------------------------------

    def unacknowledged_messages(self) -> list[Message]:
        """Messages handed out for sending that the broker has not confirmed, in order.

        After a restart they must be sent again byte for byte (same message ids), so that a
        copy that had been stored before the crash is recognised instead of stored twice.
        """
        return self._out.unacknowledged_messages()

    def collect_local_changes(self) -> list[bytes]:
        """Move the CRDT's new local changes into the outbox (through :attr:`change_log`
        first); return them."""
        return self._collect_local()

    def add_local_changes(self, changes: Sequence[bytes]) -> None:
        """Queue changes that are already in the document (restored from local storage)."""
        self._out.pending.extend(changes)

    def export_state(self) -> SessionState:
        """What must survive a restart (no keys, no document content): a frozen
        :class:`~secsync.protocol.state.SessionState`, whose ``encode()`` is plain data."""
        self._collect_local()
        active, out = self._active, self._out
        in_flight, snapshot = out.sent_state()
        return SessionState(
            loaded=self.loaded,
            active=None if active is None else active.to_state(),
            superseded=tuple((k, dict(v)) for k, v in self._history.superseded.items()),
            local_clock=out.local_clock,
            pending=tuple(out.pending),
            in_flight=in_flight,
            confirmed=tuple((c, tuple(ch)) for c, ch in out.confirmed.items()),
            snapshot_in_flight=snapshot,
            me=self.public_key,
            digests=tuple((a, c, tuple(d)) for a, c, d in self._digests.export()),
            identity_in_use=None
            if self._identity_in_use is None
            else self._identity_in_use.message,
        )

    def restore_state(self, state: SessionState | Mapping[str, Any]) -> None:
        """Resume from :meth:`export_state` (the CRDT must already hold the saved content).

        ``state`` may also be its plain encoding (``SessionState.encode()``, or the ``dict``
        earlier releases saved); a damaged or foreign one raises
        :class:`~secsync.errors.SessionStateError` (a ``SessionError``).
        """
        saved = SessionState.decode(state)
        try:
            active = saved.active
            if active is not None:
                info = active.info
                self._active = ActiveSnapshot.restored(active, self.keys.snapshot_key(info))
                activated = getattr(self.keys, "snapshot_activated", None)
                if activated is not None:
                    # the key provider re-verified the stored snapshot above: its roster rules
                    activated(info)
            self._history.superseded = OrderedDict((k, dict(v)) for k, v in saved.superseded)
            flight = saved.snapshot_in_flight
            key = None if flight is None else self.keys.snapshot_key(flight.message.info())
            self._out.restore(saved, key)
            self._digests = ClockDigests.restore(saved.digests, self.config.max_clock_digests)
            self._restore_identity(saved.me, saved.identity_in_use)
        except (KeyError, TypeError, ValueError, SecsyncError) as exc:
            raise SessionStateError(f"saved session state is unusable: {exc}") from None
        # a session saved before it ever loaded from the broker still has to (and to check
        # that its key opens what is stored)
        self.loaded = saved.loaded

    def _restore_identity(self, saved_by: bytes | None, in_use: str | None) -> None:
        """State saved under another identity (a device opened in place of one whose key was
        in use elsewhere): what it sent and did not see stored is queued to be sealed again
        under ours; what the broker confirmed is stored under the other key and stays."""
        if saved_by is None or saved_by == self.public_key:
            if in_use is not None:
                self._identity_in_use = IdentityInUseError(in_use)
            return
        out = self._out
        carried = out.kept()
        out.start_over()
        out.pending = carried
        active = self._active
        out.local_clock = active.clocks.get(self.public_key, -1) if active else -1
        self._log.info("identity_changed", kept=len(carried))

    # --- local changes and sending ----------------------------------------------------------

    def _collect_local(self) -> list[bytes]:
        """The one door for local changes: whatever is taken from the CRDT goes to the change
        log before the session (or anything else) uses it."""
        changes = self.crdt.take_local_changes()
        if changes:
            try:
                if self.change_log is not None:
                    self.change_log(changes)
            finally:
                self._out.pending.extend(changes)  # a failed log must not lose them from memory
        return changes

    def data_to_send(self) -> list[Message]:
        """Messages to publish, in order: handshake replies, then snapshots or updates.

        Local changes are batched: everything pending becomes one update (split only above
        ``max_update_plaintext_bytes``), or one snapshot when the snapshot policy says so.
        """
        self._collect_local()
        box = self._out
        out, box.replies = box.replies, []
        if self._identity_in_use is not None:
            return out  # our key is in use elsewhere: nothing more is written under it
        if not self.loaded or box.snapshot is not None or box.refused:
            return out  # refused: whatever we wrote now would be refused too
        if self._active is None:
            if box.pending or self._snapshot_requested or self._first_snapshot_wanted:
                out.append(writing.seal_snapshot(self))
            return out
        wanted = self._snapshot_requested or self._repair_wanted
        if (box.pending or wanted) and writing.should_snapshot(self):
            out.append(writing.seal_snapshot(self))
        elif box.pending:
            out.extend(writing.seal_updates(self))
        return out

    @property
    def snapshot_requested(self) -> bool:
        return self._snapshot_requested

    @property
    def repair_wanted(self) -> bool:
        """True while a snapshot lacked other authors' content and no complete snapshot has
        been applied or stored since: the next snapshot written here repairs it."""
        return self._repair_wanted

    @property
    def held_snapshot_bytes(self) -> int:
        """Bytes of snapshots held because their parent has not arrived (see
        ``SecsyncConfig.max_held_snapshot_bytes``)."""
        return self._held.held_bytes

    def request_snapshot(self) -> None:
        """Write a snapshot at the next opportunity, and again after losing a race, until one
        of ours is stored (membership changes and key rotations use this)."""
        self._snapshot_requested = True

    def want_first_snapshot(self) -> None:
        """If the document has no snapshot, write a first one (empty if there are no changes
        yet) at the next opportunity: presence needs a snapshot's key. Anyone else's first
        snapshot does just as well."""
        self._first_snapshot_wanted = True

    def create_snapshot(self) -> Snapshot:
        """Write a snapshot now (for example after a key rotation) whatever the policy says."""
        if not self.loaded:
            raise NoActiveSnapshotError("load the document before writing a snapshot")
        if self._identity_in_use is not None:
            raise self._identity_in_use
        if self._out.snapshot is not None:
            raise CreateSnapshotError("a snapshot is already in flight")
        self._collect_local()
        return writing.seal_snapshot(self)

    def send_ephemeral(self, payload: bytes) -> EphemeralMessage:
        """Seal a presence payload under the active snapshot's key."""
        return self.ephemeral.create(self._ephemeral_key(), payload)

    def ephemeral_initialize(self) -> EphemeralMessage:
        """The ``initialize`` message that asks peers to prove their sessions."""
        return self.ephemeral.create(self._ephemeral_key(), b"", EphemeralType.INITIALIZE)

    def _ephemeral_key(self) -> bytes:
        if self._active is None:
            raise NoActiveSnapshotError("ephemeral messages need an active snapshot's key")
        return self._active.key

    # --- broker acknowledgements ------------------------------------------------------------

    def snapshot_stored(self, snapshot_id: bytes, *, now: float) -> list[Event]:
        """The broker stored our snapshot: it becomes the active one."""
        flight = self._out.take_snapshot(snapshot_id)
        if flight is None:
            return []
        self._snapshot_requested = False
        self._repair_wanted = False  # ours holds all we have
        receive_snapshots.activate(self, flight.message, flight.key, carried=[])
        self._log.info("snapshot_stored", snapshot=_short(snapshot_id))
        events: list[Event] = [SnapshotStored(snapshot_id)]
        self._drain_deferred(snapshot_id, now, events)
        return events

    def snapshot_rejected(self, snapshot_id: bytes) -> list[Event]:
        """The broker refused our snapshot (someone wrote first): its changes wait again.

        The caller then fetches what it missed and feeds it to :meth:`receive`.
        """
        flight = self._out.take_snapshot(snapshot_id)
        if flight is None:
            return []
        self._out.pending[:0] = flight.changes
        self._log.info("snapshot_conflict", snapshot=_short(snapshot_id))
        return []

    def update_stored(self, snapshot_id: bytes, clock: int) -> list[Event]:
        """The broker stored our update."""
        active = self._active
        if active is None or active.info.snapshot_id != snapshot_id:
            return []
        # a refused one too: an earlier attempt may have been stored (a single server checks
        # the expectation before the duplicate window)
        flight = self._out.take_update(clock)
        if flight is None:
            return []
        self._out.confirmed[clock] = flight.changes
        if clock > active.clocks.get(self.public_key, -1):
            active.clocks[self.public_key] = clock
        active.updates += 1
        events: list[Event] = [UpdateStored(snapshot_id, clock)]
        if self.public_key in self._queues.waiting:
            # updates of our key written elsewhere wait: at this clock (overtaken by ours,
            # applied now as collisions) or after it
            for held in self._queues.take_up_to(self.public_key, clock):
                try:
                    receive_updates.collide(
                        self, held, active, events, None, late=True, certain=True
                    )
                except SecsyncError as exc:
                    events.append(self._rejected(exc, MessageKind.UPDATE, held.author))
            receive_updates.drain(self, self.public_key, active, events)
        return events

    def update_rejected(self, snapshot_id: bytes, clock: int) -> list[Event]:
        """The broker refused our update for good: its snapshot is no longer the latest.

        Call it only for a real compare-and-set mismatch, never for a transient refusal (a
        publish that may still land). Nothing rolls back: no clock is ever sealed twice, so a
        message id never stands for two contents. The update waits as it was sealed (it counts
        in ``pending_changes``, no longer in ``unacknowledged``) and no further update or
        snapshot is written on this snapshot (:attr:`refused`); once the newer snapshot is
        applied, every change it may lack (this update's included) is sealed again on it
        (rebase). If the refusal turns out not to have been a newer snapshot,
        :meth:`resend_refused` returns the refused updates to publish again as they are.
        """
        active = self._active
        out = self._out
        if active is None or active.info.snapshot_id != snapshot_id or clock not in out.in_flight:
            return []
        out.refused[clock] = out.in_flight.pop(clock)
        self._log.info("update_conflict", snapshot=_short(snapshot_id), clock=clock)
        return []

    def resend_refused(self, snapshot_id: bytes) -> list[Update]:
        """The active snapshot is the document's latest after all (what made the broker refuse
        our updates was nothing anyone can build on): the refused updates, in clock order, to
        publish again byte for byte (same clocks, same message ids)."""
        active = self._active
        if active is None or active.info.snapshot_id != snapshot_id or not self._out.refused:
            return []
        return self._out.resend_refused()

    def update_preempted(self, snapshot_id: bytes, clock: int) -> list[Event]:
        """The broker holds other bytes under our update's message id (its clock was taken).

        The update is not stored and never will be: its changes are sealed again under a
        fresh clock (clocks never go back), and a snapshot is requested, so that readers who
        lack that clock's content do not wait for it (a snapshot includes everything).
        """
        active = self._active
        if active is None or active.info.snapshot_id != snapshot_id:
            return []
        flight = self._out.take_update(clock)
        if flight is None:
            return []
        self._out.pending[:0] = flight.changes
        self._snapshot_requested = True
        self._log.warning("update_preempted", snapshot=_short(snapshot_id), clock=clock)
        return []

    # --- receiving --------------------------------------------------------------------------

    def load(
        self,
        snapshot: Snapshot | None,
        updates: Iterable[Update] = (),
        *,
        proof_chain: Sequence[ProofChainEntry] = (),
        now: float,
    ) -> list[Event]:
        """Initial load (or reload): the latest snapshot (``None`` for an empty document)
        and the updates stored after it."""
        events: list[Event] = []
        if snapshot is not None:
            events += self.receive(snapshot, proof_chain=proof_chain, now=now)
        self.loaded = True
        events += self.receive_many(updates, now=now)
        return events

    def choose(self, candidates: Sequence[Snapshot]) -> SnapshotChoice:
        """Pick the snapshot to load from a document's stored snapshots, oldest first.

        The newest message on the snapshot subject is only a hint: anyone who may publish
        there can store junk, a snapshot sealed under another key (a client that opened the
        document with the wrong key, say), or, in a closed group, an old epoch replayed or a
        roster nobody entitled wrote. The choice is the newest candidate that passes the
        policy, signature, document, key-provider and decryption checks, and whose membership
        chain (when the key provider has one, see ``secsync.group``) extends that of every
        older accepted candidate: a stale or forked chain is passed over. Everything passed
        over is reported.
        """
        return receive_snapshots.choose(self, candidates)

    def receive(
        self,
        message: Message | bytes,
        *,
        proof_chain: Sequence[ProofChainEntry] = (),
        now: float,
    ) -> list[Event]:
        """Process one received message (decoded, or native wire bytes)."""
        return self.receive_many([message], proof_chain=proof_chain, now=now)

    def receive_many(
        self,
        messages: Iterable[Message | bytes],
        *,
        proof_chain: Sequence[ProofChainEntry] = (),
        now: float,
    ) -> list[Event]:
        """Process received messages in order (decoded, or native wire bytes).

        The messages are taken in parts of up to ``BATCH_CHUNK`` (a part ends after a
        snapshot, whose key opens the updates after it): each part is decoded and its
        signatures checked first (on ``config.verify_threads`` worker threads too, libsodium
        runs without the GIL), then processed in order here, with the outcome of processing
        each message alone (events, errors, state).
        """
        events: list[Event] = []
        self._collect_local()
        iterator = iter(messages)
        while part := next_part(iterator):
            if len(part) == 1:
                self._receive_item(part[0], proof_chain, now, events)
            else:
                batches.receive_ahead(self, part, proof_chain, now, events)
        events += self.handle_timer(now)
        return events

    def _receive_item(
        self,
        item: Message | bytes,
        proof_chain: Sequence[ProofChainEntry],
        now: float,
        events: list[Event],
    ) -> None:
        if isinstance(item, bytes | bytearray | memoryview):
            try:
                message = wire.decode(
                    item, doc_id=self.doc_id, max_bytes=self.config.max_message_bytes
                )
            except SecsyncError as exc:
                events.append(self._rejected(exc, None, None))
                return
        else:
            message = item
        self._dispatch(message, proof_chain, now, events)

    def _dispatch(
        self,
        message: Message,
        proof_chain: Sequence[ProofChainEntry],
        now: float,
        events: list[Event],
    ) -> None:
        if isinstance(message, Update):
            self._receive_update(message, now, events)
        elif isinstance(message, Snapshot):
            if not receive_snapshots.snapshot_admitted(self, message, now, events):
                return
            receive_snapshots.receive_snapshot(
                self, message, proof_chain, events, recovery=None, now=now
            )
        else:
            self._receive_ephemeral(message, events, now)

    def close(self) -> None:
        """Stop observing the CRDT document (the session holds no other resource); twice is
        fine."""
        if not self._closed:
            self._closed = True
            self.crdt.close()

    def recover(
        self,
        snapshot: Snapshot,
        updates: Iterable[Update] = (),
        *,
        reason: str = "requested",
        now: float,
    ) -> list[Event]:
        """Adopt ``snapshot`` without proof that it descends from the known one.

        For gaps the broker cannot fill and snapshot chains that cannot be verified. The
        snapshot must still pass the policy, signature, document and decryption checks. Its
        content is merged into the document; every local change not known to be in it is
        queued again, so nothing local is lost.
        """
        self._collect_local()
        events: list[Event] = []
        receive_snapshots.receive_snapshot(self, snapshot, (), events, recovery=reason, now=now)
        self.loaded = True
        events += self.receive_many(updates, now=now)
        receive_updates.skip_gaps(self, events)
        return events

    def rewind(
        self,
        snapshot: Snapshot | None,
        updates: Iterable[Update] = (),
        *,
        reason: str = "history lost",
        now: float,
    ) -> list[Event]:
        """Start over from what the broker holds now, keeping everything local.

        For a stream that no longer holds what this session applied (restored from an older
        backup, say): unlike :meth:`recover`, nothing the broker confirmed earlier is taken as
        stored. Every change of ours it confirmed, has in flight or refused is queued again
        on ``snapshot`` (the CRDT ignores a second copy of what the stream still holds); with
        no snapshot at all, a first one with the whole document is written.
        """
        self._collect_local()
        out = self._out
        carried = out.carry_over_all()
        self._active = None
        self._digests = ClockDigests(self.config.max_clock_digests)
        self._history.superseded.clear()
        out.start_over()
        out.pending[:0] = carried
        self.loaded = True
        if snapshot is None:
            self._snapshot_requested = True  # the whole document, in a first snapshot
            return []
        return self.recover(snapshot, updates, reason=reason, now=now)

    def _rejected(
        self, error: SecsyncError, kind: MessageKind | None, author: bytes | None
    ) -> MessageRejected:
        # A presence message from a session not proven yet starts the handshake: normal when
        # peers meet, so not worth a warning (the event still says it was not applied).
        report = (
            self._log.debug if isinstance(error, EphemeralNoSessionError) else self._log.warning
        )
        report(
            "message_rejected",
            code=error.code,
            error=type(error).__name__,
            reason=error.message,
            kind=kind.name.lower() if kind else None,
            author=_short(author) if author else None,
        )
        return MessageRejected(error, kind, author)

    def _check_policy(
        self, message: Message, refused: type[SecsyncError], failed: type[SecsyncError]
    ) -> None:
        try:
            allowed = self.policy.may_author(message.kind, message.author, message.public_data)
        except Exception as exc:
            raise failed(f"authorization policy failed: {type(exc).__name__}") from None
        if not allowed:
            raise refused()

    # --- snapshots --------------------------------------------------------------------------

    def _drain_deferred(self, snapshot_id: bytes, now: float, events: list[Event]) -> None:
        for update in self._queues.take_deferred(snapshot_id):
            self._receive_update(update, now, events)

    # --- updates ----------------------------------------------------------------------------

    def _receive_update(self, update: Update, now: float, events: list[Event]) -> None:
        try:
            receive_updates.process_update(self, update, now, events)
        except SecsyncError as exc:
            events.append(self._rejected(exc, MessageKind.UPDATE, update.author))

    def _record(
        self, active: ActiveSnapshot, author: bytes, clock: int, changes: list[bytes], late: bool
    ) -> None:
        active.record(author, clock, changes, late, self.config.snapshot_check_bytes)

    def _verify(self, message: Update | Snapshot) -> bytes:
        """The signature check of ``message``; returns its AAD (ASCII bytes).

        When a verification thread has already checked this very message, its result is used.
        """
        ahead = self._ahead
        if ahead is not None and ahead.message is message and ahead.aad is not None:
            if not ahead.valid:
                raise sealing.signature_error(message)
            return ahead.aad
        return sealing.verify(message)

    def handle_timer(self, now: float) -> list[Event]:
        """Report gaps that stayed open too long; call it by :meth:`next_deadline`."""
        events: list[Event] = []
        for held in self.snapshot_rate.due(now):
            if held.skipped:
                # One it replaced may have been its parent, and newer snapshots (a repair, say)
                # may have been taken meanwhile: what the broker holds decides, not this one.
                events.append(
                    RecoveryNeeded("snapshots of one author were dropped by the snapshot rate")
                )
            else:
                receive_snapshots.receive_snapshot(
                    self, held.snapshot, (), events, recovery=None, now=now
                )
        active = self._active
        events += self._queues.due(
            now,
            active.info.snapshot_id if active is not None else None,
            active.clocks if active is not None else {},
            self._log,
        )
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has something to report, in ``time.monotonic`` terms."""
        deadlines = []
        held = self.snapshot_rate.next_deadline()
        if held is not None:
            deadlines.append(held)
        deadlines += self._queues.deadlines()
        return min(deadlines, default=None)

    # --- ephemeral --------------------------------------------------------------------------

    def _receive_ephemeral(
        self, message: EphemeralMessage, events: list[Event], now: float
    ) -> None:
        try:
            try:
                allowed = self.policy.may_author(message.kind, message.author, message.public_data)
            except Exception as exc:
                raise EphemeralAuthorRejectedError(
                    f"authorization policy failed: {type(exc).__name__}"
                ) from None
            if not allowed:
                raise EphemeralAuthorRejectedError()
            if message.public_data.extra:
                self.devices.admit(message.author, message.public_data.extra)
            result = self.ephemeral.receive(message, self._ephemeral_key(), now)
        except EphemeralRateError:
            return  # a flood: dropped unchecked and counted, not reported message by message
        except (EphemeralError, NoActiveSnapshotError, DeviceCertificateError) as exc:
            events.append(self._rejected(exc, MessageKind.EPHEMERAL, message.author))
            return
        self._out.replies.extend(result.replies)
        if result.error is not None:
            events.append(self._rejected(result.error, MessageKind.EPHEMERAL, message.author))
        if result.payload is not None:
            user = self.devices.device_user(message.author)
            events.append(EphemeralReceived(message.author, result.payload, user=user))
