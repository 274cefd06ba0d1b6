"""secsync.transport.chunks: splitting payloads and reassembling stored parts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secsync.errors import MalformedMessageError
from secsync.transport.chunks import (
    PART_HEADER,
    PARTS_HEADER,
    Reassembler,
    part_headers,
    split,
)


def parts_of(
    payload: bytes, max_part: int, first_sequence: int = 10
) -> list[tuple[int, bytes, dict[str, str]]]:
    pieces = split(payload, max_part)
    n = len(pieces)
    return [(first_sequence + i, piece, part_headers(i + 1, n)) for i, piece in enumerate(pieces)]


def feed_all(
    reassembler: Reassembler, messages: list[tuple[int, bytes, dict[str, str]]]
) -> list[bytes | None]:
    return [reassembler.feed(seq, data, headers) for seq, data, headers in messages]


def state(reassembler: Reassembler) -> tuple[bool, int | None]:
    return reassembler.pending, reassembler.pending_first_sequence


# --- split -------------------------------------------------------------------------------------


def test_split_sizes() -> None:
    assert split(b"", 5) == [b""]
    assert split(b"abc", 5) == [b"abc"]
    assert split(b"abcde", 5) == [b"abcde"]
    assert split(b"abcdef", 5) == [b"abcde", b"f"]
    assert split(b"abcdefghij", 5) == [b"abcde", b"fghij"]
    assert split(b"abc", 1) == [b"a", b"b", b"c"]


@pytest.mark.parametrize("max_part", [0, -1])
def test_split_rejects_bad_part_size(max_part: int) -> None:
    with pytest.raises(ValueError, match="max_part"):
        split(b"abc", max_part)


def test_part_headers() -> None:
    assert part_headers(2, 3) == {PARTS_HEADER: "3", PART_HEADER: "2"}
    with pytest.raises(ValueError):
        part_headers(0, 3)
    with pytest.raises(ValueError):
        part_headers(4, 3)


@given(payload=st.binary(max_size=2000), max_part=st.integers(min_value=1, max_value=300))
def test_split_join_round_trip(payload: bytes, max_part: int) -> None:
    pieces = split(payload, max_part)
    assert b"".join(pieces) == payload
    assert all(len(piece) <= max_part for piece in pieces)
    assert all(pieces[:-1]), "only the last part may be short"
    assert len(pieces) == max(1, -(-len(payload) // max_part))
    reassembler = Reassembler()
    results = feed_all(reassembler, parts_of(payload, max_part))
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] == payload
    assert reassembler.first_sequence == 10
    assert not reassembler.pending


# --- reassembly --------------------------------------------------------------------------------


def test_message_without_headers_is_complete() -> None:
    assert Reassembler().first_sequence is None
    reassembler = Reassembler()
    assert reassembler.feed(4, b"one", None) == b"one"
    assert reassembler.first_sequence == 4
    assert reassembler.feed(5, b"two", {"Nats-Msg-Id": "x"}) == b"two"
    assert reassembler.first_sequence == 5


def test_parts_join_and_report_first_sequence() -> None:
    reassembler = Reassembler()
    assert reassembler.feed(1, b"plain", {}) == b"plain"
    assert reassembler.feed(2, b"ab", part_headers(1, 3)) is None
    assert state(reassembler) == (True, 2)
    assert reassembler.feed(3, b"cd", part_headers(2, 3)) is None
    assert reassembler.feed(4, b"e", part_headers(3, 3)) == b"abcde"
    assert reassembler.first_sequence == 2
    assert state(reassembler) == (False, None)
    # One part out of one is complete by itself.
    assert reassembler.feed(5, b"solo", part_headers(1, 1)) == b"solo"
    assert reassembler.first_sequence == 5


def test_empty_parts_are_allowed() -> None:
    reassembler = Reassembler()
    assert reassembler.feed(1, b"", part_headers(1, 2)) is None
    assert reassembler.feed(2, b"", part_headers(2, 2)) == b""


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        pytest.param(
            [(1, b"a", part_headers(1, 3)), (2, b"c", part_headers(3, 3))],
            "part 3 of 3 where part 2",
            id="index-skips",
        ),
        pytest.param(
            [(1, b"a", part_headers(1, 3)), (2, b"b", part_headers(1, 3))],
            "part 1 of 3 where part 2",
            id="index-repeats",
        ),
        pytest.param(
            [(1, b"a", part_headers(1, 3)), (2, b"b", part_headers(2, 4))],
            "count changed",
            id="count-changes",
        ),
        pytest.param(
            [(1, b"a", part_headers(1, 2)), (3, b"b", part_headers(2, 2))],
            "expected at 2",
            id="sequence-gap",
        ),
        pytest.param(
            [(1, b"a", part_headers(1, 2)), (2, b"b", None)],
            "no part headers",
            id="plain-in-the-middle",
        ),
        pytest.param([(7, b"b", part_headers(2, 2))], "without part 1", id="no-first-part"),
        pytest.param(
            [(1, b"a", {PARTS_HEADER: "2", PART_HEADER: "3"})], "out of range", id="index>count"
        ),
        pytest.param(
            [(1, b"a", {PARTS_HEADER: "2", PART_HEADER: "0"})], "Secsync-Part is", id="index-0"
        ),
        pytest.param(
            [(1, b"a", {PARTS_HEADER: "0", PART_HEADER: "1"})], "Secsync-Parts is", id="count-0"
        ),
        pytest.param([(1, b"a", {PARTS_HEADER: "2"})], "only one", id="index-missing"),
        pytest.param([(1, b"a", {PART_HEADER: "1"})], "only one", id="count-missing"),
        pytest.param([(1, b"a", {PARTS_HEADER: "x", PART_HEADER: "1"})], "decimal", id="non-num"),
        pytest.param([(1, b"a", {PARTS_HEADER: "+2", PART_HEADER: "1"})], "decimal", id="sign"),
        pytest.param([(1, b"a", {PARTS_HEADER: "02", PART_HEADER: "1"})], "decimal", id="zero"),
        pytest.param([(1, b"a", {PARTS_HEADER: " 2", PART_HEADER: "1"})], "decimal", id="space"),
        pytest.param(
            [(1, b"a", {PARTS_HEADER: "\u0662", PART_HEADER: "1"})], "decimal", id="non-ascii"
        ),
    ],
)
def test_inconsistent_parts_raise_and_reset(
    messages: list[tuple[int, bytes, dict[str, str] | None]], match: str
) -> None:
    reassembler = Reassembler()
    *good, (seq, data, headers) = messages
    for good_seq, good_data, good_headers in good:
        assert reassembler.feed(good_seq, good_data, good_headers) is None
    with pytest.raises(MalformedMessageError, match=match):
        reassembler.feed(seq, data, headers)
    assert not reassembler.pending
    # The next message starts clean.
    assert reassembler.feed(100, b"x", part_headers(1, 2)) is None
    assert reassembler.feed(101, b"y", part_headers(2, 2)) == b"xy"
    assert reassembler.first_sequence == 100


def test_offending_message_can_be_fed_again() -> None:
    """The message that revealed an inconsistency is not consumed: feeding it again works."""
    reassembler = Reassembler()
    assert reassembler.feed(1, b"a", part_headers(1, 2)) is None
    with pytest.raises(MalformedMessageError):
        reassembler.feed(2, b"plain", None)
    assert reassembler.feed(2, b"plain", None) == b"plain"

    assert reassembler.feed(3, b"a", part_headers(1, 2)) is None
    with pytest.raises(MalformedMessageError):
        reassembler.feed(4, b"n1", part_headers(1, 2))
    assert reassembler.feed(4, b"n1", part_headers(1, 2)) is None
    assert reassembler.feed(5, b"n2", part_headers(2, 2)) == b"n1n2"
    assert reassembler.first_sequence == 4


def test_part_count_bound() -> None:
    reassembler = Reassembler(max_parts=3)
    with pytest.raises(MalformedMessageError, match="bound of 3"):
        reassembler.feed(1, b"a", part_headers(1, 4))
    assert feed_all(reassembler, parts_of(b"abc", 1)) == [None, None, b"abc"]
    # The default bound is the broker's atomic batch limit.
    with pytest.raises(MalformedMessageError, match="bound of 1000"):
        Reassembler().feed(1, b"a", part_headers(1, 1001))
    assert Reassembler().feed(1, b"a", part_headers(1, 1000)) is None


def test_total_size_bound() -> None:
    reassembler = Reassembler(max_bytes=10)
    assert feed_all(reassembler, parts_of(b"0123456789", 4)) == [None, None, b"0123456789"]
    assert reassembler.feed(20, b"0123", part_headers(1, 3)) is None
    assert reassembler.feed(21, b"4567", part_headers(2, 3)) is None
    with pytest.raises(MalformedMessageError, match="bound of 10 bytes"):
        reassembler.feed(22, b"890", part_headers(3, 3))
    assert not reassembler.pending
    with pytest.raises(MalformedMessageError, match="bound of 10 bytes"):
        reassembler.feed(23, b"x" * 11, None)
    with pytest.raises(MalformedMessageError, match="bound of 10 bytes"):
        reassembler.feed(24, b"x" * 11, part_headers(1, 1))
    assert reassembler.feed(25, b"x" * 10, None) == b"x" * 10


@pytest.mark.parametrize("kwargs", [{"max_parts": 0}, {"max_bytes": -1}])
def test_bad_bounds(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Reassembler(**kwargs)


def test_reset_drops_pending_parts() -> None:
    reassembler = Reassembler()
    assert reassembler.feed(1, b"a", part_headers(1, 2)) is None
    reassembler.reset()
    with pytest.raises(MalformedMessageError, match="without part 1"):
        reassembler.feed(2, b"b", part_headers(2, 2))
