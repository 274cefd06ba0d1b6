"""How many snapshots of one author a session checks and applies: a token bucket per author,
with the author's newest snapshot held while the bucket is empty. Pure: no I/O, time is passed in.

A snapshot costs its receivers a signature check over the whole message, a decryption and a
CRDT load of the whole state; an update costs a small fraction of that. A member (or anyone
who may publish on the document's subjects, under an author key of their own) who writes
snapshots as fast as the broker stores them would make every online client spend that on
each one. Honest clients write a snapshot after hundreds of updates or a membership change.

* Each author has a bucket of ``burst`` tokens that refills at ``per_minute`` per minute; a
  snapshot takes a token before anything about it is checked.
* Without a token the snapshot is **held**, not dropped: at most one per author, the newest
  (later in the stream). A snapshot it replaces is dropped and reported
  (:class:`~secsync.errors.SnapshotRateError`, 118). When a token is back, the held one is
  processed, so an author's latest snapshot is always taken in the end: coalescing to the
  latest, as presence does with cursor states. A snapshot of an author whose earlier
  snapshots were dropped may no longer be a child of what the receiver holds; the session then
  takes it as it takes a recovery (merged, what it lacks sent again), see
  :attr:`Held.skipped`.
* What is tracked is bounded: ``max_authors`` buckets (full ones are forgotten first, they
  hold no state worth keeping) and ``max_held`` held snapshots (the oldest held is dropped).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from secsync.protocol.messages import Snapshot


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True, slots=True)
class Held:
    """A held snapshot, due now (:meth:`SnapshotRate.due`)."""

    snapshot: Snapshot
    skipped: bool
    """Earlier snapshots of the same author were dropped in its favour."""


class SnapshotRate:
    """Per-author token buckets for snapshots, and the snapshots held while one is empty."""

    __slots__ = ("_buckets", "_held", "burst", "dropped", "max_authors", "max_held", "per_second")

    def __init__(
        self, *, per_minute: float, burst: int, max_authors: int = 1000, max_held: int = 16
    ) -> None:
        self.per_second = per_minute / 60.0
        self.burst = max(1, burst)
        self.max_authors = max(1, max_authors)
        self.max_held = max(1, max_held)
        self.dropped = 0
        """Snapshots dropped unread (replaced by a newer held one of the same author)."""
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()
        self._held: OrderedDict[bytes, Held] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    @property
    def held(self) -> int:
        """Snapshots held now."""
        return len(self._held)

    def _bucket(self, author: bytes, now: float) -> _Bucket:
        bucket = self._buckets.get(author)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[author] = bucket
            self._forget(author)
        else:
            elapsed = max(0.0, now - bucket.at)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
            bucket.at = now
            self._buckets.move_to_end(author)
        return bucket

    def _forget(self, keep: bytes) -> None:
        while len(self._buckets) > self.max_authors:
            others = [a for a in self._buckets if a != keep]
            full = (a for a in others if self._buckets[a].tokens >= self.burst)
            victim = next((a for a in full if a not in self._held), others[0])
            del self._buckets[victim]
            self._held.pop(victim, None)

    def admit(self, snapshot: Snapshot, now: float) -> tuple[bool, list[Snapshot]]:
        """Whether ``snapshot`` may be processed now (a token taken). If not, it is held, and
        what it replaced (or pushed out of the bounded hold) is returned, dropped.

        An author with a snapshot held waits behind it: a newer one replaces it (the newest
        wins), never overtakes it through a token that just came back."""
        if not self.enabled:
            return True, []
        author = snapshot.author
        bucket = self._bucket(author, now)
        if author not in self._held and bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True, []
        dropped: list[Snapshot] = []
        previous = self._held.pop(author, None)
        if previous is not None:
            dropped.append(previous.snapshot)
        self._held[author] = Held(snapshot, skipped=previous is not None)
        while len(self._held) > self.max_held:
            _author, oldest = self._held.popitem(last=False)
            dropped.append(oldest.snapshot)
        self.dropped += len(dropped)
        return False, dropped

    def due(self, now: float) -> list[Held]:
        """Held snapshots whose author has a token again (taken), oldest held first."""
        out: list[Held] = []
        for author in list(self._held):
            bucket = self._bucket(author, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                out.append(self._held.pop(author))
        return out

    def next_deadline(self) -> float | None:
        """When the first held snapshot becomes due (``now`` terms), or ``None``."""
        if not self._held or not self.enabled:
            return None
        times = []
        for author in self._held:
            bucket = self._buckets.get(author)
            if bucket is None:
                continue
            missing = max(0.0, 1.0 - bucket.tokens)
            times.append(bucket.at + missing / self.per_second)
        return min(times, default=None)

    def clear(self) -> None:
        """Forget what is held (a reload or rewind starts over from the stream)."""
        self._held.clear()
