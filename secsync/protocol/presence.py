"""Presence (cursors, user state) over ephemeral messages. Pure: no I/O, time is passed in.

A presence payload is msgpack ``{"c": clock, "s": state | None, "y": yjs_client_id | None}``
inside an ephemeral message, so it is encrypted, signed and replay-protected by the ephemeral
session layer. ``state`` is any JSON-compatible value; ``None`` means "I left".

Rules on receipt, per author (public key):

* a clock that is not above the author's last one is ignored (a stale or reordered state);
* a Yjs client id belongs to the first author that claimed it; another author claiming it is
  rejected, so nobody can move someone else's cursor (``PresenceImpersonationError``);
* an author silent for ``timeout`` seconds is removed: ``PresenceChanged(author, None)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from secsync.errors import PresenceImpersonationError, PresenceParseError
from secsync.protocol.encoding import (
    MAX_SAFE_INTEGER,
    check_json_value,
    check_msgpack_structure,
)
from secsync.protocol.events import PresenceChanged

MAX_PRESENCE_BYTES = 64 * 1024


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


class PresenceTracker:
    """Remote presence states by author, with expiry and Yjs client id ownership."""

    def __init__(self, me: bytes, *, timeout: float = 15.0) -> None:
        self.me = me
        self.timeout = timeout
        self._peers: dict[bytes, _Peer] = {}
        self._owners: dict[int, bytes] = {}
        self.clock = 0
        self.local_state: Any = None
        self.local_yjs_client_id: int | None = None

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
        if peer is not None and peer.yjs_client_id not in (None, yjs):
            self._owners.pop(peer.yjs_client_id, None)
        if yjs is not None:
            self._owners[yjs] = author
        if state is None:
            self._peers.pop(author, None)
            if yjs is not None:
                self._owners.pop(yjs, None)
            return [PresenceChanged(author, None, yjs)] if peer is not None else []
        changed = peer is None or peer.state != state or peer.yjs_client_id != yjs
        self._peers[author] = _Peer(clock, state, yjs, now)
        return [PresenceChanged(author, state, yjs)] if changed else []

    def expire(self, now: float) -> list[PresenceChanged]:
        """Remove peers not heard from within ``timeout`` (no ghost cursors)."""
        gone = [a for a, p in self._peers.items() if now - p.last_seen >= self.timeout]
        events = []
        for author in gone:
            peer = self._peers.pop(author)
            if peer.yjs_client_id is not None:
                self._owners.pop(peer.yjs_client_id, None)
            events.append(PresenceChanged(author, None, peer.yjs_client_id, timed_out=True))
        return events

    def clock_of(self, author: bytes) -> int:
        peer = self._peers.get(author)
        return peer.clock if peer is not None else 0

    def next_expiry(self) -> float | None:
        return min((p.last_seen + self.timeout for p in self._peers.values()), default=None)

    def yjs_states(self) -> Mapping[int, Any]:
        return {
            p.yjs_client_id: p.state for p in self._peers.values() if p.yjs_client_id is not None
        }
