"""Per-author order of received updates: what waits for a predecessor, what waits for a
snapshot not received yet, the memory bound on both, and when a gap is worth reporting.

Updates of one author apply in clock order on the active snapshot. A verified update whose
predecessor has not arrived waits in its author's :class:`AuthorQueue`; one that names a
snapshot not known yet is deferred until that snapshot is applied. :class:`UpdateQueues` holds
both within :class:`~secsync.protocol.budget.QueueBudget` and reports gaps that stay open
(:class:`~secsync.protocol.events.GapDetected` first, then
:class:`~secsync.protocol.events.RecoveryNeeded`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from secsync.config import SecsyncConfig
from secsync.errors import UpdateQueueFullError
from secsync.logs import Logger
from secsync.protocol.budget import QueueBudget
from secsync.protocol.encoding import b64encode
from secsync.protocol.events import Event, GapDetected, RecoveryNeeded
from secsync.protocol.messages import Update


def held_size(update: Update) -> int:
    """What a waiting update costs the budget: its ciphertext, the bulk of what is held."""
    return len(update.ciphertext) + 256


@dataclass(slots=True)
class AuthorQueue:
    """Verified updates of one author that wait for their predecessor."""

    updates: dict[int, Update] = field(default_factory=dict)
    twins: dict[int, list[Update]] = field(default_factory=dict)
    """Other updates with a clock that waits already (an identity used by two clients)."""
    since: float = 0.0
    refetch_asked: bool = False
    recovery_asked: bool = False


class UpdateQueues:
    """Updates held until they can apply: per author (a gap) and per unknown snapshot."""

    __slots__ = (
        "budget",
        "config",
        "deferred",
        "deferred_count",
        "deferred_recovery_asked",
        "deferred_since",
        "waiting",
    )

    def __init__(self, config: SecsyncConfig) -> None:
        self.config = config
        self.budget = QueueBudget(
            per_author=config.max_queued_bytes_per_author,
            total=config.max_queued_bytes,
            authors=config.max_waiting_authors,
        )
        self.waiting: dict[bytes, AuthorQueue] = {}
        self.deferred: dict[bytes, list[Update]] = {}
        """Updates naming a snapshot not received yet, by its id."""
        self.deferred_count = 0
        self.deferred_since = 0.0
        self.deferred_recovery_asked = False

    # --- waiting for a predecessor -----------------------------------------------------------

    def any_waiting(self) -> bool:
        return any(w.updates for w in self.waiting.values())

    def enqueue(self, update: Update, now: float) -> None:
        """Hold ``update`` until its predecessor applies (``UpdateQueueFullError`` beyond the
        author's count, ``QueueBudget``'s errors beyond the bytes)."""
        waiting = self.waiting.get(update.author)
        twin = waiting is not None and update.clock in waiting.updates
        if twin:
            assert waiting is not None
            if update == waiting.updates[update.clock] or update in waiting.twins.get(
                update.clock, ()
            ):
                return  # the same message twice while waiting
        if waiting is not None and (
            len(waiting.updates) + sum(map(len, waiting.twins.values()))
            >= self.config.max_queued_updates_per_author
        ):
            raise UpdateQueueFullError(
                f"{len(waiting.updates)} updates of this author already wait for a gap"
            )
        self.budget.admit(update.author, held_size(update))
        if waiting is None:
            waiting = self.waiting[update.author] = AuthorQueue(since=now)
        if twin:  # another update with the same clock: applied as a collision after it
            waiting.twins.setdefault(update.clock, []).append(update)
            return
        if not waiting.updates:
            waiting.since = now
            waiting.refetch_asked = waiting.recovery_asked = False
        waiting.updates[update.clock] = update

    def take(self, waiting: AuthorQueue, clock: int) -> tuple[Update, list[Update]] | None:
        """The update of ``waiting`` at ``clock`` and its twins, no longer held."""
        following = waiting.updates.pop(clock, None)
        if following is None:
            return None
        twins = waiting.twins.pop(clock, [])
        release = self.budget.release
        release(following.author, held_size(following))
        for update in twins:
            release(update.author, held_size(update))
        return following, twins

    def take_up_to(self, author: bytes, clock: int) -> list[Update]:
        """Every held update of ``author`` at or below ``clock`` (twins too), by clock."""
        waiting = self.waiting.get(author)
        if waiting is None:
            return []
        taken: list[Update] = []
        for stale in [c for c in waiting.updates if c <= clock]:
            update = waiting.updates.pop(stale)
            for held in (update, *waiting.twins.pop(stale, [])):
                self.budget.release(held.author, held_size(held))
                taken.append(held)
        return taken

    def clear_waiting(self) -> None:
        """Drop every update waiting for a predecessor (they built on the old snapshot)."""
        for waiting in self.waiting.values():
            for update in itertools.chain(waiting.updates.values(), *waiting.twins.values()):
                self.budget.release(update.author, held_size(update))
        self.waiting.clear()

    # --- waiting for a snapshot ----------------------------------------------------------------

    def defer(self, update: Update, now: float) -> None:
        if self.deferred_count >= self.config.max_deferred_updates:
            raise UpdateQueueFullError("too many updates wait for an unknown snapshot")
        self.budget.admit(update.author, held_size(update))
        if not self.deferred:
            self.deferred_since = now
            self.deferred_recovery_asked = False
        self.deferred.setdefault(update.public_data.ref_snapshot_id, []).append(update)
        self.deferred_count += 1

    def take_deferred(self, snapshot_id: bytes) -> list[Update]:
        deferred = self.deferred.pop(snapshot_id, [])
        self.deferred_count -= len(deferred)
        for update in deferred:
            self.budget.release(update.author, held_size(update))
        return deferred

    # --- timers ------------------------------------------------------------------------------

    def due(
        self, now: float, snapshot_id: bytes | None, clocks: dict[bytes, int], log: Logger
    ) -> list[Event]:
        """Gaps that stayed open too long (``snapshot_id`` and ``clocks``: the active
        snapshot's, ``None`` without one)."""
        events: list[Event] = []
        cfg = self.config
        if (
            self.deferred
            and not self.deferred_recovery_asked
            and now - self.deferred_since >= cfg.gap_recover_after
        ):
            # updates name a snapshot that never arrived (lost, or refused on the way)
            self.deferred_recovery_asked = True
            log.warning("snapshot_missing", waiting=self.deferred_count)
            events.append(RecoveryNeeded("updates wait for a snapshot that never arrived"))
        if snapshot_id is None:
            return events
        for author, waiting in self.waiting.items():
            if not waiting.updates:
                continue
            age = now - waiting.since
            if age >= cfg.gap_recover_after and not waiting.recovery_asked:
                waiting.recovery_asked = True
                log.warning(
                    "gap_unfilled", author=b64encode(author)[:8], queued=len(waiting.updates)
                )
                events.append(RecoveryNeeded(f"updates of {b64encode(author)} never arrived"))
            elif age >= cfg.gap_refetch_after and not waiting.refetch_asked:
                waiting.refetch_asked = True
                expected = clocks.get(author, -1) + 1
                log.info("gap_detected", author=b64encode(author)[:8], expected=expected)
                events.append(GapDetected(snapshot_id, author, expected, len(waiting.updates)))
        return events

    def deadlines(self) -> list[float]:
        """When :meth:`due` has something to report."""
        cfg = self.config
        deadlines = []
        if self.deferred and not self.deferred_recovery_asked:
            deadlines.append(self.deferred_since + cfg.gap_recover_after)
        for waiting in self.waiting.values():
            if not waiting.updates or waiting.recovery_asked:
                continue
            delay = cfg.gap_recover_after if waiting.refetch_asked else cfg.gap_refetch_after
            deadlines.append(waiting.since + delay)
        return deadlines
