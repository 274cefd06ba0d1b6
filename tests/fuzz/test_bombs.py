"""Hand-made hostile inputs: length headers that lie, nesting bombs, oversized messages, unknown
protocol versions and misaddressed messages, for every decoder of untrusted bytes.

Each must fail fast (well under a second) with a SecsyncError and allocate at most a small
constant plus a small multiple of its own size.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from secsync.errors import (
    MessageTooLargeError,
    SecsyncError,
    UnsupportedVersionError,
)
from secsync.protocol import wire
from secsync.protocol.changes import deserialize_changes
from secsync.protocol.ephemeral import EphemeralPlaintext
from secsync.protocol.presence import decode_presence
from secsync.transport.chunks import PART_HEADER, PARTS_HEADER, Reassembler
from tests.conformance.plugin import Conformance
from tests.factories import DOC_ID
from tests.fuzz.strategies import genuine_messages

MIB = 1024 * 1024


def _measure(function: Callable[[Any], object], data: Any) -> tuple[str, float, int]:
    """(outcome, seconds, peak bytes allocated) of one call; non-Secsync errors propagate."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        function(data)
        outcome = "accepted"
    except SecsyncError as exc:
        outcome = f"{exc.code}"
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return outcome, elapsed, peak


DECODERS: dict[str, Callable[[Any], object]] = {
    "wire.decode": lambda d: wire.decode(d, doc_id=DOC_ID),
    "deserialize_changes": deserialize_changes,
    "decode_presence": decode_presence,
    "EphemeralPlaintext.decode": EphemeralPlaintext.decode,
}
LYING_HEADERS: dict[str, bytes] = {
    "bin32 claiming 4 GB": b"\xc6\xff\xff\xff\xff" + b"x" * 64,
    "str32 claiming 4 GB": b"\xdb\xff\xff\xff\xff" + b"x" * 64,
    "ext32 claiming 4 GB": b"\xc9\xff\xff\xff\xff\x01" + b"x" * 64,
    "array32 claiming 2^32-1 items": b"\xdd\xff\xff\xff\xff",
    "map32 claiming 2^32-1 entries": b"\xdf\xff\xff\xff\xff",
    "bin32 claiming 4 GB inside a message": b"\x9a\x01\x02\xc0\xc6\xff\xff\xff\xff",
    "array of 12 claiming a 4 GB ciphertext": b"\x9c\x01\x01"
    + b"\xc0" * 8
    + b"\xc6\xff\xff\xff\xff",
}
# EphemeralPlaintext is a fixed header and a payload, no msgpack: nothing there can lie.
CASES = [(d, h) for d in DECODERS if d != "EphemeralPlaintext.decode" for h in LYING_HEADERS]


@pytest.mark.parametrize(("decoder", "header"), CASES, ids=[f"{d}-{h}" for d, h in CASES])
def test_lying_length_header_fails_fast(
    conformance: Conformance, decoder: str, header: str
) -> None:
    data = LYING_HEADERS[header]
    conformance.declare(
        f"M-bomb-{decoder}-{header.split(maxsplit=1)[0]}-{header.rsplit(maxsplit=1)[-1]}",
        f"{decoder}: {header}",
        attack=f"{len(data)} bytes whose msgpack header claims far more than follows",
        expected="a SecsyncError within 0.5 s, under 1 MiB allocated",
    )
    outcome, elapsed, peak = _measure(DECODERS[decoder], data)
    conformance.observe(f"{outcome} in {elapsed * 1000:.1f} ms, {peak / 1024:.0f} KiB")
    assert outcome != "accepted"
    assert elapsed < 0.5 and peak < MIB


LEVELS = 1000
# Each of the 1000 nested array headers claims 5,000 items: no more than the input has bytes,
# which is the most any per-container cap derived from the input size allows.
NESTED_WITHIN_INPUT = (b"\xdd" + (5 * LEVELS).to_bytes(4, "big")) * LEVELS
# The same nesting claiming 100,000 items each: more than the input could ever hold.
NESTED_BEYOND_INPUT = b"\xdd\x00\x01\x86\xa0" * LEVELS
NESTED = ["wire.decode", "deserialize_changes", "decode_presence"]


@pytest.mark.parametrize("decoder", NESTED)
def test_nested_headers_claiming_more_than_the_input_fail_fast(
    conformance: Conformance, decoder: str
) -> None:
    data = NESTED_BEYOND_INPUT
    conformance.declare(
        f"M-bomb-{decoder}-nested-beyond",
        f"{decoder}: 1000 nested arrays claiming 100,000 items each",
        attack=f"{len(data):,} bytes of nested msgpack array headers, each claiming more items "
        "than the whole input has bytes",
        expected="a SecsyncError within 0.5 s, under 1 MiB allocated",
    )
    outcome, elapsed, peak = _measure(DECODERS[decoder], data)
    conformance.observe(f"{outcome} in {elapsed * 1000:.1f} ms, {peak / 1024:.0f} KiB")
    assert outcome != "accepted"
    assert elapsed < 0.5 and peak < MIB


@pytest.mark.parametrize("decoder", NESTED)
def test_nested_container_headers_allocate_little(conformance: Conformance, decoder: str) -> None:
    data = NESTED_WITHIN_INPUT
    conformance.declare(
        f"M-bomb-{decoder}-nested",
        f"{decoder}: 1000 nested arrays claiming 5,000 items each",
        attack=f"{len(data):,} bytes of nested msgpack array headers, each claiming as many "
        "items as the input has bytes",
        expected=f"a SecsyncError; at most 1 MiB + 64 bytes per input byte allocated "
        f"({(MIB + 64 * len(data)) / MIB:.1f} MiB); under 0.5 s",
    )
    outcome, elapsed, peak = _measure(DECODERS[decoder], data)
    conformance.observe(f"{outcome} in {elapsed * 1000:.0f} ms, {peak / MIB:.1f} MiB allocated")
    assert outcome != "accepted"
    assert peak <= MIB + 64 * len(data), f"{peak / MIB:.1f} MiB for {len(data)} bytes"
    assert elapsed < 0.5


JSON_BOMBS: dict[str, str] = {
    "100,000 nested arrays": "[" * 100_000,
    "a 100,000-digit integer": "1" * 100_000,
    "publicData nested 10,000 deep": '{"publicData":' + '{"a":' * 10_000 + "1" + "}" * 10_001,
    "extras nested 10,000 deep": (
        '{"nonce":"","ciphertext":"","signature":"","publicData":{"docId":"d","pubKey":"",'
        '"refSnapshotId":"","clock":0,"x":' + "[" * 10_000 + "]" * 10_000 + "}}"
    ),
    "a float where an integer belongs": '{"publicData":{"clock":1.0}}',
}


@pytest.mark.parametrize("bomb", list(JSON_BOMBS))
def test_json_bombs_fail_fast(conformance: Conformance, bomb: str) -> None:
    text = JSON_BOMBS[bomb]
    conformance.declare(
        f"M-json-{bomb.split()[1]}",
        f"secsync JSON: {bomb}",
        attack=f"{len(text):,} characters of hostile JSON for wire.from_json",
        expected="a SecsyncError within 0.5 s; allocation bounded by a small multiple of the input",
    )
    outcome, elapsed, peak = _measure(wire.from_json, text)
    conformance.observe(f"{outcome} in {elapsed * 1000:.1f} ms, {peak / 1024:.0f} KiB")
    assert outcome != "accepted"
    assert elapsed < 0.5 and peak < MIB + 64 * len(text)


def test_oversized_and_unknown_versions(conformance: Conformance) -> None:
    conformance.declare(
        "M-versions-and-sizes",
        "unknown protocol versions, oversized messages, wrong document ids (decoder level)",
        attack="genuine messages re-encoded with versions 0, 2, 255, -1 and 2^40; a message "
        "above max_bytes; a message whose explicit docId differs from the context",
        expected="701 for every unknown version (700 when even the kind is unknown), 702 "
        "above the bound before any parsing, a wrong docId decodes (the session rejects it "
        "with 113/216/306)",
    )
    observed = []
    for message in genuine_messages():
        items = msgpack.unpackb(wire.encode(message), raw=False)
        for version in (0, 2, 255, -1, 2**40):
            data = msgpack.packb([version, *items[1:]], use_bin_type=True)
            with pytest.raises(UnsupportedVersionError):
                wire.decode(data, doc_id=DOC_ID)
        data = wire.encode(message)
        with pytest.raises(MessageTooLargeError):
            wire.decode(data, doc_id=DOC_ID, max_bytes=len(data) - 1)
        decoded = wire.decode(data, doc_id="another document")
        assert decoded.public_data.doc_id == DOC_ID  # explicit wins; the session compares
    observed.append("701 for each version, 702 above the bound, explicit docId kept")
    conformance.observe("; ".join(observed))


def test_reassembler_bounds(conformance: Conformance) -> None:
    conformance.declare(
        "M-reassembler-bounds",
        "chunk reassembly of hostile part sequences",
        attack="a part count of 999,999,999; parts summing past max_bytes; a gap in the "
        "sequences; a changing part count",
        expected="each refused with MalformedMessageError (700) as soon as it shows, holding "
        "no more than max_bytes",
    )
    assembler = Reassembler(max_parts=1000, max_bytes=100)
    headers = {PARTS_HEADER: "999999999", PART_HEADER: "1"}
    with pytest.raises(SecsyncError):
        assembler.feed(1, b"x", headers)
    assembler.feed(2, b"x" * 60, {PARTS_HEADER: "3", PART_HEADER: "1"})
    with pytest.raises(SecsyncError):
        assembler.feed(3, b"x" * 60, {PARTS_HEADER: "3", PART_HEADER: "2"})
    assembler.feed(4, b"x", {PARTS_HEADER: "3", PART_HEADER: "1"})
    with pytest.raises(SecsyncError):
        assembler.feed(6, b"x", {PARTS_HEADER: "3", PART_HEADER: "2"})
    assembler.feed(7, b"x", {PARTS_HEADER: "3", PART_HEADER: "1"})
    with pytest.raises(SecsyncError):
        assembler.feed(8, b"x", {PARTS_HEADER: "4", PART_HEADER: "2"})
    assert not assembler.pending
    conformance.observe("all four refused; nothing held afterwards")
