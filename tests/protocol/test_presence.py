import msgpack
import pytest

from secsync.errors import PresenceImpersonationError, PresenceParseError
from secsync.protocol.events import PresenceChanged
from secsync.protocol.presence import PresenceTracker, decode_presence, encode_presence

A, B, ME = b"a" * 32, b"b" * 32, b"m" * 32


def test_states_appear_change_and_leave() -> None:
    tracker = PresenceTracker(ME, timeout=5)
    assert tracker.receive(A, encode_presence(1, {"cursor": 3}, 7), now=0) == [
        PresenceChanged(A, {"cursor": 3}, 7)
    ]
    assert tracker.receive(A, encode_presence(2, {"cursor": 3}, 7), now=1) == []  # unchanged
    assert tracker.receive(A, encode_presence(3, {"cursor": 4}, 7), now=2)[0].state == {"cursor": 4}
    assert tracker.states == {A: {"cursor": 4}}
    assert tracker.receive(A, encode_presence(4, None, 7), now=3) == [PresenceChanged(A, None, 7)]
    assert tracker.states == {}


def test_stale_clock_is_ignored() -> None:
    tracker = PresenceTracker(ME)
    tracker.receive(A, encode_presence(5, "new", None), now=0)
    assert tracker.receive(A, encode_presence(4, "old", None), now=1) == []
    assert tracker.states == {A: "new"}


def test_silent_peer_expires_within_the_timeout() -> None:
    tracker = PresenceTracker(ME, timeout=5)
    tracker.receive(A, encode_presence(1, "x", 9), now=10)
    tracker.receive(B, encode_presence(1, "y", None), now=12)
    assert tracker.next_expiry() == 15
    assert tracker.expire(14.9) == []
    assert tracker.expire(15) == [PresenceChanged(A, None, 9, timed_out=True)]
    assert tracker.states == {B: "y"}
    # the expired client id is free again
    assert tracker.receive(B, encode_presence(2, "y", 9), now=16)


def test_nobody_can_claim_another_participants_cursor() -> None:
    tracker = PresenceTracker(ME)
    tracker.receive(A, encode_presence(1, {"cursor": 1}, 42), now=0)
    with pytest.raises(PresenceImpersonationError):
        tracker.receive(B, encode_presence(1, {"cursor": 99}, 42), now=1)
    assert tracker.states == {A: {"cursor": 1}}


def test_own_echo_ignored_and_bad_payloads_rejected() -> None:
    tracker = PresenceTracker(ME)
    assert tracker.receive(ME, encode_presence(1, "me", None), now=0) == []
    bad = [
        b"\xc1",
        msgpack.packb({"c": 1}),
        msgpack.packb({"c": -1, "s": None, "y": None}),
        msgpack.packb({"c": 1, "s": 1.5, "y": None}),
        msgpack.packb({"c": 1, "s": None, "y": "x"}),
        b"\x00" * 70_000,
    ]
    for payload in bad:
        with pytest.raises(PresenceParseError):
            decode_presence(payload)
