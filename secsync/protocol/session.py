"""The sans-IO document session: the whole protocol state of one document for one client.

Like h11's ``Connection``, it performs no I/O. The caller feeds it received messages
(:meth:`DocumentSession.receive`) and broker acknowledgements, collects local changes from the
CRDT adapter, and sends what :meth:`DocumentSession.data_to_send` returns. Every call returns
the :mod:`events <secsync.protocol.events>` it caused. A rejected message never changes state,
except that a validly signed update whose content is refused spends its author's clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from secsync.config import SecsyncConfig
from secsync.crdt import ContentCheck, CrdtAdapter, CrdtDocument, adapter_for, crdt_failure
from secsync.errors import (
    CreateSnapshotError,
    CreateUpdateError,
    DeviceCertificateError,
    EphemeralAuthorRejectedError,
    EphemeralError,
    EphemeralNoSessionError,
    EphemeralRateError,
    IdentityInUseError,
    MembershipError,
    NoActiveSnapshotError,
    SecsyncError,
    SessionStateError,
    SnapshotApplyError,
    SnapshotAuthorRejectedError,
    SnapshotDecryptionError,
    SnapshotDocumentIdError,
    SnapshotKeyError,
    SnapshotMissesUpdatesError,
    SnapshotParentError,
    SnapshotPolicyError,
    SnapshotRateError,
    SnapshotReplayError,
    UpdateApplyError,
    UpdateAuthorRejectedError,
    UpdateClockGapError,
    UpdateDeserializeError,
    UpdateDocumentIdError,
    UpdateIdentityError,
    UpdatePolicyError,
    UpdateReplayError,
    UpdateSnapshotMismatchError,
)
from secsync.logs import get_logger
from secsync.protocol import crdt_identity, crypto, sealing, wire
from secsync.protocol.changes import deserialize_changes, serialize_changes
from secsync.protocol.collisions import ClockDigests, content_version, message_digest
from secsync.protocol.devices import Device, DeviceDirectory
from secsync.protocol.encoding import b64encode
from secsync.protocol.ephemeral import EphemeralSessions, EphemeralType
from secsync.protocol.events import (
    EphemeralReceived,
    Event,
    IdentityCollision,
    IdentityInUse,
    MessageRejected,
    RecoveryNeeded,
    SnapshotApplied,
    SnapshotStored,
    UpdateApplied,
    UpdateStored,
)
from secsync.protocol.keys import KeyProvider, key_provider, signing_key_pair
from secsync.protocol.messages import (
    INITIAL_PARENT_PROOF,
    EphemeralMessage,
    Message,
    MessageKind,
    ProofChainEntry,
    Snapshot,
    SnapshotInfo,
    SnapshotPublicData,
    Update,
    UpdatePublicData,
)
from secsync.protocol.ordering import UpdateQueues
from secsync.protocol.outbox import Outbox, UpdateInFlight
from secsync.protocol.policy import AllowAll, AuthorPolicy
from secsync.protocol.prefetch import (
    Prepared,
    TaskPool,
    check_messages,
    decode_messages,
    prepare_all,
)
from secsync.protocol.snapshot_rate import SnapshotRate
from secsync.protocol.snapshots import (
    ActiveSnapshot,
    HeldSnapshots,
    SnapshotChoice,
    SnapshotHistory,
    check_chain,
    check_content,
)
from secsync.protocol.state import ActiveState, SessionState

__all__ = ["BATCH_CHUNK", "DocumentSession", "SnapshotChoice"]

log = get_logger("secsync.session")

# receive_many takes a batch in parts of this many messages: each part is decoded and checked
# (on verify_threads threads too) before it is processed, so that at most this many are held.
BATCH_CHUNK: Final = 512
_SNAPSHOT_HEAD: Final = b"\x9c\x01\x01"  # a native snapshot: [1, 1, ... 12 items]
# Content refused after its signature and decryption passed: the author did sign it for this
# clock, so the clock is spent (no copy of it can apply later) and the author's next update
# applies at once instead of waiting for a gap that would never fill.
_CONTENT_REFUSED: Final = (UpdateApplyError, UpdateDeserializeError, UpdateIdentityError)


def _next_part(iterator: Iterator[Message | bytes]) -> list[Message | bytes]:
    """The next part of a batch for :meth:`DocumentSession._receive_ahead`: up to
    ``BATCH_CHUNK`` messages, ending after a snapshot (updates after it are opened ahead
    only once it is active and its key known)."""
    part: list[Message | bytes] = []
    for item in iterator:
        part.append(item)
        if len(part) >= BATCH_CHUNK or isinstance(item, Snapshot):
            break
        if type(item) is bytes and item[:3] == _SNAPSHOT_HEAD:
            break
    return part


Received = Message | bytes


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
            active=None
            if active is None
            else ActiveState(
                info=active.info,
                clocks=dict(active.clocks),
                updates=active.updates,
                update_bytes=active.update_bytes,
                skipped={a: tuple(rs) for a, rs in active.skipped.items()},
            ),
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
                self._active = ActiveSnapshot(
                    info=info,
                    author=info.author,
                    key=self.keys.snapshot_key(info),
                    clocks=dict(active.clocks),
                    updates=active.updates,
                    update_bytes=active.update_bytes,
                    skipped={a: list(rs) for a, rs in active.skipped.items()},
                )
                # the updates applied before the save are not known: no lost-content check
                # of other authors' content on the next snapshot (our own is still checked)
                self._active.recorded = not active.updates
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
                out.append(self._create_snapshot())
            return out
        wanted = self._snapshot_requested or self._repair_wanted
        if (box.pending or wanted) and self._should_snapshot():
            out.append(self._create_snapshot())
        elif box.pending:
            out.extend(self._create_updates())
        return out

    def _should_snapshot(self) -> bool:
        active = self._active
        assert active is not None
        if self._out.in_flight or self._queues.any_waiting():
            return False  # a snapshot must not leave out what is in flight or still queued
        cfg = self.config
        return (
            self._snapshot_requested
            or self._repair_wanted
            or bool(
                (cfg.snapshot_after_updates and active.updates >= cfg.snapshot_after_updates)
                or (cfg.snapshot_after_bytes and active.update_bytes >= cfg.snapshot_after_bytes)
            )
        )

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
        return self._create_snapshot()

    def _create_snapshot(self) -> Snapshot:
        active = self._active
        snapshot_id = crypto.generate_id()
        try:
            key, extra = self.keys.new_snapshot_key(snapshot_id)
            if self._signed_extra:
                extra = {**extra, **self._signed_extra}
            state = self.crdt.encode_state()
        except Exception as exc:
            raise CreateSnapshotError(f"could not prepare the snapshot: {exc}") from exc
        public = SnapshotPublicData(
            doc_id=self.doc_id,
            pub_key=self.public_key,
            snapshot_id=snapshot_id,
            parent_snapshot_id=active.info.snapshot_id if active else b"",
            parent_snapshot_proof=active.info.child_proof() if active else INITIAL_PARENT_PROOF,
            parent_snapshot_update_clocks=active.included_clocks() if active else {},
            extra=extra,
        )
        snapshot = sealing.seal(public, state, key, self.signer)
        self._out.snapshot_sealed(snapshot, key)
        self._log.info(
            "snapshot_created",
            snapshot=_short(snapshot_id),
            parent=_short(public.parent_snapshot_id) if active else "",
            bytes=len(snapshot.ciphertext),
        )
        return snapshot

    def _create_updates(self) -> list[Update]:
        active = self._active
        assert active is not None
        box = self._out
        updates = []
        for batch in box.batches(self.config.max_update_plaintext_bytes):
            box.local_clock = clock = box.local_clock + 1
            public = UpdatePublicData(
                doc_id=self.doc_id,
                pub_key=self.public_key,
                ref_snapshot_id=active.info.snapshot_id,
                clock=clock,
                extra=self._signed_extra,
            )
            try:
                plaintext = serialize_changes(batch, self.config.change_encoding)
            except Exception as exc:
                raise CreateUpdateError(f"could not serialize changes: {exc}") from exc
            update = sealing.seal(public, plaintext, active.cipher, self.signer)
            self._digests.add(self.public_key, clock, message_digest(update))
            updates.append(update)
            box.in_flight[clock] = UpdateInFlight(update, batch)
        return updates

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
        self._activate(flight.message, flight.key, carried=[])
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
                    self._collide(held, active, events, None, late=True, certain=True)
                except SecsyncError as exc:
                    events.append(self._rejected(exc, MessageKind.UPDATE, held.author))
            self._drain(self.public_key, active, events)
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
        rejected: list[tuple[int, MessageRejected]] = []
        unreadable = False
        chain_of = getattr(self.keys, "membership_chain", None)
        accepted: tuple[bytes, ...] | None = None
        best: int | None = None
        # Without membership chains the newest candidate that opens is the choice: look from
        # the end and stop there. With them, every candidate counts (a stale chain can only be
        # told by the chains stored before it), in stream order.
        order = range(len(candidates)) if chain_of is not None else range(len(candidates))[::-1]
        for index in order:
            if chain_of is None and best is not None:
                break
            snapshot = candidates[index]
            try:
                aad = self._check_signed(snapshot)
            except SecsyncError as exc:  # junk: nobody's history
                rejected.append((index, self._rejected(exc, MessageKind.SNAPSHOT, snapshot.author)))
                continue
            try:
                self._check_opens(snapshot, aad)
                chain = chain_of(snapshot.info()) if chain_of is not None else None
                if chain is not None and accepted is not None:
                    if chain == accepted[: len(chain)] and len(chain) < len(accepted):
                        raise SnapshotReplayError("a snapshot of an older membership chain")
                    if chain[: len(accepted)] != accepted:
                        raise MembershipError("a membership chain that forks from an earlier one")
            except SecsyncError as exc:
                # validly signed for this document, but not for us to load: history exists
                unreadable = True
                if isinstance(exc, SnapshotDecryptionError):
                    self._history.note_unreadable(snapshot.snapshot_id)
                rejected.append((index, self._rejected(exc, MessageKind.SNAPSHOT, snapshot.author)))
                continue
            if chain is not None:
                accepted = chain
            best = index
        # Newer candidates were passed over; older ones are history the choice replaced.
        rejected.sort(key=lambda item: -item[0])  # newest first
        passed = [r for i, r in rejected if best is None or i > best]
        return SnapshotChoice(best, tuple(passed), unreadable)

    def _check_signed(self, snapshot: Snapshot) -> bytes:
        """Policy, signature and document checks of a stored snapshot; returns its AAD."""
        self._check_policy(snapshot, SnapshotAuthorRejectedError, SnapshotPolicyError)
        aad = sealing.verify(snapshot)
        if snapshot.public_data.extra:
            self.devices.admit(snapshot.author, snapshot.public_data.extra)
        if snapshot.public_data.doc_id != self.doc_id:
            raise SnapshotDocumentIdError()
        return aad

    def _check_opens(self, snapshot: Snapshot, aad: bytes) -> None:
        sealing.open_sealed(snapshot, self._snapshot_key(snapshot.info()), aad)

    def _snapshot_key(self, info: SnapshotInfo) -> bytes:
        try:
            return self.keys.snapshot_key(info)
        except SecsyncError:
            raise  # the key provider's own verdict (e.g. not a member, forged membership)
        except Exception as exc:
            raise SnapshotKeyError(f"no key for the snapshot: {type(exc).__name__}") from None

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
        while part := _next_part(iterator):
            if len(part) == 1:
                self._receive_item(part[0], proof_chain, now, events)
            else:
                self._receive_ahead(part, proof_chain, now, events)
        events += self.handle_timer(now)
        return events

    def _receive_item(
        self,
        item: Received,
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
            if not self._snapshot_admitted(message, now, events):
                return
            self._receive_snapshot(message, proof_chain, events, recovery=None, now=now)
        else:
            self._receive_ephemeral(message, events, now)

    def _snapshot_admitted(self, snapshot: Snapshot, now: float, events: list[Event]) -> bool:
        """The per-author snapshot rate, before any check of ``snapshot``: held ones and those
        dropped in their favour are reported (``SnapshotRateError``, 118)."""
        if not self.loaded or snapshot.author == self.public_key:
            return True
        active, snapshot_id = self._active, snapshot.snapshot_id
        if (
            active is not None and snapshot_id == active.info.snapshot_id
        ) or snapshot_id in self._history.superseded:
            return True  # a copy of one already taken: settled before any costly check
        admitted, dropped = self.snapshot_rate.admit(snapshot, now)
        for old in dropped:
            error = SnapshotRateError(
                "dropped unread: a newer snapshot of its author is held",
                snapshot_id=old.snapshot_id,
            )
            events.append(self._rejected(error, MessageKind.SNAPSHOT, old.author))
        if not admitted:
            error = SnapshotRateError(
                "held: its author exceeds the snapshot rate",
                snapshot_id=snapshot.snapshot_id,
                held=True,
            )
            events.append(self._rejected(error, MessageKind.SNAPSHOT, snapshot.author))
        return admitted

    def _receive_ahead(
        self,
        items: Sequence[Received],
        proof_chain: Sequence[ProofChainEntry],
        now: float,
        events: list[Event],
    ) -> None:
        """:meth:`receive_many`'s loop over a part of a batch, with the pure part of the work
        (decoding, signature checks, opening updates on the active snapshot) done first, on
        ``config.verify_threads`` threads too. Each message is then processed in order as it
        would be alone, taking what was computed ahead instead of computing it (see
        :meth:`_verify`, :meth:`_apply_update`): the same events, errors and state."""
        doc_id, max_bytes = self.doc_id, self.config.max_message_bytes
        active = self._active
        # Updates on the active snapshot are opened ahead with its key; _apply_update uses
        # what was opened only if that is still the key it opens them with.
        snapshot_id = active.info.snapshot_id if active is not None else None
        cipher = (
            active.cipher
            if active is not None and isinstance(active.cipher, crypto.Cipher)
            else None
        )

        threads = self.config.verify_threads
        pool = self._verify_executor if threads > 0 else None
        # Decoding is Python through and through: done here first, it does not contend for
        # the GIL with the workers' checks, which spend most of their time in libsodium.
        decoded = decode_messages(items, doc_id, max_bytes)

        def check(part: Sequence[Prepared]) -> list[Prepared]:
            return check_messages(part, snapshot_id, cipher)

        prepared = prepare_all(decoded, check, pool, threads)
        outer = self._ahead
        try:
            for item, ahead in zip(items, prepared, strict=True):
                if ahead.message is not None:
                    self._ahead = ahead
                    self._dispatch(ahead.message, proof_chain, now, events)
                elif ahead.error is not None:
                    events.append(self._rejected(ahead.error, None, None))
                else:  # nothing computed ahead: exactly as alone
                    self._ahead = None
                    self._receive_item(item, proof_chain, now, events)
        finally:
            self._ahead = outer

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
        self._receive_snapshot(snapshot, (), events, recovery=reason, now=now)
        self.loaded = True
        events += self.receive_many(updates, now=now)
        self._skip_gaps(events)
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

    def _skip_gaps(self, events: list[Event]) -> None:
        """Give up on updates that even the latest state cannot supply, and go on after them.

        The CRDT holds back content whose causal predecessors are missing, so applying what
        follows a lost update cannot corrupt the document; the loss is reported.
        """
        active = self._active
        if active is None:
            return
        queues = self._queues.waiting
        for author in list(queues):
            waiting = queues[author]
            while waiting.updates:
                expected = active.clocks.get(author, -1) + 1
                following = min(waiting.updates)
                error = UpdateClockGapError(
                    f"clocks {expected}..{following - 1} never arrived and were skipped"
                )
                events.append(self._rejected(error, MessageKind.UPDATE, author))
                active.skipped.setdefault(author, []).append((expected, following - 1))
                active.clocks[author] = following - 1
                self._drain(author, active, events)
                if author not in queues:
                    break

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

    def _receive_snapshot(
        self,
        snapshot: Snapshot,
        chain: Sequence[ProofChainEntry],
        events: list[Event],
        *,
        recovery: str | None,
        now: float,
    ) -> None:
        try:
            applied = self._process_snapshot(snapshot, chain, recovery, now, events)
        except SecsyncError as exc:
            events.append(self._rejected(exc, MessageKind.SNAPSHOT, snapshot.author))
            return
        finally:
            late, self._late_events = self._late_events, []
        if applied is None:
            return
        events.append(applied)
        events += late
        self._drain_deferred(snapshot.snapshot_id, now, events)
        child = self._held.take_child(snapshot.snapshot_id)
        if child is not None:
            self._receive_snapshot(child, (), events, recovery=None, now=now)

    def _is_known(self, snapshot_id: bytes) -> bool:
        active = self._active
        return (
            snapshot_id == b""
            or snapshot_id in self._history.superseded
            or (active is not None and snapshot_id == active.info.parent_snapshot_id)
        )

    def _hold_future_snapshot(self, snapshot: Snapshot, events: list[Event]) -> None:
        """Keep a snapshot whose parent has not arrived (see :class:`HeldSnapshots`): the
        oldest held ones let go are reported (117); one larger than the budget is refused."""
        for error, evicted in self._held.hold(snapshot):
            events.append(self._rejected(error, MessageKind.SNAPSHOT, evicted.author))
        self._log.debug(
            "snapshot_held", snapshot=_short(snapshot.snapshot_id), held=self._held.held_bytes
        )

    def _drain_deferred(self, snapshot_id: bytes, now: float, events: list[Event]) -> None:
        for update in self._queues.take_deferred(snapshot_id):
            self._receive_update(update, now, events)

    def _process_snapshot(
        self,
        snapshot: Snapshot,
        chain: Sequence[ProofChainEntry],
        recovery: str | None,
        now: float,
        events: list[Event],
    ) -> SnapshotApplied | None:
        public = snapshot.public_data
        self._check_policy(snapshot, SnapshotAuthorRejectedError, SnapshotPolicyError)
        flight = self._out.snapshot
        if flight is not None and public.snapshot_id == flight.message.snapshot_id:
            if snapshot != flight.message:
                raise SnapshotParentError("another snapshot with our in-flight snapshot's id")
            events += self.snapshot_stored(public.snapshot_id, now=now)  # ours, delivered back
            return None
        if flight is not None and public.parent_snapshot_id == flight.message.snapshot_id:
            # A child of our snapshot proves the broker stored it; its ack is still on the way.
            events += self.snapshot_stored(flight.message.snapshot_id, now=now)
        active = self._active
        if active is not None and public.snapshot_id == active.info.snapshot_id:
            if snapshot.info() == active.info:
                return None  # the active snapshot again: nothing to do
            raise SnapshotParentError("another snapshot with the active snapshot's id")
        if public.snapshot_id in self._history.superseded:
            raise SnapshotReplayError("snapshot was already superseded")
        aad = self._verify(snapshot)
        if public.extra:
            self.devices.admit(public.pub_key, public.extra)
        if public.doc_id != self.doc_id:
            raise SnapshotDocumentIdError()
        info = snapshot.info()
        direct_child = False
        if recovery is None and active is not None:
            if chain:
                check_chain(active.info, chain, info)
            elif public.parent_snapshot_id != active.info.snapshot_id and not self._is_known(
                public.parent_snapshot_id
            ):
                self._hold_future_snapshot(snapshot, events)  # its parent has not arrived yet
                return None
            else:
                direct_child = True
        key = self._snapshot_key(info)
        if direct_child:
            assert active is not None
            if (
                public.parent_snapshot_id != active.info.snapshot_id
                or public.parent_snapshot_proof != active.info.child_proof()
            ):
                raise SnapshotParentError()
            mine = active.clocks.get(self.public_key, -1)
            if public.parent_snapshot_update_clocks.get(self.public_key, -1) < mine:
                raise SnapshotMissesUpdatesError(
                    f"snapshot includes our updates up to "
                    f"{public.parent_snapshot_update_clocks.get(self.public_key, -1)}, "
                    f"the broker confirmed {mine}"
                )
        try:
            plaintext = sealing.open_sealed(snapshot, key, aad)
        except SnapshotDecryptionError:
            self._history.note_unreadable(public.snapshot_id)
            raise
        self._history.unreadable.pop(public.snapshot_id, None)
        carried = self._carry_over(snapshot, direct_child)
        try:
            self.crdt.apply_snapshot(plaintext)
            if not direct_child and active is not None:
                # Not a descendant of what we hold: whatever we have that it lacks (our own
                # snapshot's content and our pending changes included) is sent again on it.
                carried = self.crdt.missing_from(plaintext)
                self._out.pending = []
            elif direct_child and self._content_check is not None:
                assert active is not None
                carried = self._check_content(snapshot, plaintext, active, carried)
        except SnapshotApplyError:
            raise  # the adapter's own verdict, with its reason
        except BaseException as exc:
            if not crdt_failure(exc):
                raise
            raise SnapshotApplyError(
                f"the CRDT refused the snapshot: {type(exc).__name__}"
            ) from None
        self._activate(snapshot, key, carried)
        rebased = len(self._out.pending)
        self._log.info(
            "snapshot_applied",
            snapshot=_short(public.snapshot_id),
            author=_short(public.pub_key),
            recovered=recovery is not None,
            reason=recovery,
            rebased=rebased,
        )
        return SnapshotApplied(
            public.snapshot_id,
            public.pub_key,
            recovered=recovery is not None,
            rebased_changes=rebased,
            user=self.devices.device_user(public.pub_key),
        )

    def _check_content(
        self, snapshot: Snapshot, plaintext: bytes, active: ActiveSnapshot, claimed: list[bytes]
    ) -> list[bytes]:
        """:func:`~secsync.protocol.snapshots.check_content` of a child of the active snapshot;
        returns our changes to send again on it."""
        check = self._content_check
        assert check is not None
        out = self._out
        verdict = check_content(
            check,
            snapshot,
            plaintext,
            active,
            me=self.public_key,
            own=out.own_updates(),
            in_flight_snapshot=out.snapshot.changes if out.snapshot is not None else (),
            pending=out.pending,
            fallback=claimed,
            log=self._log,
        )
        if verdict.incomplete is not None:
            self._late_events.append(verdict.incomplete)
        if verdict.repair is not None:
            self._repair_wanted = verdict.repair
        return verdict.resend

    def _carry_over(self, snapshot: Snapshot, direct_child: bool) -> list[bytes]:
        """Local changes the incoming snapshot may lack, to send again on top of it (by its
        claimed clocks; :meth:`_check_content` checks its content instead when it can)."""
        included = (
            snapshot.public_data.parent_snapshot_update_clocks.get(self.public_key, -1)
            if direct_child
            else -1
        )
        return self._out.carry_over(included)

    def _activate(self, snapshot: Snapshot, key: bytes, carried: list[bytes]) -> None:
        old = self._active
        if old is not None:
            self._history.supersede(
                old.info.snapshot_id, snapshot.public_data.parent_snapshot_update_clocks
            )
        self._active = ActiveSnapshot(info=snapshot.info(), author=snapshot.author, key=key)
        activated = getattr(self.keys, "snapshot_activated", None)
        if activated is not None:
            activated(self._active.info)
        self._queues.clear_waiting()  # they waited on the old snapshot: dropped
        self._digests = ClockDigests(self.config.max_clock_digests)
        self._out.new_base(carried, snapshot)

    # --- updates ----------------------------------------------------------------------------

    def _receive_update(self, update: Update, now: float, events: list[Event]) -> None:
        try:
            self._process_update(update, now, events)
        except SecsyncError as exc:
            events.append(self._rejected(exc, MessageKind.UPDATE, update.author))

    def _process_update(self, update: Update, now: float, events: list[Event]) -> None:
        public = update.public_data
        if type(self.policy) is not AllowAll:  # AllowAll allows everything, without a call
            self._check_policy(update, UpdateAuthorRejectedError, UpdatePolicyError)
        aad = self._verify(update)
        if public.extra:
            self.devices.admit(public.pub_key, public.extra)
        if public.doc_id != self.doc_id:
            raise UpdateDocumentIdError()
        active = self._active
        ref = public.ref_snapshot_id
        if active is None or ref != active.info.snapshot_id:
            if ref in self._history.unreadable:
                raise UpdateSnapshotMismatchError("update builds on a snapshot that did not open")
            included = self._history.superseded.get(ref)
            if included is not None:
                if public.clock <= included.get(public.pub_key, -1):
                    raise UpdateReplayError("update is already part of a newer snapshot")
                raise UpdateSnapshotMismatchError("update builds on a superseded snapshot")
            self._queues.defer(update, now)
            return
        current = active.clocks.get(public.pub_key, -1)
        own = public.pub_key == self.public_key
        if own:
            out = self._out
            flight = out.in_flight.get(public.clock) or out.refused.get(public.clock)
            if flight is not None and flight.message == update:
                events += self.update_stored(ref, public.clock)  # our own, delivered back
                return
        # --- identity collisions (see secsync.protocol.collisions) ---
        known = self._digests.get(public.pub_key, public.clock)
        if known and message_digest(update) in known:
            if own:
                return  # our own, already confirmed by the broker's acknowledgement
            raise UpdateReplayError(f"clock {public.clock} was applied already")
        if public.clock <= current and (known or own):
            # another message holds this clock: both are applied (ours too, whatever our key
            # wrote elsewhere; one older than the record brings nothing new and is dropped)
            self._collide(update, active, events, aad, late=True, certain=bool(known))
            return
        # --- end of identity collisions ---
        if public.clock <= current:
            ranges = active.skipped.get(public.pub_key, ())
            if any(lo <= public.clock <= hi for lo, hi in ranges):
                # a clock recovery gave up on arrives after all: its content is applied (CRDT
                # changes are idempotent, a second copy changes nothing); the clock stays
                self._apply_update(update, active, events, aad, late=True)
                return
            raise UpdateReplayError(f"clock {public.clock} is not above {current}")
        if public.clock > current + 1:
            self._queues.enqueue(update, now)
            return
        try:
            self._accept(update, active, events, aad)
        except _CONTENT_REFUSED as exc:  # its clock is spent: what waits behind it follows
            events.append(self._rejected(exc, MessageKind.UPDATE, public.pub_key))
        self._drain(public.pub_key, active, events)

    def _accept(
        self, update: Update, active: ActiveSnapshot, events: list[Event], aad: bytes | None = None
    ) -> None:
        """Apply the next update of its author: a collision if its clock holds another one."""
        if self._digests.get(update.author, update.clock):
            self._collide(update, active, events, aad, late=False, certain=True)
        else:
            try:
                self._apply_update(update, active, events, aad)
            except _CONTENT_REFUSED:  # its clock is spent: a copy is a replay, a twin collides
                self._digests.add(update.author, update.clock, message_digest(update))
                raise
            self._digests.add(update.author, update.clock, message_digest(update))

    def _collide(
        self,
        update: Update,
        active: ActiveSnapshot,
        events: list[Event],
        aad: bytes | None,
        *,
        late: bool,
        certain: bool,
    ) -> None:
        """Apply an update whose clock another update of its author holds (``certain``), or an
        update of our key below our clock that we have no record of. Either way, an update of
        our key that we did not write and that brings content we lacked proves that another
        client writes under our identity: we stop writing."""
        watch = update.author == self.public_key and self._identity_in_use is None
        before = content_version(self.crdt) if watch else None
        count = len(events)
        self._apply_update(update, active, events, aad, late=late)
        self._digests.add(update.author, update.clock, message_digest(update))
        brought = before is None or content_version(self.crdt) != before
        if not certain and not (watch and brought):
            del events[count:]  # ours, older than the record: nothing new, nothing to report
            return
        snapshot_id, author = active.info.snapshot_id, active.authors[update.author]
        self._log.warning("identity_collision", author=_short(author), clock=update.clock)
        user = self.devices.device_user(author)
        events.append(IdentityCollision(snapshot_id, author, update.clock, user=user))
        if watch and brought:
            self._identity_in_use = IdentityInUseError(
                f"an update signed with our key that this client did not write (clock "
                f"{update.clock}) brought content it lacked: the identity is in use elsewhere"
            )
            kept = len(self._out.kept()) + self.untaken_changes
            self._log.warning("identity_in_use", clock=update.clock, kept=kept)
            events.append(IdentityInUse(self._identity_in_use, snapshot_id, update.clock, kept))

    def _apply_update(
        self,
        update: Update,
        active: ActiveSnapshot,
        events: list[Event],
        aad: bytes | None = None,
        *,
        late: bool = False,
    ) -> None:
        ahead = self._ahead
        if ahead is not None and ahead.message is update and ahead.cipher is active.cipher:
            # opened ahead, with this very key
            if ahead.failure is not None:
                raise sealing.decryption_error(update, ahead.failure)
            changes = ahead.changes
        else:
            changes = None
        public = update.public_data
        if changes is None:
            plaintext = sealing.open_sealed(update, active.cipher, aad)
            try:
                changes = deserialize_changes(plaintext)
            except UpdateDeserializeError:
                if not late:
                    self._spend(active, public.pub_key, public.clock)
                raise
        try:
            if self._authors_of is not None:
                self._check_authors(changes, public.pub_key)
            self.crdt.apply_changes(changes)
        except UpdateApplyError:
            if not late:
                self._spend(active, public.pub_key, public.clock)
            raise  # the adapter's own verdict, with its reason
        except UpdateIdentityError:
            if not late:
                self._spend(active, public.pub_key, public.clock)
            raise
        except BaseException as exc:
            if not crdt_failure(exc):
                raise
            if not late:
                self._spend(active, public.pub_key, public.clock)
            raise UpdateApplyError(f"the CRDT refused the update: {type(exc).__name__}") from None
        # The event shares the active snapshot's id (the update names it) and one key object
        # per author instead of holding the copies decoded from each message.
        author = active.authors.setdefault(public.pub_key, public.pub_key)
        clock = public.clock
        user = self.devices.device_user(author) if public.extra else None
        if self._content_check is not None:
            self._record(active, author, clock, changes, late)
        if late:
            events.append(UpdateApplied(active.info.snapshot_id, author, clock, user=user))
            return
        active.clocks[author] = clock
        active.updates += 1
        active.update_bytes += len(update.ciphertext)
        if author == self.public_key:
            # Our own update, stored in an earlier run of this client: continue after it.
            self._out.local_clock = max(self._out.local_clock, clock)
        events.append(UpdateApplied(active.info.snapshot_id, author, clock, user=user))

    def _check_authors(self, changes: Sequence[bytes], signer: bytes) -> None:
        """Refuse ``changes`` unless every CRDT id they write under may be the signer's."""
        assert self._authors_of is not None
        try:
            ids = self._authors_of(changes)
        except UpdateApplyError:
            raise
        except BaseException as exc:
            if not crdt_failure(exc):
                raise
            raise UpdateApplyError(f"the CRDT refused the update: {type(exc).__name__}") from None
        try:
            user = self.user_of(signer)
        except SecsyncError:
            raise
        except Exception as exc:
            raise UpdateIdentityError(
                f"the signer's user is unknown: {type(exc).__name__}"
            ) from None
        refused = crdt_identity.refused_ids(ids, user, legacy=self.config.legacy_crdt_ids)
        if refused:
            raise UpdateIdentityError(
                f"content under {crdt_identity.describe(refused[0])}, "
                + (
                    "bound to another user than the signer"
                    if crdt_identity.is_bound(refused[0])
                    else "not bound to a user (legacy_crdt_ids is off)"
                )
            )

    def _spend(self, active: ActiveSnapshot, author: bytes, clock: int) -> None:
        """Count a validly signed update whose content was refused as received at its clock."""
        author = active.authors.setdefault(author, author)
        if clock > active.clocks.get(author, -1):
            active.clocks[author] = clock
        if author == self.public_key:
            self._out.local_clock = max(self._out.local_clock, clock)

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

    def _drain(self, author: bytes, active: ActiveSnapshot, events: list[Event]) -> None:
        queues = self._queues
        waiting = queues.waiting.get(author)
        while waiting and waiting.updates:
            taken = queues.take(waiting, active.clocks.get(author, -1) + 1)
            if taken is None:
                return
            following, twins = taken
            try:
                self._accept(following, active, events)
            except SecsyncError as exc:
                events.append(self._rejected(exc, MessageKind.UPDATE, author))
                if not isinstance(exc, _CONTENT_REFUSED):
                    return
            for twin in twins:
                try:
                    self._collide(twin, active, events, None, late=True, certain=True)
                except SecsyncError as exc:
                    events.append(self._rejected(exc, MessageKind.UPDATE, author))
        queues.waiting.pop(author, None)

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
                self._receive_snapshot(held.snapshot, (), events, recovery=None, now=now)
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
