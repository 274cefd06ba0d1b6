"""Receiving snapshots: the checks of one snapshot (policy, signature, document, ancestry,
key, decryption, and its content against what we hold), holding it until its parent arrives,
and making it the active one.

Functions of the :class:`~secsync.protocol.session.DocumentSession` they serve (its state
lives in the objects it owns: :class:`~secsync.protocol.snapshots.SnapshotHistory`,
:class:`~secsync.protocol.snapshots.HeldSnapshots`, :class:`~secsync.protocol.outbox.Outbox`,
:class:`~secsync.protocol.ordering.UpdateQueues`). Every rejection raises a
:class:`~secsync.errors.SecsyncError`, which the session reports as
:class:`~secsync.protocol.events.MessageRejected`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from secsync.crdt import crdt_failure
from secsync.errors import (
    MembershipError,
    SecsyncError,
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
)
from secsync.protocol import sealing
from secsync.protocol.collisions import ClockDigests
from secsync.protocol.encoding import b64encode
from secsync.protocol.events import Event, MessageRejected, SnapshotApplied
from secsync.protocol.messages import MessageKind, ProofChainEntry, Snapshot, SnapshotInfo
from secsync.protocol.snapshots import ActiveSnapshot, SnapshotChoice, check_chain, check_content

if TYPE_CHECKING:
    from secsync.protocol.session import DocumentSession


def _short(key: bytes) -> str:
    return b64encode(key)[:8]


def receive_snapshot(
    session: DocumentSession,
    snapshot: Snapshot,
    chain: Sequence[ProofChainEntry],
    events: list[Event],
    *,
    recovery: str | None,
    now: float,
) -> None:
    try:
        applied = process_snapshot(session, snapshot, chain, recovery, now=now, events=events)
    except SecsyncError as exc:
        events.append(session._rejected(exc, MessageKind.SNAPSHOT, snapshot.author))
        return
    finally:
        late, session._late_events = session._late_events, []
    if applied is None:
        return
    events.append(applied)
    events += late
    session._drain_deferred(snapshot.snapshot_id, now, events)
    child = session._held.take_child(snapshot.snapshot_id)
    if child is not None:
        receive_snapshot(session, child, (), events, recovery=None, now=now)


def is_known(session: DocumentSession, snapshot_id: bytes) -> bool:
    active = session._active
    return (
        snapshot_id == b""
        or snapshot_id in session._history.superseded
        or (active is not None and snapshot_id == active.info.parent_snapshot_id)
    )


def hold_future_snapshot(session: DocumentSession, snapshot: Snapshot, events: list[Event]) -> None:
    """Keep a snapshot whose parent has not arrived (see :class:`HeldSnapshots`): the
    oldest held ones let go are reported (117); one larger than the budget is refused."""
    for error, evicted in session._held.hold(snapshot):
        events.append(session._rejected(error, MessageKind.SNAPSHOT, evicted.author))
    session._log.debug(
        "snapshot_held", snapshot=_short(snapshot.snapshot_id), held=session._held.held_bytes
    )


def process_snapshot(
    session: DocumentSession,
    snapshot: Snapshot,
    chain: Sequence[ProofChainEntry],
    recovery: str | None,
    *,
    now: float,
    events: list[Event],
) -> SnapshotApplied | None:
    public = snapshot.public_data
    session._check_policy(snapshot, SnapshotAuthorRejectedError, SnapshotPolicyError)
    flight = session._out.snapshot
    if flight is not None and public.snapshot_id == flight.message.snapshot_id:
        if snapshot != flight.message:
            raise SnapshotParentError("another snapshot with our in-flight snapshot's id")
        events += session.snapshot_stored(public.snapshot_id, now=now)  # ours, delivered back
        return None
    if flight is not None and public.parent_snapshot_id == flight.message.snapshot_id:
        # A child of our snapshot proves the broker stored it; its ack is still on the way.
        events += session.snapshot_stored(flight.message.snapshot_id, now=now)
    active = session._active
    if active is not None and public.snapshot_id == active.info.snapshot_id:
        if snapshot.info() == active.info:
            return None  # the active snapshot again: nothing to do
        raise SnapshotParentError("another snapshot with the active snapshot's id")
    if public.snapshot_id in session._history.superseded:
        raise SnapshotReplayError("snapshot was already superseded")
    aad = session._verify(snapshot)
    if public.extra:
        session.devices.admit(public.pub_key, public.extra)
    if public.doc_id != session.doc_id:
        raise SnapshotDocumentIdError()
    info = snapshot.info()
    direct_child = False
    if recovery is None and active is not None:
        if chain:
            check_chain(active.info, chain, info)
        elif public.parent_snapshot_id != active.info.snapshot_id and not is_known(
            session, public.parent_snapshot_id
        ):
            hold_future_snapshot(session, snapshot, events)  # its parent has not arrived yet
            return None
        else:
            direct_child = True
    key = snapshot_key(session, info)
    if direct_child:
        assert active is not None
        if (
            public.parent_snapshot_id != active.info.snapshot_id
            or public.parent_snapshot_proof != active.info.child_proof()
        ):
            raise SnapshotParentError()
        mine = active.clocks.get(session.public_key, -1)
        if public.parent_snapshot_update_clocks.get(session.public_key, -1) < mine:
            raise SnapshotMissesUpdatesError(
                f"snapshot includes our updates up to "
                f"{public.parent_snapshot_update_clocks.get(session.public_key, -1)}, "
                f"the broker confirmed {mine}"
            )
    try:
        plaintext = sealing.open_sealed(snapshot, key, aad)
    except SnapshotDecryptionError:
        session._history.note_unreadable(public.snapshot_id)
        raise
    session._history.unreadable.pop(public.snapshot_id, None)
    carried = carry_over(session, snapshot, direct_child)
    try:
        session.crdt.apply_snapshot(plaintext)
        if not direct_child and active is not None:
            # Not a descendant of what we hold: whatever we have that it lacks (our own
            # snapshot's content and our pending changes included) is sent again on it.
            carried = session.crdt.missing_from(plaintext)
            session._out.pending = []
        elif direct_child and session._content_check is not None:
            assert active is not None
            carried = check_content_of(session, snapshot, plaintext, active, carried)
    except SnapshotApplyError:
        raise  # the adapter's own verdict, with its reason
    except BaseException as exc:
        if not crdt_failure(exc):
            raise
        raise SnapshotApplyError(f"the CRDT refused the snapshot: {type(exc).__name__}") from None
    activate(session, snapshot, key, carried)
    rebased = len(session._out.pending)
    session._log.info(
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
        user=session.devices.device_user(public.pub_key),
    )


def check_content_of(
    session: DocumentSession,
    snapshot: Snapshot,
    plaintext: bytes,
    active: ActiveSnapshot,
    claimed: list[bytes],
) -> list[bytes]:
    """:func:`~secsync.protocol.snapshots.check_content` of a child of the active snapshot;
    returns our changes to send again on it."""
    check = session._content_check
    assert check is not None
    out = session._out
    verdict = check_content(
        check,
        snapshot,
        plaintext,
        active,
        me=session.public_key,
        own=out.own_updates(),
        in_flight_snapshot=out.snapshot.changes if out.snapshot is not None else (),
        pending=out.pending,
        fallback=claimed,
        log=session._log,
    )
    if verdict.incomplete is not None:
        session._late_events.append(verdict.incomplete)
    if verdict.repair is not None:
        session._repair_wanted = verdict.repair
    return verdict.resend


def carry_over(session: DocumentSession, snapshot: Snapshot, direct_child: bool) -> list[bytes]:
    """Local changes the incoming snapshot may lack, to send again on top of it (by its
    claimed clocks; :meth:`_check_content` checks its content instead when it can)."""
    included = (
        snapshot.public_data.parent_snapshot_update_clocks.get(session.public_key, -1)
        if direct_child
        else -1
    )
    return session._out.carry_over(included)


def activate(
    session: DocumentSession, snapshot: Snapshot, key: bytes, carried: list[bytes]
) -> None:
    old = session._active
    if old is not None:
        session._history.supersede(
            old.info.snapshot_id, snapshot.public_data.parent_snapshot_update_clocks
        )
    session._active = ActiveSnapshot(info=snapshot.info(), author=snapshot.author, key=key)
    activated = getattr(session.keys, "snapshot_activated", None)
    if activated is not None:
        activated(session._active.info)
    session._queues.clear_waiting()  # they waited on the old snapshot: dropped
    session._digests = ClockDigests(session.config.max_clock_digests)
    session._out.new_base(carried, snapshot)


def check_signed(session: DocumentSession, snapshot: Snapshot) -> bytes:
    """Policy, signature and document checks of a stored snapshot; returns its AAD."""
    session._check_policy(snapshot, SnapshotAuthorRejectedError, SnapshotPolicyError)
    aad = sealing.verify(snapshot)
    if snapshot.public_data.extra:
        session.devices.admit(snapshot.author, snapshot.public_data.extra)
    if snapshot.public_data.doc_id != session.doc_id:
        raise SnapshotDocumentIdError()
    return aad


def check_opens(session: DocumentSession, snapshot: Snapshot, aad: bytes) -> None:
    sealing.open_sealed(snapshot, snapshot_key(session, snapshot.info()), aad)


def snapshot_key(session: DocumentSession, info: SnapshotInfo) -> bytes:
    try:
        return session.keys.snapshot_key(info)
    except SecsyncError:
        raise  # the key provider's own verdict (e.g. not a member, forged membership)
    except Exception as exc:
        raise SnapshotKeyError(f"no key for the snapshot: {type(exc).__name__}") from None


def snapshot_admitted(
    session: DocumentSession, snapshot: Snapshot, now: float, events: list[Event]
) -> bool:
    """The per-author snapshot rate, before any check of ``snapshot``: held ones and those
    dropped in their favour are reported (``SnapshotRateError``, 118)."""
    if not session.loaded or snapshot.author == session.public_key:
        return True
    active, snapshot_id = session._active, snapshot.snapshot_id
    if (
        active is not None and snapshot_id == active.info.snapshot_id
    ) or snapshot_id in session._history.superseded:
        return True  # a copy of one already taken: settled before any costly check
    admitted, dropped = session.snapshot_rate.admit(snapshot, now)
    for old in dropped:
        error = SnapshotRateError(
            "dropped unread: a newer snapshot of its author is held",
            snapshot_id=old.snapshot_id,
        )
        events.append(session._rejected(error, MessageKind.SNAPSHOT, old.author))
    if not admitted:
        error = SnapshotRateError(
            "held: its author exceeds the snapshot rate",
            snapshot_id=snapshot.snapshot_id,
            held=True,
        )
        events.append(session._rejected(error, MessageKind.SNAPSHOT, snapshot.author))
    return admitted


def choose(session: DocumentSession, candidates: Sequence[Snapshot]) -> SnapshotChoice:
    """:meth:`DocumentSession.choose <secsync.protocol.session.DocumentSession.choose>`."""
    rejected: list[tuple[int, MessageRejected]] = []
    unreadable = False
    chain_of = getattr(session.keys, "membership_chain", None)
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
            aad = check_signed(session, snapshot)
        except SecsyncError as exc:  # junk: nobody's history
            rejected.append((index, session._rejected(exc, MessageKind.SNAPSHOT, snapshot.author)))
            continue
        try:
            check_opens(session, snapshot, aad)
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
                session._history.note_unreadable(snapshot.snapshot_id)
            rejected.append((index, session._rejected(exc, MessageKind.SNAPSHOT, snapshot.author)))
            continue
        if chain is not None:
            accepted = chain
        best = index
    # Newer candidates were passed over; older ones are history the choice replaced.
    rejected.sort(key=lambda item: -item[0])  # newest first
    passed = [r for i, r in rejected if best is None or i > best]
    return SnapshotChoice(best, tuple(passed), unreadable)
