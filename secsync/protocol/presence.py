"""Presence (cursors, user state) over ephemeral messages. Pure: no I/O, time is passed in.

A presence payload is msgpack ``{"c": clock, "s": state | None, "y": yjs_client_id | None}``
inside an ephemeral message, so it is encrypted, signed and replay-protected by the ephemeral
session layer. ``state`` is any JSON-compatible value; ``None`` means "I left".

Rules on receipt, per author (public key):

* a clock that is not above the author's last one is ignored (a stale or reordered state);
* a Yjs client id belongs to the first author that claimed it, for as long as the tracker
  lives (not only while the author is present): another author claiming it is rejected, so
  nobody can move someone else's cursor, nor take it over while its owner is silent
  (``PresenceImpersonationError``);
* a payload over ``max_bytes`` is refused before it is decoded;
* an author's states are taken at most once per ``min_interval``: what arrives faster is
  coalesced, the latest state wins and is taken when the interval has passed
  (:meth:`PresenceTracker.expire`), so a flooding peer costs one state per interval;
* an author silent for ``timeout`` seconds is removed: ``PresenceChanged(author, None)``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from secsync.errors import PresenceImpersonationError, PresenceParseError, SecsyncError
from secsync.protocol.encoding import (
    MAX_SAFE_INTEGER,
    check_json_value,
    check_msgpack_structure,
)
from secsync.protocol.events import PresenceChanged

MAX_PRESENCE_BYTES = 64 * 1024
MAX_OWNED_CLIENT_IDS = 100_000


@dataclass(slots=True)
class _Peer:
    clock: int
    state: Any
    yjs_client_id: int | None
    last_seen: float


def encode_presence(clock: int, state: Any, yjs_client_id: int | None = None) -> bytes:
    check_json_value(state)
    packed: bytes = msgpack.packb({"c": clock, "s": state, "y": yjs_client_id}, use_bin_type=True)
    return packed


def decode_presence(payload: bytes) -> tuple[int, Any, int | None]:
    if len(payload) > MAX_PRESENCE_BYTES:
        raise PresenceParseError("presence payload too large")
    try:
        check_msgpack_structure(payload)
        obj = msgpack.unpackb(
            payload,
            raw=False,
            max_bin_len=0,
            max_ext_len=0,
            max_str_len=MAX_PRESENCE_BYTES,
            max_array_len=len(payload),
            max_map_len=len(payload) // 2,
        )
    except Exception as exc:
        raise PresenceParseError("presence payload is not msgpack") from exc
    if not isinstance(obj, dict) or set(obj) != {"c", "s", "y"}:
        raise PresenceParseError("presence payload has the wrong fields")
    clock, state, yjs = obj["c"], obj["s"], obj["y"]
    if type(clock) is not int or not 0 <= clock <= MAX_SAFE_INTEGER:
        raise PresenceParseError("presence clock must be a non-negative integer")
    if yjs is not None and (type(yjs) is not int or not 0 <= yjs < 2**53):
        raise PresenceParseError("Yjs client id must be a non-negative integer")
    try:
        check_json_value(state)
    except Exception as exc:
        raise PresenceParseError("presence state is not a JSON value") from exc
    return clock, state, yjs


def _no_user(author: bytes) -> bytes | None:
    return None


class PresenceTracker:
    """Remote presence states by author, with expiry and Yjs client id ownership."""

    def __init__(
        self,
        me: bytes,
        *,
        timeout: float = 15.0,
        max_bytes: int = MAX_PRESENCE_BYTES,
        min_interval: float = 0.0,
    ) -> None:
        self.me = me
        self.timeout = timeout
        self.max_bytes = min(max_bytes, MAX_PRESENCE_BYTES)
        self.min_interval = min_interval
        self._peers: dict[bytes, _Peer] = {}
        self._owners: OrderedDict[int, bytes] = OrderedDict()
        self._taken: dict[bytes, float] = {}  # author -> when a state of theirs was last taken
        self._held: dict[bytes, bytes] = {}  # author -> latest payload that came too soon
        self.clock = 0
        self.local_state: Any = None
        self.local_yjs_client_id: int | None = None
        self.user_of: Callable[[bytes], bytes | None] = _no_user
        """The user of a certified device (``None`` for a key that signs as itself): the
        session's ``devices.device_user``, to name users in events."""

    @property
    def states(self) -> dict[bytes, Any]:
        """Current states of the peers present, by public key."""
        return {author: peer.state for author, peer in self._peers.items()}

    def local(self, state: Any, yjs_client_id: int | None = None) -> bytes:
        """Set my state; return the payload to send (every call takes the next clock)."""
        self.clock += 1
        self.local_state = state
        self.local_yjs_client_id = yjs_client_id
        return encode_presence(self.clock, state, yjs_client_id)

    def heartbeat(self) -> bytes:
        """My unchanged state again, so that peers keep me present."""
        return self.local(self.local_state, self.local_yjs_client_id)

    def receive(self, author: bytes, payload: bytes, now: float) -> list[PresenceChanged]:
        """Apply a verified ephemeral payload of ``author``; raise on a bad or hostile one."""
        if author == self.me:
            return []
        if len(payload) > self.max_bytes:
            raise PresenceParseError(f"presence payload over {self.max_bytes} bytes")
        last = self._taken.get(author)
        if last is not None and now - last < self.min_interval:
            self._held[author] = payload  # too soon: the latest waits for the interval
            if author in self._peers:
                self._peers[author].last_seen = max(self._peers[author].last_seen, now)
            return []
        self._held.pop(author, None)
        self._taken[author] = now
        return self._take(author, payload, now)

    def _take(self, author: bytes, payload: bytes, now: float) -> list[PresenceChanged]:
        clock, state, yjs = decode_presence(payload)
        if yjs is not None:
            owner = self._owners.get(yjs)
            if yjs == self.local_yjs_client_id:
                raise PresenceImpersonationError("another participant claimed my Yjs client id")
            if owner is not None and owner != author:
                raise PresenceImpersonationError(
                    "another participant already owns this Yjs client id"
                )
        peer = self._peers.get(author)
        if peer is not None and clock <= peer.clock:
            peer.last_seen = max(peer.last_seen, now)
            return []
        if yjs is not None:
            self._owners[yjs] = author  # sticky: kept after the author leaves or times out
            self._owners.move_to_end(yjs)
            while len(self._owners) > MAX_OWNED_CLIENT_IDS:
                self._owners.popitem(last=False)
        if state is None:
            self._peers.pop(author, None)
            user = self.user_of(author)
            return [PresenceChanged(author, None, yjs, user=user)] if peer is not None else []
        changed = peer is None or peer.state != state or peer.yjs_client_id != yjs
        self._peers[author] = _Peer(clock, state, yjs, now)
        return [PresenceChanged(author, state, yjs, user=self.user_of(author))] if changed else []

    def expire(self, now: float) -> list[PresenceChanged]:
        """Take the coalesced states whose interval has passed, and remove peers not heard
        from within ``timeout`` (no ghost cursors)."""
        events: list[PresenceChanged] = []
        for author in [a for a in self._held if now - self._taken.get(a, now) >= self.min_interval]:
            payload = self._held.pop(author)
            self._taken[author] = now
            # verified, but if it is not a state we take: as if it had not come
            with contextlib.suppress(SecsyncError):
                events += self._take(author, payload, now)
        gone = [a for a, p in self._peers.items() if now - p.last_seen >= self.timeout]
        for author in gone:
            peer = self._peers.pop(author)
            self._taken.pop(author, None)
            events.append(
                PresenceChanged(
                    author, None, peer.yjs_client_id, timed_out=True, user=self.user_of(author)
                )
            )
        return events

    def next_held(self) -> float | None:
        """When a coalesced state is due (in the caller's ``now`` terms)."""
        due = [self._taken.get(a, 0.0) + self.min_interval for a in self._held]
        return min(due, default=None)

    def clock_of(self, author: bytes) -> int:
        peer = self._peers.get(author)
        return peer.clock if peer is not None else 0

    def next_expiry(self) -> float | None:
        """When :meth:`expire` has something to do: a peer to remove or a held state due."""
        expiries = [p.last_seen + self.timeout for p in self._peers.values()]
        held = self.next_held()
        if held is not None:
            expiries.append(held)
        return min(expiries, default=None)

    def yjs_states(self) -> Mapping[int, Any]:
        return {
            p.yjs_client_id: p.state for p in self._peers.values() if p.yjs_client_id is not None
        }
