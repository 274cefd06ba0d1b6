"""What a JS client may see of a document: the key-less view of its stored messages. Pure.

:class:`DocumentView` is fed the document's stored messages in stream order (native form, with
their sequences) and keeps the active snapshot, the chain of snapshots before it (for proof
chains), the per-author clocks of the active snapshot and its gap-free updates. It releases
only what an unmodified secsync JS client accepts: snapshots that chain onto the active one
(parent id, ``parentSnapshotProof`` = the active one's child proof, ``parentSnapshotUpdateClocks``
= the view's clocks) and, per author, updates of the active snapshot with exactly the next
clock. An update that arrives early is held (bounded) until its predecessor is stored; junk is
dropped with a typed reason from :mod:`secsync.errors`.

The view holds no key, so it cannot tell a snapshot sealed under another key from a real one:
see docs/gateway.md for where this differs from the Python load search.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from secsync.errors import (
    MalformedMessageError,
    SecsyncError,
    SnapshotDocumentIdError,
    SnapshotMissesUpdatesError,
    SnapshotParentError,
    SnapshotReplayError,
    SnapshotSignatureError,
    UpdateClockGapError,
    UpdateDocumentIdError,
    UpdateReplayError,
    UpdateSignatureError,
    UpdateSnapshotMismatchError,
)
from secsync.logs import get_logger
from secsync.protocol import wire
from secsync.protocol.messages import (
    INITIAL_PARENT_PROOF,
    ProofChainEntry,
    Snapshot,
    Update,
)
from secsync.protocol.sealing import signature_valid
from secsync.protocol.stream_parts import Reassembler
from secsync.protocol.stream_types import StoredMessage, Subjects

log = get_logger("secsync.gateway")

DEFAULT_MAX_HELD = 1024
DEFAULT_MAX_FATES = 4096


@dataclass(frozen=True, slots=True)
class Released:
    """A stored message a JS client may now see, stored at ``first..sequence``."""

    message: Snapshot | Update
    sequence: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """A stored message no JS client will see, and why."""

    sequence: int
    error: SecsyncError
    message: Snapshot | Update | None = None


ViewEvent = Released | Dropped


def snapshot_problem(
    snapshot: Snapshot,
    doc_id: str,
    active: Snapshot | None,
    clocks: Mapping[bytes, int],
    known_ids: Iterable[bytes] = (),
) -> SecsyncError | None:
    """Why ``snapshot`` cannot follow ``active`` (with its update ``clocks``), or None.

    Checked from public data only: signature, document id, a replay of a snapshot id already in
    the chain, the parent id, the proof (the active one's child proof) and the clocks (equal to
    the view's). Without an active snapshot, any signed snapshot of the document is taken: the
    stream may start after a compaction, and a JS client trusts its first snapshot the same way.
    """
    if not signature_valid(snapshot):
        return SnapshotSignatureError("snapshot signature invalid")
    if snapshot.public_data.doc_id != doc_id:
        return SnapshotDocumentIdError("snapshot of another document")
    if snapshot.snapshot_id in known_ids:
        return SnapshotReplayError("snapshot id already in the chain")
    public = snapshot.public_data
    if active is None:
        return None
    if public.parent_snapshot_id != active.snapshot_id:
        return SnapshotParentError("parent is not the active snapshot")
    if public.parent_snapshot_proof != active.info().child_proof():
        return SnapshotParentError("parentSnapshotProof is not the active snapshot's child proof")
    if dict(public.parent_snapshot_update_clocks) != dict(clocks):
        return SnapshotMissesUpdatesError("parentSnapshotUpdateClocks differ from the stored ones")
    return None


def is_initial(snapshot: Snapshot) -> bool:
    public = snapshot.public_data
    return (
        not public.parent_snapshot_id
        and public.parent_snapshot_proof == INITIAL_PARENT_PROOF
        and not public.parent_snapshot_update_clocks
    )


def update_problem(
    update: Update, doc_id: str, active: Snapshot | None, clocks: Mapping[bytes, int]
) -> SecsyncError | None:
    """Why ``update`` cannot be the next one of its author on ``active``, or None; a clock
    ahead of the next one is :class:`UpdateClockGapError`."""
    if not signature_valid(update):
        return UpdateSignatureError("update signature invalid")
    if update.public_data.doc_id != doc_id:
        return UpdateDocumentIdError("update of another document")
    if active is None or update.public_data.ref_snapshot_id != active.snapshot_id:
        return UpdateSnapshotMismatchError("update on a snapshot that is not the active one")
    current = clocks.get(update.author, -1)
    if update.clock <= current:
        return UpdateReplayError(f"clock {update.clock} after {current}")
    if update.clock != current + 1:
        return UpdateClockGapError(f"clock {update.clock} after {current}")
    return None


class DocumentView:
    """The exact view of one document that JS clients are served.

    ``last_sequence`` is the last stream sequence of the document fed (what a snapshot publish
    expects), ``active_sequence`` where the active snapshot's message ends (what an update on
    it expects).
    """

    def __init__(
        self,
        doc_id: str,
        subjects: Subjects,
        *,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        max_held: int = DEFAULT_MAX_HELD,
        max_fates: int = DEFAULT_MAX_FATES,
    ) -> None:
        self.doc_id = doc_id
        self.subjects = subjects
        self._max_message_bytes = max_message_bytes
        self._max_held = max_held
        self._max_fates = max_fates
        self.active: Snapshot | None = None
        self.active_sequence = 0
        self.last_sequence = 0
        self.chain: list[ProofChainEntry] = []
        """Every snapshot taken, oldest first (the active one last)."""
        self._chain_index: dict[bytes, int] = {}
        self._clocks: dict[bytes, int] = {}
        self.updates: list[Update] = []
        """The gap-free updates of the active snapshot, in the order released."""
        self._held: dict[tuple[bytes, int], tuple[int, Update]] = {}
        self._fates: OrderedDict[int, ViewEvent] = OrderedDict()
        self._reassembler = Reassembler(max_bytes=max_message_bytes)

    # --- reading ------------------------------------------------------------------------------

    @property
    def clocks(self) -> Mapping[bytes, int]:
        """Last released clock per author on the active snapshot."""
        return MappingProxyType(self._clocks)

    @property
    def held(self) -> int:
        return len(self._held)

    def chain_index(self) -> Mapping[bytes, int]:
        """Where each snapshot taken stands in :attr:`chain`."""
        return MappingProxyType(self._chain_index)

    def knows(self, snapshot_id: bytes) -> bool:
        return snapshot_id in self._chain_index

    def chain_after(self, snapshot_id: bytes | None) -> list[ProofChainEntry] | None:
        """The proof chain from after ``snapshot_id`` up to the active snapshot, oldest first
        (empty when it is the active one), or None when the view does not know it."""
        if snapshot_id is None:
            return None
        index = self._chain_index.get(snapshot_id)
        if index is None:
            return None
        return self.chain[index + 1 :]

    def updates_after(self, clocks: Mapping[bytes, int] | None) -> list[Update]:
        """The active snapshot's updates after ``clocks`` (all of them for None), in order."""
        if not clocks:
            return list(self.updates)
        return [u for u in self.updates if u.clock > clocks.get(u.author, -1)]

    def fate(self, sequence: int) -> ViewEvent | None:
        """What became of the message stored (ending) at ``sequence``, if still remembered."""
        return self._fates.get(sequence)

    # --- feeding ------------------------------------------------------------------------------

    def begin(self, snapshot: Snapshot, sequence: int) -> list[ViewEvent]:
        """Start from ``snapshot``, stored (ending) at ``sequence``: what the Python load search
        (:mod:`secsync.protocol.stream_search`) chose, for a view that does not read the stream
        from its start; feed it what is stored after ``sequence``. Only its signature and
        document are checked: the chain before it is not known (clients that know an older
        snapshot get an empty proof chain)."""
        if self.active is not None or self.last_sequence:
            raise ValueError("the view has been fed already")
        out: list[ViewEvent] = []
        problem = snapshot_problem(snapshot, self.doc_id, None, {})
        self.last_sequence = sequence
        if problem is not None:
            self._note(out, Dropped(sequence, problem, snapshot))
        else:
            self._snapshot(snapshot, sequence, out)
        return out

    def feed(self, stored: Iterable[StoredMessage]) -> list[ViewEvent]:
        """Stored messages of the document in stream order (redeliveries are skipped)."""
        out: list[ViewEvent] = []
        for message in stored:
            if message.sequence <= self.last_sequence:
                continue
            self.last_sequence = message.sequence
            try:
                data = self._reassembler.feed(message.sequence, message.data, message.headers)
            except SecsyncError as exc:
                self._note(out, Dropped(message.sequence, exc))
                continue
            if data is None:
                continue
            try:
                decoded = wire.decode(data, doc_id=self.doc_id, max_bytes=self._max_message_bytes)
            except SecsyncError as exc:
                self._note(out, Dropped(message.sequence, exc))
                continue
            if isinstance(decoded, Snapshot):
                self._snapshot(decoded, message.sequence, out)
            elif isinstance(decoded, Update):
                self._update(decoded, message.sequence, out)
            else:
                self._note(
                    out,
                    Dropped(message.sequence, MalformedMessageError("ephemeral message stored")),
                )
        return out

    def _note(self, out: list[ViewEvent], event: ViewEvent) -> None:
        if isinstance(event, Dropped):
            log.debug("stored_message_dropped", sequence=event.sequence, code=event.error.code)
        out.append(event)
        self._fates[event.sequence] = event
        while len(self._fates) > self._max_fates:
            self._fates.popitem(last=False)

    def _snapshot(self, snapshot: Snapshot, sequence: int, out: list[ViewEvent]) -> None:
        problem = snapshot_problem(
            snapshot, self.doc_id, self.active, self._clocks, self._chain_index
        )
        if problem is not None:
            self._note(out, Dropped(sequence, problem, snapshot))
            return
        self.active = snapshot
        self.active_sequence = sequence
        self._chain_index[snapshot.snapshot_id] = len(self.chain)
        self.chain.append(ProofChainEntry.of(snapshot))
        self._clocks = {}
        self.updates = []
        for held_sequence, held in sorted(self._held.values(), key=lambda item: item[0]):
            self._note(
                out,
                Dropped(held_sequence, UpdateClockGapError("predecessor never stored"), held),
            )
        self._held.clear()
        self._note(out, Released(snapshot, sequence))

    def _update(self, update: Update, sequence: int, out: list[ViewEvent]) -> None:
        problem = update_problem(update, self.doc_id, self.active, self._clocks)
        if isinstance(problem, UpdateClockGapError):
            key = (update.author, update.clock)
            if key in self._held:
                self._note(out, Dropped(sequence, UpdateReplayError("clock held already"), update))
            elif len(self._held) >= self._max_held:
                self._note(out, Dropped(sequence, problem, update))
            else:
                self._held[key] = (sequence, update)
            return
        if problem is not None:
            self._note(out, Dropped(sequence, problem, update))
            return
        self._take(update, sequence, out)
        author = update.author
        while (nxt := self._held.pop((author, self._clocks[author] + 1), None)) is not None:
            self._take(nxt[1], nxt[0], out)

    def _take(self, update: Update, sequence: int, out: list[ViewEvent]) -> None:
        self._clocks[update.author] = update.clock
        self.updates.append(update)
        self._note(out, Released(update, sequence))
