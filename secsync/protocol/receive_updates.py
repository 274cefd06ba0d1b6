"""Receiving updates: the checks of one update, its place in its author's order, applying it
to the CRDT, and identity collisions (two updates of one author with one clock).

Functions of the :class:`~secsync.protocol.session.DocumentSession` they serve (its state
lives in the objects it owns: :class:`~secsync.protocol.ordering.UpdateQueues`,
:class:`~secsync.protocol.outbox.Outbox`, :class:`~secsync.protocol.snapshots.ActiveSnapshot`,
:class:`~secsync.protocol.collisions.ClockDigests`). Every rejection raises a
:class:`~secsync.errors.SecsyncError`, which the session reports as
:class:`~secsync.protocol.events.MessageRejected`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from secsync.crdt import crdt_failure
from secsync.errors import (
    IdentityInUseError,
    SecsyncError,
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
from secsync.protocol import crdt_identity, sealing
from secsync.protocol.changes import deserialize_changes
from secsync.protocol.collisions import content_version, message_digest
from secsync.protocol.encoding import b64encode
from secsync.protocol.events import Event, IdentityCollision, IdentityInUse, UpdateApplied
from secsync.protocol.messages import MessageKind, Update
from secsync.protocol.policy import AllowAll
from secsync.protocol.snapshots import ActiveSnapshot

if TYPE_CHECKING:
    from secsync.protocol.session import DocumentSession

# Content refused after its signature and decryption passed: the author did sign it for this
# clock, so the clock is spent (no copy of it can apply later) and the author's next update
# applies at once instead of waiting for a gap that would never fill.
CONTENT_REFUSED: Final = (UpdateApplyError, UpdateDeserializeError, UpdateIdentityError)


def _short(key: bytes) -> str:
    return b64encode(key)[:8]


def process_update(
    session: DocumentSession, update: Update, now: float, events: list[Event]
) -> None:
    public = update.public_data
    if type(session.policy) is not AllowAll:  # AllowAll allows everything, without a call
        session._check_policy(update, UpdateAuthorRejectedError, UpdatePolicyError)
    aad = session._verify(update)
    if public.extra:
        session.devices.admit(public.pub_key, public.extra)
    if public.doc_id != session.doc_id:
        raise UpdateDocumentIdError()
    active = session._active
    ref = public.ref_snapshot_id
    if active is None or ref != active.info.snapshot_id:
        if ref in session._history.unreadable:
            raise UpdateSnapshotMismatchError("update builds on a snapshot that did not open")
        included = session._history.superseded.get(ref)
        if included is not None:
            if public.clock <= included.get(public.pub_key, -1):
                raise UpdateReplayError("update is already part of a newer snapshot")
            raise UpdateSnapshotMismatchError("update builds on a superseded snapshot")
        session._queues.defer(update, now)
        return
    current = active.clocks.get(public.pub_key, -1)
    own = public.pub_key == session.public_key
    if own:
        out = session._out
        flight = out.in_flight.get(public.clock) or out.refused.get(public.clock)
        if flight is not None and flight.message == update:
            events += session.update_stored(ref, public.clock)  # our own, delivered back
            return
    # --- identity collisions (see secsync.protocol.collisions) ---
    known = session._digests.get(public.pub_key, public.clock)
    if known and message_digest(update) in known:
        if own:
            return  # our own, already confirmed by the broker's acknowledgement
        raise UpdateReplayError(f"clock {public.clock} was applied already")
    if public.clock <= current and (known or own):
        # another message holds this clock: both are applied (ours too, whatever our key
        # wrote elsewhere; one older than the record brings nothing new and is dropped)
        collide(session, update, active, events, aad, late=True, certain=bool(known))
        return
    # --- end of identity collisions ---
    if public.clock <= current:
        ranges = active.skipped.get(public.pub_key, ())
        if any(lo <= public.clock <= hi for lo, hi in ranges):
            # a clock recovery gave up on arrives after all: its content is applied (CRDT
            # changes are idempotent, a second copy changes nothing); the clock stays
            apply_update(session, update, active, events, aad, late=True)
            return
        raise UpdateReplayError(f"clock {public.clock} is not above {current}")
    if public.clock > current + 1:
        session._queues.enqueue(update, now)
        return
    try:
        accept(session, update, active, events, aad)
    except CONTENT_REFUSED as exc:  # its clock is spent: what waits behind it follows
        events.append(session._rejected(exc, MessageKind.UPDATE, public.pub_key))
    drain(session, public.pub_key, active, events)


def accept(
    session: DocumentSession,
    update: Update,
    active: ActiveSnapshot,
    events: list[Event],
    aad: bytes | None = None,
) -> None:
    """Apply the next update of its author: a collision if its clock holds another one."""
    if session._digests.get(update.author, update.clock):
        collide(session, update, active, events, aad, late=False, certain=True)
    else:
        try:
            apply_update(session, update, active, events, aad)
        except CONTENT_REFUSED:  # its clock is spent: a copy is a replay, a twin collides
            session._digests.add(update.author, update.clock, message_digest(update))
            raise
        session._digests.add(update.author, update.clock, message_digest(update))


def collide(
    session: DocumentSession,
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
    watch = update.author == session.public_key and session._identity_in_use is None
    before = content_version(session.crdt) if watch else None
    count = len(events)
    apply_update(session, update, active, events, aad, late=late)
    session._digests.add(update.author, update.clock, message_digest(update))
    brought = before is None or content_version(session.crdt) != before
    if not certain and not (watch and brought):
        del events[count:]  # ours, older than the record: nothing new, nothing to report
        return
    snapshot_id, author = active.info.snapshot_id, active.authors[update.author]
    session._log.warning("identity_collision", author=_short(author), clock=update.clock)
    user = session.devices.device_user(author)
    events.append(IdentityCollision(snapshot_id, author, update.clock, user=user))
    if watch and brought:
        session._identity_in_use = IdentityInUseError(
            f"an update signed with our key that this client did not write (clock "
            f"{update.clock}) brought content it lacked: the identity is in use elsewhere"
        )
        kept = len(session._out.kept()) + session.untaken_changes
        session._log.warning("identity_in_use", clock=update.clock, kept=kept)
        events.append(IdentityInUse(session._identity_in_use, snapshot_id, update.clock, kept))


def apply_update(
    session: DocumentSession,
    update: Update,
    active: ActiveSnapshot,
    events: list[Event],
    aad: bytes | None = None,
    *,
    late: bool = False,
) -> None:
    ahead = session._ahead
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
                spend(session, active, public.pub_key, public.clock)
            raise
    try:
        if session._authors_of is not None:
            check_authors(session, changes, public.pub_key)
        session.crdt.apply_changes(changes)
    except UpdateApplyError:
        if not late:
            spend(session, active, public.pub_key, public.clock)
        raise  # the adapter's own verdict, with its reason
    except UpdateIdentityError:
        if not late:
            spend(session, active, public.pub_key, public.clock)
        raise
    except BaseException as exc:
        if not crdt_failure(exc):
            raise
        if not late:
            spend(session, active, public.pub_key, public.clock)
        raise UpdateApplyError(f"the CRDT refused the update: {type(exc).__name__}") from None
    # The event shares the active snapshot's id (the update names it) and one key object
    # per author instead of holding the copies decoded from each message.
    author = active.authors.setdefault(public.pub_key, public.pub_key)
    clock = public.clock
    user = session.devices.device_user(author) if public.extra else None
    if session._content_check is not None:
        session._record(active, author, clock, changes, late)
    if late:
        events.append(UpdateApplied(active.info.snapshot_id, author, clock, user=user))
        return
    active.clocks[author] = clock
    active.updates += 1
    active.update_bytes += len(update.ciphertext)
    if author == session.public_key:
        # Our own update, stored in an earlier run of this client: continue after it.
        session._out.local_clock = max(session._out.local_clock, clock)
    events.append(UpdateApplied(active.info.snapshot_id, author, clock, user=user))


def check_authors(session: DocumentSession, changes: Sequence[bytes], signer: bytes) -> None:
    """Refuse ``changes`` unless every CRDT id they write under may be the signer's."""
    assert session._authors_of is not None
    try:
        ids = session._authors_of(changes)
    except UpdateApplyError:
        raise
    except BaseException as exc:
        if not crdt_failure(exc):
            raise
        raise UpdateApplyError(f"the CRDT refused the update: {type(exc).__name__}") from None
    try:
        user = session.user_of(signer)
    except SecsyncError:
        raise
    except Exception as exc:
        raise UpdateIdentityError(f"the signer's user is unknown: {type(exc).__name__}") from None
    refused = crdt_identity.refused_ids(ids, user, legacy=session.config.legacy_crdt_ids)
    if refused:
        raise UpdateIdentityError(
            f"content under {crdt_identity.describe(refused[0])}, "
            + (
                "bound to another user than the signer"
                if crdt_identity.is_bound(refused[0])
                else "not bound to a user (legacy_crdt_ids is off)"
            )
        )


def spend(session: DocumentSession, active: ActiveSnapshot, author: bytes, clock: int) -> None:
    """Count a validly signed update whose content was refused as received at its clock."""
    author = active.authors.setdefault(author, author)
    if clock > active.clocks.get(author, -1):
        active.clocks[author] = clock
    if author == session.public_key:
        session._out.local_clock = max(session._out.local_clock, clock)


def drain(
    session: DocumentSession, author: bytes, active: ActiveSnapshot, events: list[Event]
) -> None:
    queues = session._queues
    waiting = queues.waiting.get(author)
    while waiting and waiting.updates:
        taken = queues.take(waiting, active.clocks.get(author, -1) + 1)
        if taken is None:
            return
        following, twins = taken
        try:
            accept(session, following, active, events)
        except SecsyncError as exc:
            events.append(session._rejected(exc, MessageKind.UPDATE, author))
            if not isinstance(exc, CONTENT_REFUSED):
                return
        for twin in twins:
            try:
                collide(session, twin, active, events, None, late=True, certain=True)
            except SecsyncError as exc:
                events.append(session._rejected(exc, MessageKind.UPDATE, author))
    queues.waiting.pop(author, None)


def skip_gaps(session: DocumentSession, events: list[Event]) -> None:
    """Give up on updates that even the latest state cannot supply, and go on after them.

    The CRDT holds back content whose causal predecessors are missing, so applying what
    follows a lost update cannot corrupt the document; the loss is reported.
    """
    active = session._active
    if active is None:
        return
    queues = session._queues.waiting
    for author in list(queues):
        waiting = queues[author]
        while waiting.updates:
            expected = active.clocks.get(author, -1) + 1
            following = min(waiting.updates)
            error = UpdateClockGapError(
                f"clocks {expected}..{following - 1} never arrived and were skipped"
            )
            events.append(session._rejected(error, MessageKind.UPDATE, author))
            active.skipped.setdefault(author, []).append((expected, following - 1))
            active.clocks[author] = following - 1
            drain(session, author, active, events)
            if author not in queues:
                break
