"""Snapshots as the session holds them: the active one and what was applied on it, the ones
it replaced, those waiting for their parent, and the checks of a snapshot's ancestry and of
its content against what this client holds.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from secsync.crdt import ContentCheck, crdt_failure
from secsync.errors import SecsyncError, SnapshotAncestryError, SnapshotBudgetError
from secsync.logs import Logger
from secsync.protocol import crypto
from secsync.protocol.encoding import b64encode
from secsync.protocol.events import MessageRejected, SnapshotIncomplete
from secsync.protocol.messages import ProofChainEntry, Snapshot, SnapshotInfo
from secsync.protocol.state import ActiveState


def snapshot_size(snapshot: Snapshot) -> int:
    """What a held snapshot costs the budget: its ciphertext, the bulk of what is held."""
    return len(snapshot.ciphertext) + 512


@dataclass(slots=True)
class ActiveSnapshot:
    """The active snapshot and what was applied on top of it."""

    info: SnapshotInfo
    author: bytes
    key: bytes
    clocks: dict[bytes, int] = field(default_factory=dict)
    """Last applied (or, for us, confirmed) clock per author."""
    updates: int = 0
    update_bytes: int = 0
    skipped: dict[bytes, list[tuple[int, int]]] = field(default_factory=dict)
    """Per author, the ranges of clocks recovery skipped (never received, content absent)."""
    cipher: crypto.Cipher | bytes = field(init=False, repr=False)
    """The key, ready for many messages (a malformed key stays as it is and fails as before)."""
    authors: dict[bytes, bytes] = field(init=False, repr=False, default_factory=dict)
    """One bytes object per author with applied updates, shared by their events."""
    applied: deque[tuple[bytes, int, list[bytes], bool]] = field(
        init=False, repr=False, default_factory=deque
    )
    """(author, clock, changes, late) of the updates applied on it, oldest first, to check the
    next snapshot against (``SecsyncConfig.snapshot_check_bytes``)."""
    applied_bytes: int = field(init=False, repr=False, default=0)
    dropped: dict[bytes, int] = field(init=False, repr=False, default_factory=dict)
    """Per author, the highest clock let go from ``applied`` (late ones count as ``2**62``)."""
    recorded: bool = field(init=False, repr=False, default=True)
    """False when updates were applied that ``applied`` never saw (restored from a save)."""

    def __post_init__(self) -> None:
        self.cipher = crypto.Cipher.of(self.key)

    @classmethod
    def restored(cls, state: ActiveState, key: bytes) -> ActiveSnapshot:
        """The active snapshot as saved. The updates applied before the save are not known:
        no lost-content check of other authors' content on the next snapshot (our own is
        still checked)."""
        active = cls(
            info=state.info,
            author=state.info.author,
            key=key,
            clocks=dict(state.clocks),
            updates=state.updates,
            update_bytes=state.update_bytes,
            skipped={a: list(rs) for a, rs in state.skipped.items()},
        )
        active.recorded = not state.updates
        return active

    def to_state(self) -> ActiveState:
        return ActiveState(
            info=self.info,
            clocks=dict(self.clocks),
            updates=self.updates,
            update_bytes=self.update_bytes,
            skipped={a: tuple(rs) for a, rs in self.skipped.items()},
        )

    def record(
        self, author: bytes, clock: int, changes: list[bytes], late: bool, budget: int
    ) -> None:
        """Keep an applied update's changes to check the next snapshot against, within
        ``budget`` bytes (the oldest go first)."""
        self.applied.append((author, clock, changes, late))
        self.applied_bytes += sum(map(len, changes))
        while self.applied_bytes > budget and self.applied:
            gone, gone_clock, gone_changes, gone_late = self.applied.popleft()
            self.applied_bytes -= sum(map(len, gone_changes))
            mark = 2**62 if gone_late else gone_clock
            self.dropped[gone] = max(self.dropped.get(gone, -1), mark)

    def included_clocks(self) -> dict[bytes, int]:
        """The clocks a snapshot of ours may claim to include: below what recovery skipped.

        Claiming a skipped clock would tell its author (who has it stored) that the snapshot
        holds its content; claiming less makes the author refuse the snapshot (102), recover
        from it and send again what it lacks.
        """
        included = {}
        for author, clock in self.clocks.items():
            ranges = self.skipped.get(author)
            claimed = min(clock, min(lo for lo, _ in ranges) - 1) if ranges else clock
            if claimed >= 0:
                included[author] = claimed
        return included


@dataclass(frozen=True, slots=True)
class SnapshotChoice:
    """Which of a document's stored snapshots to load (see :meth:`DocumentSession.choose`)."""

    index: int | None
    """Position of the snapshot to load among the candidates; ``None``: none can be loaded."""
    rejected: tuple[MessageRejected, ...]
    """Why each newer candidate was passed over, newest first."""
    unreadable: bool
    """A candidate was validly signed for this document but did not open with our key: the
    document has history this client cannot read, so it must not write a first snapshot."""


class SnapshotHistory:
    """Snapshot ids met before: replaced by a newer one (with the clocks of them their
    successor included), and validly signed ones that did not open with our key (updates on
    them are refused at once instead of waiting for a snapshot that will never open)."""

    __slots__ = ("limit", "superseded", "unreadable")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.superseded: OrderedDict[bytes, Mapping[bytes, int]] = OrderedDict()
        self.unreadable: OrderedDict[bytes, None] = OrderedDict()

    def supersede(self, snapshot_id: bytes, included: Mapping[bytes, int]) -> None:
        self.superseded[snapshot_id] = included
        while len(self.superseded) > self.limit:
            self.superseded.popitem(last=False)

    def note_unreadable(self, snapshot_id: bytes) -> None:
        self.unreadable[snapshot_id] = None
        while len(self.unreadable) > self.limit:
            self.unreadable.popitem(last=False)


class HeldSnapshots:
    """Snapshots whose parent has not arrived yet, by parent id (out-of-order delivery),
    within a count (``superseded_snapshots_kept``) and a byte budget
    (``max_held_snapshot_bytes``)."""

    __slots__ = ("budget", "by_parent", "held_bytes", "limit")

    def __init__(self, limit: int, budget: int) -> None:
        self.limit = limit
        self.budget = budget
        self.by_parent: OrderedDict[bytes, Snapshot] = OrderedDict()
        self.held_bytes = 0

    def hold(self, snapshot: Snapshot) -> list[tuple[SnapshotBudgetError, Snapshot]]:
        """Keep ``snapshot``; return the held ones let go for it (the oldest first), with
        why. One larger than the budget alone raises :class:`SnapshotBudgetError`."""
        size = snapshot_size(snapshot)
        budget = self.budget
        if size > budget:
            raise SnapshotBudgetError(
                f"a snapshot of {size} bytes waits for its parent; at most {budget} are held"
            )
        parent = snapshot.public_data.parent_snapshot_id
        replaced = self.by_parent.pop(parent, None)
        if replaced is not None:
            self.held_bytes -= snapshot_size(replaced)
        evicted: list[tuple[SnapshotBudgetError, Snapshot]] = []
        while self.by_parent and (
            len(self.by_parent) >= self.limit or self.held_bytes + size > budget
        ):
            _, gone = self.by_parent.popitem(last=False)
            gone_size = snapshot_size(gone)
            self.held_bytes -= gone_size
            error = SnapshotBudgetError(
                f"a held snapshot of {gone_size} bytes was let go for a newer one "
                f"({len(self.by_parent)} still held, {self.held_bytes} bytes)"
            )
            evicted.append((error, gone))
        self.by_parent[parent] = snapshot
        self.held_bytes += size
        return evicted

    def take_child(self, snapshot_id: bytes) -> Snapshot | None:
        child = self.by_parent.pop(snapshot_id, None)
        if child is not None:
            self.held_bytes -= snapshot_size(child)
        return child


def check_chain(
    known: SnapshotInfo, chain: Sequence[ProofChainEntry], current: SnapshotInfo
) -> None:
    """secsync's ``isValidAncestorSnapshot``: links from ``known`` to ``current``."""
    if chain[0].parent_snapshot_proof != known.child_proof():
        raise SnapshotAncestryError("proof chain does not start at the known snapshot")
    for previous, entry in itertools.pairwise(chain):
        if entry.parent_snapshot_proof != previous.child_proof():
            raise SnapshotAncestryError("proof chain is broken")
    last = chain[-1]
    if (
        last.snapshot_id != current.snapshot_id
        or last.parent_snapshot_proof != current.parent_snapshot_proof
        or last.snapshot_ciphertext_hash != current.ciphertext_hash
    ):
        raise SnapshotAncestryError("proof chain does not end at this snapshot")


@dataclass(frozen=True, slots=True)
class ContentVerdict:
    """What :func:`check_content` found."""

    resend: list[bytes]
    """Our changes to send again on the snapshot."""
    incomplete: SnapshotIncomplete | None = None
    repair: bool | None = None
    """True: a complete snapshot is wanted on top of it; False: any repair is done; ``None``:
    unchanged."""


def check_content(
    check: ContentCheck,
    snapshot: Snapshot,
    plaintext: bytes,
    active: ActiveSnapshot,
    *,
    me: bytes,
    own: list[tuple[int, list[bytes]]],
    in_flight_snapshot: Sequence[bytes],
    pending: Sequence[bytes],
    fallback: list[bytes],
    log: Logger,
) -> ContentVerdict:
    """Check a child of the active snapshot against what we hold, after merging it.

    Ours (``own``: our updates on the active snapshot by clock, ``in_flight_snapshot``'s
    changes) are sent again when the snapshot's content lacks them, whatever clocks it claims
    (a claim of 10**9 must not make us drop what is in flight). It is lossy when it lacks
    content not explained by an honest snapshot's blind spots (updates with clocks beyond what
    it claims, our changes not yet in it): then :class:`SnapshotIncomplete` names its author
    and, if it lacks other authors' content, a complete snapshot is wanted. If the check
    itself fails, ``fallback`` (what the snapshot's claimed clocks say) is sent again.
    """
    public = snapshot.public_data
    claims = public.parent_snapshot_update_clocks
    mine = claims.get(me, -1)
    claimed: list[bytes] = []  # ours the snapshot says it includes
    unclaimed: list[bytes] = []
    # ours from an earlier run of this client, received back like anyone's
    own = own + [(c, ch) for a, c, ch, _ in active.applied if a == me]
    own.sort(key=lambda item: item[0])
    for clock, changes in own:
        (claimed if clock <= mine else unclaimed).extend(changes)
    unclaimed.extend(in_flight_snapshot)
    short = b64encode(public.snapshot_id)[:8]
    try:
        lost = check.uncontained(plaintext, claimed)
        resend = lost + check.uncontained(plaintext, unclaimed)
        lacking = False
        checked = active.recorded and not any(
            clock > claims.get(author, -1) for author, clock in active.dropped.items()
        )
        if checked:
            extra = [
                change
                for author, clock, changes, late in active.applied
                if author != me and (late or clock > claims.get(author, -1))
                for change in changes
            ]
            lacking = check.lacks(plaintext, extra + claimed + unclaimed + list(pending))
    except BaseException as exc:
        if not isinstance(exc, SecsyncError) and not crdt_failure(exc):
            raise
        # the snapshot is merged already: report, and fall back to what it claims
        log.warning(
            "snapshot_check_failed",
            snapshot=short,
            error=type(exc).__name__,
            code=exc.code if isinstance(exc, SecsyncError) else None,
        )
        return ContentVerdict(fallback)
    if not checked:
        log.info("snapshot_check_partial", snapshot=short)
    incomplete = None
    if lost or lacking:
        log.warning(
            "snapshot_incomplete",
            snapshot=short,
            author=b64encode(public.pub_key)[:8],
            resent=len(lost),
            repair=lacking,
        )
        incomplete = SnapshotIncomplete(public.snapshot_id, public.pub_key, len(lost), lacking)
    repair = True if lacking else (False if checked else None)
    return ContentVerdict(resend, incomplete, repair)
