"""The session's own writing: local changes not sealed yet, messages handed out and not known
to be stored, what the broker confirmed, and its acknowledgements.

Every local change is in exactly one place until a snapshot the broker stored includes it:
``pending`` (not sealed), an update in flight, refused or confirmed, or the snapshot in flight.
:class:`Outbox` holds those places and moves changes between them; the session decides when.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from secsync.protocol.messages import Message, Snapshot, Update
from secsync.protocol.state import SentSnapshot, SentUpdate, SessionState


@dataclass(slots=True)
class UpdateInFlight:
    """An update of ours handed out for sending, with the changes it carries."""

    message: Update
    changes: list[bytes]


@dataclass(slots=True)
class SnapshotInFlight:
    """A snapshot of ours handed out for sending, with the changes it includes and its key."""

    message: Snapshot
    changes: list[bytes]
    key: bytes


class Outbox:
    """Local changes and our messages until the broker is known to store them."""

    __slots__ = (
        "confirmed",
        "in_flight",
        "local_clock",
        "pending",
        "refused",
        "replies",
        "snapshot",
    )

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        """Local changes not sealed yet, in order."""
        self.local_clock = -1
        """The clock of our last update sealed (or seen stored) on the active snapshot."""
        self.in_flight: OrderedDict[int, UpdateInFlight] = OrderedDict()
        self.confirmed: dict[int, list[bytes]] = {}
        """Confirmed updates of ours on the active snapshot, until a snapshot includes them."""
        self.snapshot: SnapshotInFlight | None = None
        self.refused: OrderedDict[int, UpdateInFlight] = OrderedDict()
        """Updates of ours the broker refused for good: the active snapshot is no longer the
        document's latest, and nothing more is written on it."""
        self.replies: list[Message] = []
        """Handshake replies to send first (ephemeral messages)."""

    # --- reading -----------------------------------------------------------------------------

    @property
    def unacknowledged(self) -> int:
        return len(self.in_flight) + (1 if self.snapshot is not None else 0)

    @property
    def settled(self) -> bool:
        """Nothing pending, in flight or refused."""
        return (
            not self.pending and not self.in_flight and not self.refused and self.snapshot is None
        )

    def sent_updates(self) -> list[tuple[int, UpdateInFlight]]:
        """Updates sent and not stored (in flight or refused), in clock order."""
        return sorted([*self.in_flight.items(), *self.refused.items()], key=lambda i: i[0])

    def kept(self) -> list[bytes]:
        """Every change not known to be stored, in order."""
        kept: list[bytes] = []
        if self.snapshot is not None:
            kept.extend(self.snapshot.changes)
        for _, flight in self.sent_updates():
            kept.extend(flight.changes)
        kept.extend(self.pending)
        return kept

    def unacknowledged_messages(self) -> list[Message]:
        if self.snapshot is not None:
            return [self.snapshot.message]
        return [flight.message for _, flight in self.sent_updates()]

    def own_updates(self) -> list[tuple[int, list[bytes]]]:
        """Our updates on the active snapshot, confirmed, in flight or refused, by clock."""
        own = [(clock, changes) for clock, changes in self.confirmed.items()]
        own += [(clock, flight.changes) for clock, flight in self.sent_updates()]
        own.sort(key=lambda item: item[0])
        return own

    def carry_over(self, included: int) -> list[bytes]:
        """Changes a snapshot that includes our clocks up to ``included`` may lack."""
        carried: list[bytes] = []
        for clock in sorted(self.confirmed):
            if clock > included:
                carried.extend(self.confirmed[clock])
        for clock, flight in self.in_flight.items():
            if clock > included:
                carried.extend(flight.changes)
        for flight in self.refused.values():  # refused: not stored, whatever the clock
            carried.extend(flight.changes)
        if self.snapshot is not None:
            carried.extend(self.snapshot.changes)
        return carried

    def carry_over_all(self) -> list[bytes]:
        """Every change of ours written on the active snapshot or in flight (rewind)."""
        carried: list[bytes] = []
        for clock in sorted(self.confirmed):
            carried.extend(self.confirmed[clock])
        for _, flight in self.sent_updates():
            carried.extend(flight.changes)
        if self.snapshot is not None:
            carried.extend(self.snapshot.changes)
        return carried

    # --- writing -----------------------------------------------------------------------------

    def batches(self, limit: int) -> list[list[bytes]]:
        """Take every pending change, in batches of up to ``limit`` bytes (one change larger
        than that alone)."""
        batches: list[list[bytes]] = [[]]
        size = 0
        for change in self.pending:
            if batches[-1] and size + len(change) > limit:
                batches.append([])
                size = 0
            batches[-1].append(change)
            size += len(change)
        self.pending = []
        return batches

    def snapshot_sealed(self, snapshot: Snapshot, key: bytes) -> None:
        """A snapshot of ours with every pending change was handed out."""
        self.snapshot = SnapshotInFlight(snapshot, self.pending, key)
        self.pending = []

    def take_snapshot(self, snapshot_id: bytes) -> SnapshotInFlight | None:
        """The snapshot in flight if it is ``snapshot_id``, no longer in flight."""
        flight = self.snapshot
        if flight is None or flight.message.snapshot_id != snapshot_id:
            return None
        self.snapshot = None
        return flight

    def take_update(self, clock: int) -> UpdateInFlight | None:
        """Our update at ``clock``, in flight or refused, no longer held as either."""
        return self.in_flight.pop(clock, None) or self.refused.pop(clock, None)

    def resend_refused(self) -> list[Update]:
        refused, self.refused = sorted(self.refused.items()), OrderedDict()
        self.in_flight.update(refused)
        return [flight.message for _, flight in refused]

    def new_base(self, carried: list[bytes], snapshot: Snapshot) -> None:
        """A snapshot became the active one: nothing of ours is on it yet but ``carried``
        (queued first) and, if it is the snapshot in flight, that one."""
        self.confirmed = {}
        self.in_flight = OrderedDict()
        self.refused = OrderedDict()
        self.local_clock = -1
        if self.snapshot is not None and self.snapshot.message is not snapshot:
            self.snapshot = None
        self.pending[:0] = carried

    def start_over(self) -> None:
        """Forget every message written (their changes were carried over first)."""
        self.confirmed = {}
        self.in_flight = OrderedDict()
        self.refused = OrderedDict()
        self.snapshot = None
        self.local_clock = -1

    # --- persistence ---------------------------------------------------------------------------

    def restore(self, state: SessionState, snapshot_key: bytes | None) -> None:
        """Take what ``state`` saved (the pending changes before any already queued)."""
        self.local_clock = state.local_clock
        self.pending = list(state.pending) + self.pending
        self.in_flight = OrderedDict(
            (f.message.clock, UpdateInFlight(f.message, list(f.changes))) for f in state.in_flight
        )
        self.confirmed = {clock: list(changes) for clock, changes in state.confirmed}
        flight = state.snapshot_in_flight
        if flight is not None:
            assert snapshot_key is not None
            self.snapshot = SnapshotInFlight(flight.message, list(flight.changes), snapshot_key)

    def sent_state(self) -> tuple[tuple[SentUpdate, ...], SentSnapshot | None]:
        updates = tuple(SentUpdate(f.message, tuple(f.changes)) for _, f in self.sent_updates())
        snapshot = (
            None
            if self.snapshot is None
            else SentSnapshot(self.snapshot.message, tuple(self.snapshot.changes))
        )
        return updates, snapshot
