"""Every decoder of untrusted input, fuzzed: only SecsyncError may escape, time and memory per
input are bounded (the ``inputs`` fixture), and what is accepted round-trips exactly."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from secsync.protocol import wire
from secsync.protocol.changes import deserialize_changes, serialize_changes
from secsync.protocol.ephemeral import EphemeralPlaintext
from secsync.protocol.messages import Message
from secsync.protocol.presence import decode_presence, encode_presence
from secsync.transport.chunks import PART_HEADER, PARTS_HEADER, Reassembler, split
from tests.fuzz.conftest import Inputs
from tests.fuzz.strategies import (
    doc_ids,
    fuzz_settings,
    genuine_or_mutated,
    json_message_like,
    json_values,
    msgpack_values,
    mutated,
    plaintext_like,
    wire_like,
)

# --- native wire format -------------------------------------------------------------------------


def _check_wire(inputs: Inputs, data: bytes, doc_id: str | None, max_bytes: int) -> None:
    message = inputs.feed(wire.decode, data, doc_id=doc_id, max_bytes=max_bytes)
    if message is not None:
        # one message, one encoding: what is accepted re-encodes to the very same bytes
        assert data in (
            wire.encode(message, include_doc_id=True),
            wire.encode(message, include_doc_id=False),
        )
        assert len(data) <= max_bytes


@fuzz_settings(2500)
@given(data=st.binary(max_size=512), doc_id=doc_ids())
def test_wire_decode_random_bytes(inputs: Inputs, data: bytes, doc_id: str | None) -> None:
    inputs.example()
    _check_wire(inputs, data, doc_id, 64 * 1024 * 1024)


@fuzz_settings(2500)
@given(data=genuine_or_mutated(), doc_id=doc_ids(), max_bytes=st.sampled_from([64 << 20, 300]))
def test_wire_decode_mutated_messages(
    inputs: Inputs, data: bytes, doc_id: str | None, max_bytes: int
) -> None:
    inputs.example()
    _check_wire(inputs, data, doc_id, max_bytes)


@fuzz_settings(800)
@given(data=wire_like(), doc_id=doc_ids())
def test_wire_decode_structured(inputs: Inputs, data: bytes, doc_id: str | None) -> None:
    inputs.example()
    _check_wire(inputs, data, doc_id, 64 * 1024 * 1024)


# --- secsync JSON form --------------------------------------------------------------------------


def _tolerated(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("type", "additionalServerData")}


def _check_json_roundtrip(obj: object, message: Message | None) -> None:
    if message is not None:
        assert isinstance(obj, dict)
        assert wire.to_json_dict(message) == _tolerated(obj)


@fuzz_settings(800)
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_from_json_random_text(inputs: Inputs, text: str | bytes) -> None:
    inputs.example()
    message = inputs.feed(wire.from_json, text)
    if message is not None:
        _check_json_roundtrip(json.loads(text), message)


@fuzz_settings(800)
@given(obj=json_message_like())
def test_from_json_dict_structured(inputs: Inputs, obj: Any) -> None:
    inputs.example()
    message = inputs.feed(wire.from_json_dict, obj)
    _check_json_roundtrip(obj, message)
    # the same object as text goes through from_json the same way
    text = json.dumps(obj)
    again = inputs.feed(wire.from_json, text)
    if not _has_float(obj):  # the text parser refuses floats anywhere, even in tolerated keys
        assert (again is None) == (message is None)


def _has_float(value: object) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


@fuzz_settings(300)
@given(obj=json_values)
def test_from_json_dict_any_json_value(inputs: Inputs, obj: Any) -> None:
    inputs.example()
    inputs.feed(wire.from_json_dict, obj)


# --- ephemeral plaintext, presence, change lists ------------------------------------------------


@fuzz_settings(600)
@given(data=plaintext_like())
def test_ephemeral_plaintext_decode(inputs: Inputs, data: bytes) -> None:
    inputs.example()
    plain = inputs.feed(EphemeralPlaintext.decode, data)
    if plain is not None:
        assert plain.encode() == data


@fuzz_settings(500)
@given(data=st.binary(max_size=300))
def test_decode_presence_random_bytes(inputs: Inputs, data: bytes) -> None:
    inputs.example()
    inputs.feed(decode_presence, data)


@fuzz_settings(500)
@given(
    value=st.one_of(
        msgpack_values,
        st.fixed_dictionaries({"c": msgpack_values, "s": msgpack_values, "y": msgpack_values}),
        st.builds(
            lambda c, s, y: {"c": c, "s": s, "y": y},
            st.integers(-5, 2**64 - 1),
            msgpack_values,
            st.one_of(st.none(), st.integers(-5, 2**64 - 1)),
        ),
    )
)
def test_decode_presence_structured(inputs: Inputs, value: Any) -> None:
    inputs.example()
    try:
        data = msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    decoded = inputs.feed(decode_presence, data)
    if decoded is not None:
        clock, state, yjs = decoded
        assert encode_presence(clock, state, yjs) == msgpack.packb(
            {"c": clock, "s": state, "y": yjs}, use_bin_type=True
        )


@fuzz_settings(500)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        mutated(st.sampled_from([serialize_changes([b"a", b"bc"]), b'["YQ","YmM"]'])),
        st.lists(
            st.one_of(
                st.binary(max_size=20), st.text(max_size=10), st.integers(-(2**63), 2**63 - 1)
            ),
            max_size=6,
        ).map(lambda v: msgpack.packb(v, use_bin_type=True)),
        st.lists(json_values, max_size=5).map(lambda v: json.dumps(v).encode()),
    )
)
def test_deserialize_changes(inputs: Inputs, data: bytes) -> None:
    inputs.example()
    changes = inputs.feed(deserialize_changes, data)
    if changes is not None:
        assert all(isinstance(c, bytes) for c in changes)
        assert sum(len(c) for c in changes) <= len(data)


# --- chunk reassembly ---------------------------------------------------------------------------

header_values = st.one_of(
    st.sampled_from(
        [
            "1",
            "2",
            "3",
            "1000",
            "1001",
            "0",
            "01",
            "-1",
            "+1",
            " 1",
            "x",
            "",
            "²",
            "999999999",
            "1e3",
        ]
    ),
    st.integers(0, 5).map(str),
    st.text(max_size=6),
)
part_headers = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries({PARTS_HEADER: header_values, PART_HEADER: header_values}),
    st.fixed_dictionaries({PARTS_HEADER: header_values}),
    st.fixed_dictionaries({PART_HEADER: header_values}),
)


@fuzz_settings(300)
@given(
    feeds=st.lists(
        st.tuples(st.integers(-2, 40), st.binary(max_size=40), part_headers), max_size=12
    ),
    max_parts=st.integers(1, 5),
    max_bytes=st.integers(0, 120),
)
def test_reassembler_random_feeds(
    inputs: Inputs,
    feeds: list[tuple[int, bytes, dict[str, str] | None]],
    max_parts: int,
    max_bytes: int,
) -> None:
    inputs.example()
    assembler = Reassembler(max_parts=max_parts, max_bytes=max_bytes)
    for sequence, data, headers in feeds:
        out = inputs.feed(lambda d, s=sequence, h=headers: assembler.feed(s, d, h), data)
        if out is not None:
            assert len(out) <= max_bytes


@fuzz_settings(200)
@given(
    payload=st.binary(max_size=200),
    part=st.integers(1, 64),
    start=st.integers(1, 10**9),
    drop=st.one_of(st.none(), st.integers(0, 10)),
)
def test_reassembler_split_round_trip_and_gaps(
    inputs: Inputs, payload: bytes, part: int, start: int, drop: int | None
) -> None:
    inputs.example()
    parts = split(payload, part)
    assembler = Reassembler()
    results = []
    for index, chunk in enumerate(parts, start=1):
        if drop is not None and index - 1 == drop and len(parts) > 1:
            continue  # a part withheld: the rest must be refused, never joined wrongly
        headers = (
            {PARTS_HEADER: str(len(parts)), PART_HEADER: str(index)} if len(parts) > 1 else None
        )
        results.append(
            inputs.feed(lambda d, i=index, h=headers: assembler.feed(start + i, d, h), chunk)
        )
    complete = [r for r in results if r is not None]
    if drop is None or drop >= len(parts) or len(parts) == 1:
        assert complete == [payload]
    else:
        assert complete == []
