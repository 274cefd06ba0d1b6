"""Binding a :class:`DocumentSession` to an ordered, compare-and-set stream. Pure (sans-IO).

The stream is JetStream's model: every stored message has a sequence, shared by all subjects
of the stream, and a publish may name the sequence it expects the last message on a subject
filter to have (``Nats-Expected-Last-Subject-Sequence``), and a message id the stream
deduplicates within a window (``Nats-Msg-Id``). :class:`StreamBinding` holds where the
document stands on such a stream and decides, like h11's ``Connection``, from what it is fed:

* stored messages delivered in stream order (:meth:`StreamBinding.deliver`): what the session
  receives, which junk snapshot to fetch again (:class:`Recheck`), which gap or recovery to
  heal (:class:`Heal`), what to publish again (:class:`Resend`);
* publish outcomes (:func:`~secsync.protocol.stream_publish.judge`, re-exported here):
  stored, a duplicate to verify, a compare-and-set refusal to look into, busy (retry at
  once), unanswered (retry with backoff), or a failure;
* the headers of each publish (:meth:`StreamBinding.headers`): its preconditions and msg id.

Which snapshot to load is :mod:`secsync.protocol.stream_search`. The transport performs the
reads and publishes these name and feeds the answers back; time comes in as ``now``.

Size: one state machine, :class:`StreamBinding`, whose methods share its few fields; the
publish outcomes, the search and the message types already live in modules of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from secsync.errors import (
    SecsyncError,
    SnapshotApplyError,
    SnapshotRateError,
)
from secsync.protocol import wire
from secsync.protocol.events import (
    Event,
    GapDetected,
    MessageRejected,
    RecoveryNeeded,
    SnapshotApplied,
    SnapshotStored,
)
from secsync.protocol.messages import Message, Snapshot, Update
from secsync.protocol.stream_parts import PARTS_HEADER, Reassembler
from secsync.protocol.stream_publish import (
    Accepted,
    Busy,
    CheckLanded,
    Conflict,
    Failed,
    Outcome,
    PublishStep,
    Unanswered,
    VerifyDuplicate,
    holds,
    judge,
    landed,
)
from secsync.protocol.stream_search import Latest
from secsync.protocol.stream_types import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    HEADER_ROOM,
    MSG_ID,
    StoredMessage,
    Subjects,
    snapshot_headers,
    snapshot_msg_id,
    update_headers,
)

if TYPE_CHECKING:
    from secsync.protocol.session import DocumentSession

__all__ = [
    "EXPECTED_LAST_SUBJECT_SEQ",
    "EXPECTED_LAST_SUBJECT_SEQ_SUBJECT",
    "HEADER_ROOM",
    "MSG_ID",
    "UNVERIFIABLE_SNAPSHOT",
    "Accepted",
    "Busy",
    "CheckLanded",
    "Conflict",
    "Failed",
    "Heal",
    "Outcome",
    "PublishStep",
    "Recheck",
    "Resend",
    "StoredMessage",
    "StreamAction",
    "StreamBinding",
    "Unanswered",
    "VerifyDuplicate",
    "Wake",
    "digest",
    "holds",
    "is_action",
    "judge",
    "landed",
]

# Codes of snapshot rejections that mean "the stored history is not what we hold".
UNVERIFIABLE_SNAPSHOT = frozenset({102, 112, 115})


def digest(data: bytes) -> bytes:
    """What a checkpoint keeps of the message at the last applied sequence."""
    return hashlib.blake2b(data, digest_size=16).digest()


# --- actions: what the transport is asked to do -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Recheck:
    """Read the snapshot message stored at ``first..last`` again, straight from the stream,
    and feed it to :meth:`StreamBinding.rechecked` (a read failing broker-side: again later)."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Heal:
    """Fetch what a gap lacks (:meth:`StreamBinding.gap_start`), or the latest snapshot to
    recover from (:meth:`StreamBinding.recovered`)."""

    trigger: GapDetected | RecoveryNeeded


@dataclass(frozen=True, slots=True)
class Resend:
    """Publish these updates again, as they were (what junk made the broker refuse)."""

    updates: tuple[Update, ...]


@dataclass(frozen=True, slots=True)
class Wake:
    """The sender may have something to do now."""


StreamAction = Recheck | Heal | Resend | Wake
Output = list[Event | StreamAction]
_ACTIONS = (Recheck, Heal, Resend, Wake)


def is_action(item: Event | StreamAction) -> bool:
    return isinstance(item, _ACTIONS)


def part_limit(max_payload: int, configured: int = 0) -> int:
    """The largest part of a message the broker takes, below its payload limit."""
    if configured:
        return configured
    return max(1024, int(max_payload) - HEADER_ROOM)


class StreamBinding:
    """Where one document stands on the stream, and what that implies.

    ``last_sequence`` is the last stream sequence of the document applied: live delivery goes
    on after it and a snapshot expects it. ``snapshot_sequences`` is where each snapshot's
    message ends: what updates on it expect.
    """

    def __init__(
        self,
        session: DocumentSession,
        subjects: Subjects,
        *,
        max_message_bytes: int,
        remembered: int = 1024,
    ) -> None:
        self.session = session
        self.subjects = subjects
        self._max_message_bytes = max_message_bytes
        self._remembered = remembered
        self.last_sequence = 0
        # What we applied at last_sequence (stored bytes, or our own message), to tell whether
        # the stream still holds it; None when not known (restored, or a snapshot weighed only).
        self.last_data: bytes | Snapshot | Update | None = None
        self.restored_digest = b""  # the digest of it a checkpoint kept, after a restart
        self.snapshot_sequences: dict[bytes, int] = {}
        # Refused snapshot messages being checked again: no snapshot is written over them.
        self.unresolved: set[int] = set()
        self.own_sequences: set[int] = set()
        # Our published updates by msg id, until delivered back: the exact bytes we sent need
        # no verification and no decryption.
        self.own_payloads: OrderedDict[str, tuple[bytes, Update]] = OrderedDict()
        self.reassembler = Reassembler()
        self.redelivered = 0
        self.changed = False  # something was applied since the transport last looked

    # --- position ---------------------------------------------------------------------------

    def restore(
        self, last_sequence: int, last_digest: bytes, snapshot_sequences: dict[bytes, int]
    ) -> None:
        """Resume where a checkpoint stood."""
        self.last_sequence = last_sequence
        self.restored_digest = last_digest
        self.snapshot_sequences = dict(snapshot_sequences)

    def last_digest(self) -> bytes:
        """Digest of what we applied at ``last_sequence``, if known."""
        data = self.last_data
        if data is None:
            return b""
        if not isinstance(data, bytes):
            data = wire.encode(data, include_doc_id=False)
        return digest(data)

    def history_lost(self, found: Sequence[StoredMessage]) -> bool:
        """Given the first stored message of the document from ``last_sequence`` on: does the
        stream still hold, at our last applied sequence, what we applied there?

        A stream restored from an older backup holds less, and new writes then take sequences
        we have applied already: reading on after them would miss those writes for good.
        """
        if not found or found[0].sequence != self.last_sequence:
            return True  # gone (rolled back, or compacted away: starting over is right then too)
        if PARTS_HEADER in found[0].headers:
            return False  # a part of a larger message: nothing to compare with
        expected = self.last_digest() or self.restored_digest
        return bool(expected) and digest(found[0].data) != expected

    def _advance(self, sequence: int, data: bytes | Snapshot | Update | None) -> None:
        self.last_sequence = sequence
        self.last_data = data
        self.restored_digest = b""

    # --- publishing -------------------------------------------------------------------------

    def headers(self, message: Snapshot | Update) -> dict[str, str]:
        """The compare-and-set preconditions and msg id of a publish of ``message``."""
        if isinstance(message, Snapshot):
            # Stored only if nothing was stored for this document since what we have applied
            # (held back below it while a refused snapshot message is being checked again).
            expected = min(self.unresolved) - 1 if self.unresolved else self.last_sequence
            return snapshot_headers(message.snapshot_id, expected, self.subjects)
        ref = message.public_data.ref_snapshot_id
        # Stored only if the snapshot it builds on is still the document's latest.
        return update_headers(message, self.snapshot_sequences.get(ref, 0), self.subjects)

    def sent(self, msg_id: str, payload: bytes, update: Update) -> None:
        """``update`` was published as ``payload``: recognise it when delivered back."""
        own = self.own_payloads
        own[msg_id] = (payload, update)
        while len(own) > self._remembered:
            own.popitem(last=False)  # never delivered back: forget

    def abandoned(self, snapshot: Snapshot) -> bool:
        """Whether the session neither waits for ``snapshot`` nor holds it as the active one:
        its expectation would now be computed on top of the snapshot that replaced it, and
        stored, it would fork the history (its changes were queued again on that one)."""
        waiting = self.session.unacknowledged_messages()
        active = self.session.active_snapshot
        return not (waiting and waiting[0] is snapshot) and (
            active is None or active.snapshot_id != snapshot.snapshot_id
        )

    def stored(
        self,
        message: Snapshot | Update,
        first: int,
        last: int,
        headers: dict[str, str] | None = None,
        *,
        now: float,
    ) -> list[Event]:
        """``message``, published with ``headers``, is stored at ``first..last`` (-1: where
        is not known)."""
        expected = (
            int(headers[EXPECTED_LAST_SUBJECT_SEQ])
            if headers is not None and isinstance(message, Snapshot)
            else None
        )
        # Stream sequences are shared by every document in the stream. We may move our last
        # applied sequence past our own write only when nothing of this document can lie in
        # between: the stream's next sequence, or a snapshot whose compare-and-set over the
        # document's subjects held at the sequence we had applied.
        if first > 0 and (first == self.last_sequence + 1 or expected == self.last_sequence):
            self._advance(last, message if first == last else None)
            self.own_sequences.update(range(first, last + 1))
        if isinstance(message, Snapshot):
            if last > 0:
                self.snapshot_sequences[message.snapshot_id] = last
            return self.session.snapshot_stored(message.snapshot_id, now=now)
        return self.session.update_stored(message.public_data.ref_snapshot_id, message.clock)

    def expectation_moved(self, update: Update, headers: dict[str, str]) -> bool:
        """Whether the expectation ``update`` would now carry differs from the one ``headers``
        sent (a snapshot checked as junk meanwhile): then send again, with fresh headers."""
        sent = int(headers[EXPECTED_LAST_SUBJECT_SEQ])
        return self.snapshot_sequences.get(update.public_data.ref_snapshot_id, 0) != sent

    def still_latest(
        self, update: Update, headers: dict[str, str], last: StoredMessage | None
    ) -> bool:
        """After a compare-and-set mismatch of ``update`` sent with ``headers``, ``last`` being
        the snapshot subject's last message now: is its snapshot the document's latest after
        all (then our expectation was off: it is corrected, and the update sent again)?"""
        if self.expectation_moved(update, headers):
            return True  # moved on while we read
        ref = update.public_data.ref_snapshot_id
        if last is None or last.headers.get(MSG_ID) != snapshot_msg_id(ref):
            return False
        if last.sequence == self.snapshot_sequences.get(ref, 0):
            return False  # a replica behind the leader answered: the mismatch stands
        self.snapshot_sequences[ref] = last.sequence
        return True

    def conflict(self, message: Snapshot | Update) -> list[Event]:
        """The broker refused ``message`` for good: a newer snapshot exists (rebase on it)."""
        if isinstance(message, Snapshot):
            return self.session.snapshot_rejected(message.snapshot_id)
        return self.session.update_rejected(message.public_data.ref_snapshot_id, message.clock)

    def preempted(self, update: Update) -> list[Event]:
        """Other bytes are stored under ``update``'s msg id: it is not stored."""
        return self.session.update_preempted(update.public_data.ref_snapshot_id, update.clock)

    # --- delivery ---------------------------------------------------------------------------

    def deliver(self, messages: Iterable[StoredMessage], *, now: float) -> Output:
        """Stored messages of the document, in stream order; runs of plain updates go to one
        ``receive_many``."""
        out: Output = []
        run: list[bytes] = []
        update_subject = self.subjects.update
        for stored in messages:
            if (
                stored.subject != update_subject
                or stored.sequence <= self.last_sequence
                or self.reassembler.pending
                or PARTS_HEADER in stored.headers
            ):
                self._receive_run(run, out, now)
                self._deliver_one(stored, out, now)
                continue
            self._advance(stored.sequence, stored.data)
            if self.own_payloads and self._acknowledge_own(stored, out):
                continue
            self.changed = True
            run.append(stored.data)
        self._receive_run(run, out, now)
        return out

    def _receive_run(self, run: list[bytes], out: Output, now: float) -> None:
        if run:
            events = self.session.receive_many(run, now=now)
            run.clear()
            self._inspect(events, None, out)

    def _acknowledge_own(self, stored: StoredMessage, out: Output) -> bool:
        """Our own update delivered back, byte for byte: it is stored; nothing to verify."""
        own = self.own_payloads.pop(stored.headers.get(MSG_ID, ""), None)
        if own is None or own[0] != stored.data or PARTS_HEADER in stored.headers:
            return False
        update = own[1]
        out += self.session.update_stored(update.public_data.ref_snapshot_id, update.clock)
        return True

    def applied_already(self, sequence: int, msg_id: str) -> bool:
        """Settle a stored message at ``sequence`` (its ``Nats-Msg-Id`` ``msg_id``) if it is at
        or below ``last_sequence``: our own acknowledged publish, or a redelivery. Nothing is
        decoded; False (nothing done) when it lies beyond and needs :meth:`deliver`.

        What :meth:`deliver` does with such a message, exactly: a transport may call this for
        a message it receives with nothing else waiting to be delivered before it."""
        if sequence > self.last_sequence:
            return False
        if self.own_payloads:
            self.own_payloads.pop(msg_id, None)
        if sequence in self.own_sequences:
            self.own_sequences.discard(sequence)
        else:
            self.redelivered += 1
        return True

    def _deliver_one(self, stored: StoredMessage, out: Output, now: float) -> None:
        if self.applied_already(stored.sequence, stored.headers.get(MSG_ID, "")):
            return
        self._advance(stored.sequence, None if PARTS_HEADER in stored.headers else stored.data)
        if (
            self.own_payloads
            and stored.subject == self.subjects.update
            and self._acknowledge_own(stored, out)
        ):
            return
        try:
            data = self.reassembler.feed(stored.sequence, stored.data, stored.headers)
        except SecsyncError as exc:
            out.append(MessageRejected(exc))
            return
        if data is None:
            return
        self.changed = True
        first = self.reassembler.first_sequence or stored.sequence
        events = self.session.receive(data, now=now)
        self._inspect(events, stored, out, first)

    def timers(self, *, now: float) -> Output:
        """The session's timers at ``now`` (held snapshots, queued updates, heartbeats)."""
        out: Output = []
        self._inspect(self.session.handle_timer(now), None, out)
        return out

    def _inspect(
        self,
        events: list[Event],
        stored: StoredMessage | None,
        out: Output,
        first: int = 0,
    ) -> None:
        """What the session's ``events`` on receiving ``stored`` (None: a run of updates, or
        timers) ask of the stream; the one place events are looked into."""
        on_snapshot = stored is not None and stored.subject == self.subjects.snapshot
        applied: SnapshotApplied | None = None
        held: SnapshotRateError | None = None
        taken = False
        for event in events:
            if isinstance(event, GapDetected | RecoveryNeeded):
                out.append(Heal(event))
            elif isinstance(event, SnapshotApplied):
                if applied is None and not event.recovered:
                    applied = event
            elif isinstance(event, MessageRejected):
                error = event.error
                if held is None and isinstance(error, SnapshotRateError) and error.held:
                    held = error
                if on_snapshot and error.code in UNVERIFIABLE_SNAPSHOT:
                    out.append(Heal(RecoveryNeeded(f"stored snapshot: {error}")))
            elif isinstance(event, SnapshotStored):
                taken = True
            out.append(event)
        if stored is None:
            return
        if applied is not None:
            self.snapshot_sequences[applied.snapshot_id] = stored.sequence
        elif held is not None:
            # a real snapshot, taken when its author's rate allows (DocumentSession.handle_timer):
            # where it is stored is what updates on it expect
            self.snapshot_sequences[held.snapshot_id] = stored.sequence
            out.append(Wake())
        elif on_snapshot and not taken:
            # A stored snapshot we did not take: altered on its way to us, or junk in the
            # stream. Until fetched again, write no snapshot over it.
            self.unresolved.add(stored.sequence)
            out.append(Recheck(first or stored.sequence, stored.sequence))

    def rechecked(self, check: Recheck, stored: Sequence[StoredMessage], *, now: float) -> Output:
        """The snapshot subject read again from ``check.first`` on.

        If the message now verifies, it was altered in transit to us and is applied. If it is
        refused again, it is junk as stored: nobody can build on it, so our updates may follow
        it (what it made the broker refuse goes out again). A real snapshot that does not fit
        what we hold stays unresolved, until the recovery its refusal started adopts it.
        """
        out: Output = []
        try:
            assembler = Reassembler()
            data = None
            for message in stored:
                if message.sequence > check.last:
                    break
                with contextlib.suppress(SecsyncError):
                    data = assembler.feed(message.sequence, message.data, message.headers) or data
            events = self.session.receive(data, now=now) if data is not None else []
            out += events
            applied = next((e for e in events if isinstance(e, SnapshotApplied)), None)
            if applied is None and any(
                isinstance(e, MessageRejected) and e.error.code in UNVERIFIABLE_SNAPSHOT
                for e in events
            ):
                # others build on it: no junk to write over
                return out
            if applied is not None:
                self.snapshot_sequences[applied.snapshot_id] = check.last
            else:
                active = self.session.active_snapshot
                if active is not None:
                    current = self.snapshot_sequences.get(active.snapshot_id, 0)
                    self.snapshot_sequences[active.snapshot_id] = max(current, check.last)
                    out.append(Resend(tuple(self.session.resend_refused(active.snapshot_id))))
        except SecsyncError as exc:
            out.append(MessageRejected(exc))
            return out  # stays unresolved: no snapshot is written over what we could not check
        self.unresolved.discard(check.last)
        out.append(Wake())
        return out

    # --- loading and healing ----------------------------------------------------------------

    def decode(self, data: bytes) -> Message | None:
        """``data`` as a message of this document, or None (junk)."""
        try:
            return wire.decode(data, doc_id=self.session.doc_id, max_bytes=self._max_message_bytes)
        except SecsyncError:
            return None

    def updates_in(self, latest: Latest) -> list[Update]:
        """The updates stored after the snapshot ``latest`` chose, decoded (junk left out)."""
        frames = (m.data for m in latest.after if m.subject == self.subjects.update)
        return [m for m in map(self.decode, frames) if isinstance(m, Update)]

    @staticmethod
    def content_refused(latest: Latest, session: DocumentSession, loaded: list[Event]) -> bool:
        """After ``session.load(latest.snapshot)``: was its content refused (hostile or damaged,
        ``SnapshotApplyError``), so that the one before it is to be loaded instead?"""
        return (
            latest.snapshot is not None
            and session.active_snapshot is None
            and any(
                isinstance(e, MessageRejected) and isinstance(e.error, SnapshotApplyError)
                for e in loaded
            )
        )

    def adopt(self, latest: Latest, *, now: float) -> Output:
        """After loading ``latest``: apply what followed it, and stand where it ends. Updates on
        it are stored only while no snapshot message follows those weighed when choosing it."""
        self.adopt_start(latest)
        out = self.deliver(latest.after, now=now)
        self.adopt_end(latest)
        return out

    def adopt_start(self, latest: Latest) -> None:
        """:meth:`adopt` in steps, for what follows the snapshot read page by page: this,
        :meth:`deliver` for each page in order, then :meth:`adopt_end`."""
        if latest.snapshot is not None:
            self.snapshot_sequences[latest.snapshot.snapshot_id] = latest.judged
        self.last_sequence = latest.sequence
        self.last_data = None

    def adopt_end(self, latest: Latest) -> None:
        if latest.judged > self.last_sequence:
            self.last_sequence, self.last_data = latest.judged, None

    def rewind(self, latest: Latest, reason: str, *, now: float) -> list[Event]:
        """Start over from ``latest``, what the stream holds now; local changes are kept."""
        events = self.session.rewind(
            latest.snapshot, self.updates_in(latest), reason=reason, now=now
        )
        self.snapshot_sequences = {}
        if latest.snapshot is not None:
            self.snapshot_sequences[latest.snapshot.snapshot_id] = latest.judged
        self.own_sequences.clear()
        self.unresolved.clear()
        self.own_payloads.clear()
        self.reassembler = Reassembler()
        self.last_sequence = max(latest.judged, max((m.sequence for m in latest.after), default=0))
        self.last_data, self.restored_digest = None, b""
        self.changed = True
        return events

    def gap_start(self, gap: GapDetected) -> int:
        """Where to read the update subject from to fill ``gap``."""
        return self.snapshot_sequences.get(gap.snapshot_id, 0) + 1

    def gap_filled(
        self, gap: GapDetected, stored: Iterable[StoredMessage], *, now: float
    ) -> list[Event]:
        """The updates read for ``gap``: those of its author go to the session."""
        decoded = (self.decode(m.data) for m in stored)
        wanted = [m for m in decoded if m is not None and m.author == gap.author]
        return self.session.receive_many(wanted, now=now)

    def recovered(self, latest: Latest, reason: str, *, now: float) -> Output:
        """Recover from ``latest`` (the answer to a :class:`Heal` of a ``RecoveryNeeded``)."""
        snapshot = latest.snapshot
        if snapshot is None:
            return []
        events = self.session.recover(snapshot, self.updates_in(latest), reason=reason, now=now)
        self.snapshot_sequences[snapshot.snapshot_id] = latest.judged
        out: Output = []
        active = self.session.active_snapshot
        if active is not None and active.snapshot_id == snapshot.snapshot_id:
            # settled: every snapshot message up to `judged` was weighed when choosing, and
            # ours is still the latest one can build on: what the broker refused goes out again
            self.unresolved = {u for u in self.unresolved if u > latest.judged}
            out.append(Resend(tuple(self.session.resend_refused(active.snapshot_id))))
        out += events
        out.append(Wake())
        return out
