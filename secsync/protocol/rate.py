"""Per-key token buckets: how often each peer or author may have something done for it."""

from __future__ import annotations

from collections import OrderedDict


class TokenBuckets:
    """A bucket of ``burst`` tokens per key, refilled at ``per_second``; each :meth:`take`
    spends one. At most ``max_keys`` keys are remembered (the least recently used is
    forgotten, and starts full again), so a flood of fresh keys costs bounded memory."""

    __slots__ = ("_buckets", "burst", "max_keys", "per_second")

    def __init__(self, *, burst: float, per_second: float, max_keys: int) -> None:
        self.burst = burst
        self.per_second = per_second
        self.max_keys = max_keys
        # key -> (tokens left, when counted)
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def take(self, key: bytes, now: float) -> bool:
        """Whether ``key`` has a token at ``now`` (then spent)."""
        tokens, since = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - since) * self.per_second)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed
