"""Malformed, oversized and misaddressed messages stored in the stream.

Anyone who may publish on a document's subjects (the broker, or a client with publish rights)
can store bytes there. Clients online must reject them with the right code and keep working;
clients that open the document afterwards must still be able to load it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from secsync.errors import SecsyncError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.messages import INITIAL_PARENT_PROOF, SnapshotPublicData
from secsync.transport import chunks, jetstream
from tests.conformance.harness import (
    FAST,
    KEY,
    WAIT,
    Peer,
    World,
    forged_update,
    new_doc_id,
    yjs_insert,
)
from tests.conformance.plugin import Conformance


async def _writer_and_reader(world: World, label: str, **config: object) -> tuple[str, Peer, Peer]:
    doc_id = new_doc_id(label)
    writer = await world.peer("writer", doc_id, via_relay=False)
    await writer.type("base")
    reader = await world.peer("victim", doc_id, config=replace(FAST, **config))  # type: ignore[arg-type]
    assert reader.content == "base"
    return doc_id, writer, reader


async def _store(
    peer: Peer, subject: str, data: bytes, headers: dict[str, str] | None = None
) -> int:
    assert peer.client is not None
    seq, _ = await jetstream.publish(peer.client.js, subject, data, headers=headers, timeout=5)
    return seq


async def _keeps_working(
    world: World, writer: Peer, reader: Peer, conformance: Conformance, timeout: float = WAIT
) -> None:
    writer.text.insert(len(writer.text), " more")
    reader.text.insert(len(reader.text), " reader")
    assert writer.doc is not None and reader.doc is not None
    await writer.doc.flush(timeout)
    await reader.doc.flush(timeout)
    final = await world.converge([writer, reader], timeout)
    assert final == "base more reader" or final == "base reader more"
    conformance.observe("both keep working: later edits converge")


async def test_update_of_another_document_is_rejected(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "M-wrong-document-update",
        "an update of another document stored on this one's update subject",
        attack="a genuine update of document A (signed by a participant, docId A in the "
        "message) is stored on document B's update subject",
        expected="rejected 216; no text change; both keep working",
    )
    doc_id, writer, reader = await _writer_and_reader(world, "wrong-doc")
    active = reader.doc.session.active_snapshot if reader.doc else None
    assert active is not None and writer.doc is not None
    update = forged_update(f"{doc_id}-other", active.snapshot_id, 0, "moved ")
    await _store(writer, writer.doc.subjects.update, wire.encode(update, include_doc_id=True))
    await world.until(lambda: reader.has_code(216) and writer.has_code(216))
    assert reader.content == writer.content == "base"
    conformance.observe("rejected 216 by reader and writer; text unchanged")
    await _keeps_working(world, writer, reader, conformance)


async def test_snapshot_of_another_document_is_rejected(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "M-wrong-document-snapshot",
        "a snapshot of another document stored on this one's snapshot subject",
        attack="a genuine snapshot of document A (docId A in the message) is stored on "
        "document B's snapshot subject",
        expected="rejected 113; no text change; both keep working",
    )
    doc_id, writer, reader = await _writer_and_reader(world, "wrong-doc-snap")
    assert writer.doc is not None
    signer = crypto.SigningKeyPair.generate()
    snapshot = sealing.seal(
        SnapshotPublicData(
            f"{doc_id}-other",
            signer.public_key,
            crypto.generate_id(),
            b"",
            INITIAL_PARENT_PROOF,
            {},
        ),
        yjs_insert("moved snapshot "),
        KEY,
        signer,
    )
    await _store(writer, writer.doc.subjects.snapshot, wire.encode(snapshot, include_doc_id=True))
    await world.until(lambda: reader.has_code(113) and writer.has_code(113))
    assert reader.content == writer.content == "base"
    conformance.observe("rejected 113 by reader and writer; text unchanged")
    await _keeps_working(world, writer, reader, conformance, timeout=10)


P = chunks.PARTS_HEADER, chunks.PART_HEADER
MALFORMED: list[tuple[str, str, bytes, dict[str, str] | None, int]] = [
    ("garbage", "garbage bytes", b"\xc1not msgpack at all", None, 700),
    ("empty", "an empty message", b"", None, 700),
    ("bin-4gb", "msgpack bin header claiming 4 GB", b"\xc6\xff\xff\xff\xff" + b"x" * 32, None, 700),
    ("array-4g", "array header claiming 2^32-1 items", b"\xdd\xff\xff\xff\xff", None, 700),
    ("oversized", "a 100 KiB message (reader bound 64 KiB)", b"\x9a" + bytes(100_000), None, 702),
    ("version", "protocol version 99", b"\x9a\x63\x02" + b"\xc0" * 8, None, 701),
    ("part-no-count", "a part header without a count", b"\x00", {P[1]: "1"}, 700),
    ("part-count-nan", "part count 'x'", b"\x00", {P[0]: "x", P[1]: "1"}, 700),
    ("part-2-alone", "part 2 of 3 without part 1", b"\x00", {P[0]: "3", P[1]: "2"}, 700),
    ("parts-2000", "a message in 2000 parts (bound 1000)", b"\x00", {P[0]: "2000", P[1]: "1"}, 700),
]


@pytest.mark.parametrize(
    ("slug", "what", "payload", "headers", "code"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
async def test_malformed_stored_update_is_rejected(
    world: World,
    conformance: Conformance,
    slug: str,
    what: str,
    payload: bytes,
    headers: dict[str, str] | None,
    code: int,
) -> None:
    conformance.declare(
        f"M-update-{slug}",
        f"stored on the update subject: {what}",
        attack=f"{what} stored as a message on the document's update subject",
        expected=f"rejected {code}, fast and without a large allocation; no text change; "
        "the reader keeps working",
    )
    _, writer, reader = await _writer_and_reader(world, "junk", max_message_bytes=64 * 1024)
    assert writer.doc is not None
    await _store(writer, writer.doc.subjects.update, payload, headers)
    await world.until(lambda: bool(reader.rejected()))
    assert reader.codes()[0] == code, reader.codes()
    assert reader.content == "base"
    conformance.observe(f"rejected {reader.codes()[0]}")
    await _keeps_working(world, writer, reader, conformance)


async def test_junk_as_latest_snapshot_message_does_not_block_loading(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "M-junk-latest-snapshot",
        "junk stored as the last message on the snapshot subject",
        attack="garbage bytes stored on the snapshot subject after the genuine snapshots",
        expected="clients online reject it (700) and keep working; a reader that opens the "
        "document afterwards still loads the current text",
    )
    doc_id, writer, reader = await _writer_and_reader(world, "junk-snap")
    assert writer.doc is not None
    await _store(writer, writer.doc.subjects.snapshot, b"\xc1junk")
    await world.until(lambda: reader.has_code(700))
    conformance.observe("online reader: rejected 700")
    try:
        fresh = await world.peer("fresh", doc_id)
    except SecsyncError as exc:
        conformance.observe(f"a new reader cannot open the document: {exc}")
        raise
    assert fresh.content == "base"
    await _keeps_working(world, writer, reader, conformance, timeout=10)


async def test_bad_part_header_on_latest_snapshot_does_not_crash_loading(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "M-bad-parts-latest-snapshot",
        "malformed part count on the last snapshot message",
        attack="a message with header 'Secsync-Parts: x' stored on the snapshot subject",
        expected="no exception other than a SecsyncError escapes client.open; a new reader "
        "still loads the current text",
    )
    doc_id, writer, _ = await _writer_and_reader(world, "bad-parts")
    assert writer.doc is not None
    await _store(
        writer,
        writer.doc.subjects.snapshot,
        b"\x00",
        {chunks.PARTS_HEADER: "x", chunks.PART_HEADER: "1"},
    )
    try:
        fresh = await world.peer("fresh", doc_id)
    except SecsyncError as exc:
        conformance.observe(f"new reader: {exc}")
        raise AssertionError("the document could not be opened") from exc
    except Exception as exc:
        conformance.observe(f"new reader: {type(exc).__name__} escaped client.open")
        raise
    assert fresh.content == "base"
