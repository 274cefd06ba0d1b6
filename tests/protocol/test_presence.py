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
    # the expired client id stays A's: nobody squats a silent owner's cursor
    with pytest.raises(PresenceImpersonationError):
        tracker.receive(B, encode_presence(2, "y", 9), now=16)
    assert tracker.receive(A, encode_presence(2, "back", 9), now=17)  # its owner may return


def test_a_flooding_peer_costs_one_state_per_interval_and_the_latest_wins() -> None:
    tracker = PresenceTracker(ME, timeout=5, min_interval=0.04)
    assert tracker.receive(A, encode_presence(1, {"n": 1}, None), now=0.0)
    taken = []
    for i in range(2, 202):  # 200 states within 20 ms
        taken += tracker.receive(A, encode_presence(i, {"n": i}, None), now=0.0001 * i)
    assert taken == []  # none taken early
    assert tracker.next_expiry() == pytest.approx(0.04)
    assert tracker.expire(0.039) == []
    assert tracker.expire(0.04) == [PresenceChanged(A, {"n": 201}, None)]
    assert tracker.states == {A: {"n": 201}}


def test_a_large_presence_payload_is_refused_unread() -> None:
    tracker = PresenceTracker(ME, max_bytes=4096)
    with pytest.raises(PresenceParseError, match="4096"):
        tracker.receive(A, encode_presence(1, "x" * 5000, None), now=0)
    assert tracker.states == {}


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
