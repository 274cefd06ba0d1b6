"""Opening is bounded by the latest snapshot, not by how many were stored: through a real
nats-server, a member who stored thousands of snapshots does not slow opening down, junk stored
after the good snapshot is looked past within a bound, and more junk than the bound is a clear
error. Online, a member flooding snapshots is rate-limited while honest clients converge."""

from __future__ import annotations

import asyncio

import pycrdt
import pytest

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import SnapshotSearchError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.events import Event, MessageRejected, SnapshotApplied
from secsync.protocol.messages import INITIAL_PARENT_PROOF, Snapshot, SnapshotPublicData
from secsync.transport import jetstream
from secsync.transport.subjects import DocumentSubjects
from tests.factories import plain_yjs_doc
from tests.transport.helpers import KEY, YClient, open_y, until

FAST = SecsyncConfig(batch_interval=0.005, publish_timeout=2.0, request_timeout=2.0)


def _snapshot(
    signer: crypto.SigningKeyPair,
    doc_id: str,
    text: str,
    parent: Snapshot | None,
    *,
    key: bytes = KEY,
    padding: int = 0,
) -> Snapshot:
    ydoc = plain_yjs_doc()
    ydoc.get("text", type=pycrdt.Text).insert(0, text)
    if padding:
        ydoc.get("pad", type=pycrdt.Text).insert(0, crypto.generate_key().hex() * (padding // 64))
    public = SnapshotPublicData(
        doc_id=doc_id,
        pub_key=signer.public_key,
        snapshot_id=crypto.generate_id(),
        parent_snapshot_id=parent.snapshot_id if parent else b"",
        parent_snapshot_proof=parent.info().child_proof() if parent else INITIAL_PARENT_PROOF,
        parent_snapshot_update_clocks={},
    )
    return sealing.seal(public, ydoc.get_update(), key, signer)


async def _store(client: secsync.SecsyncClient, subject: str, payloads: list[bytes]) -> int:
    """Store ``payloads`` on ``subject`` fast (pipelined); the last sequence."""
    last = 0
    for start in range(0, len(payloads), 256):
        acks = await asyncio.gather(
            *(client.js.publish(subject, p) for p in payloads[start : start + 256])
        )
        last = max(last, *(a.seq for a in acks))
    return last


def _drain(doc: secsync.Document) -> list[Event]:
    out = []
    while not doc._events.empty():
        out.append(doc._events.get_nowait())
    return out


async def _flooded(broker_url: str, doc_id: str, count: int, padding: int) -> str:
    """A document written by an honest client, then ``count`` validly signed snapshots
    (each a child of the one before) by a hostile member; returns the newest one's text."""
    mallory = crypto.SigningKeyPair.generate()
    async with secsync.connect(broker_url, config=FAST) as client:
        alice = YClient()
        doc = await open_y(client, doc_id, alice)
        alice.text.insert(0, "honest")
        await doc.flush(5)
        parent = doc.session.active_snapshot
        assert parent is not None
        await doc.close()
        previous: Snapshot | None = None
        payloads = []
        for i in range(count):
            previous = _snapshot(mallory, doc_id, f"flood {i}", previous, padding=padding)
            payloads.append(wire.encode(previous, include_doc_id=False))
        await _store(client, DocumentSubjects.of(doc_id).snapshot, payloads)
    return f"flood {count - 1}"


@pytest.mark.parametrize("padding", [2048])
async def test_open_reads_the_same_with_ten_or_three_thousand_snapshots(broker, padding) -> None:
    reads = {}
    for count in (10, 3000):
        doc_id = f"many-snapshots-{count}"
        newest = await _flooded(broker.url, doc_id, count, padding)
        async with secsync.connect(broker.url, config=FAST) as client:
            bob = YClient()
            doc = await open_y(client, doc_id, bob)
            assert bob.content == newest
            assert doc.load_search is not None
            reads[count] = doc.load_search
    # the newest and one window before it (its parent is there), whatever the count
    assert reads[10].windows == reads[3000].windows == 2
    assert reads[10].messages <= reads[3000].messages <= 17
    assert reads[3000].bytes <= 17 * (padding * 3 + 4096)


async def test_junk_stored_after_the_good_snapshot_is_looked_past(broker) -> None:
    doc_id = "junk-after-good"
    subjects = DocumentSubjects.of(doc_id)
    mallory = crypto.SigningKeyPair.generate()
    async with secsync.connect(broker.url, config=FAST) as client:
        alice = YClient()
        doc = await open_y(client, doc_id, alice)
        alice.text.insert(0, "the real text")
        await doc.flush(5)
        await doc.close()
        wrong_key = _snapshot(mallory, doc_id, "wrong key", None, key=crypto.generate_key())
        forged = bytearray(
            wire.encode(_snapshot(mallory, doc_id, "forged", None), include_doc_id=False)
        )
        forged[-10] ^= 0xFF  # bad signature (or undecodable)
        junk = [wire.encode(wrong_key, include_doc_id=False), bytes(forged), b"\x00junk"] * 20
        await _store(client, subjects.snapshot, junk)

    async with secsync.connect(broker.url, config=FAST) as client:
        bob = YClient()
        doc = await open_y(client, doc_id, bob)
        assert bob.content == "the real text"
        assert doc.load_search is not None and 60 < doc.load_search.messages <= 256
        assert any(isinstance(e, MessageRejected) and e.error.code == 101 for e in _drain(doc))
        bob.text.insert(len(bob.text), ", continued")  # and it stays writable
        await doc.flush(5)


async def test_more_junk_than_the_bound_is_a_clear_error_and_nothing_is_written(broker) -> None:
    doc_id = "junk-beyond-bound"
    subjects = DocumentSubjects.of(doc_id)
    config = SecsyncConfig(
        batch_interval=0.005, publish_timeout=2.0, request_timeout=2.0, load_snapshot_messages=64
    )
    async with secsync.connect(broker.url, config=config) as client:
        alice = YClient()
        doc = await open_y(client, doc_id, alice)
        alice.text.insert(0, "the real text")
        await doc.flush(5)
        await doc.close()
        mallory = crypto.SigningKeyPair.generate()
        wrong = [
            wire.encode(
                _snapshot(mallory, doc_id, "x", None, key=crypto.generate_key()),
                include_doc_id=False,
            )
            for _ in range(100)
        ]
        last = await _store(client, subjects.snapshot, wrong)

    async with secsync.connect(broker.url, config=config) as client:
        with pytest.raises(SnapshotSearchError) as raised:
            await open_y(client, doc_id, YClient())
        assert raised.value.code == 119
        stored = await jetstream.messages_scoped(
            client.js, config.stream_name, subjects.stored, last + 1, timeout=2.0
        )
        assert stored == []  # nothing was written

    # a larger bound opens it
    async with secsync.connect(broker.url, config=FAST) as client:
        carol = YClient()
        await open_y(client, doc_id, carol)
        assert carol.content == "the real text"


async def test_a_replay_stored_after_many_snapshots_is_not_loaded(broker) -> None:
    doc_id = "replay-far-back"
    subjects = DocumentSubjects.of(doc_id)
    async with secsync.connect(broker.url, config=FAST) as client:
        alice = YClient()
        doc = await open_y(client, doc_id, alice)
        alice.text.insert(0, "first")
        await doc.flush(5)
        first = await jetstream.last_scoped(client.js, FAST.stream_name, subjects.snapshot)
        assert first is not None
        for i in range(40):
            alice.text.insert(len(alice.text), f" {i}")
            doc.write_snapshot()
            await doc.flush(5)
        expected = alice.content
        await doc.close()
        await client.js.publish(subjects.snapshot, first.data)  # the first snapshot again

    async with secsync.connect(broker.url, config=FAST) as client:
        bob = YClient()
        doc = await open_y(client, doc_id, bob)
        assert bob.content == expected
        assert doc.session.active_snapshot != wire.decode(first.data, doc_id=doc_id).info()


async def test_a_live_snapshot_flood_is_rate_limited_and_clients_converge(broker) -> None:
    doc_id = "live-flood"
    subjects = DocumentSubjects.of(doc_id)
    config = SecsyncConfig(
        batch_interval=0.005,
        publish_timeout=2.0,
        request_timeout=2.0,
        snapshot_burst_per_author=5,
        snapshots_per_author_per_minute=120.0,  # one per 0.5 s after the burst
    )
    mallory = crypto.SigningKeyPair.generate()
    async with (
        secsync.connect(broker.url, config=config) as c1,
        secsync.connect(broker.url, config=config) as c2,
        secsync.connect(broker.url, config=config) as c3,
    ):
        alice, bob = YClient(), YClient()
        da = await open_y(c1, doc_id, alice)
        alice.text.insert(0, "honest")
        await da.flush(5)
        da.write_snapshot()  # no updates on the flood's parent: nothing a child must include
        await da.flush(5)
        db = await open_y(c2, doc_id, bob)
        await until(db, lambda: bob.content == "honest")
        base = da.session.active_snapshot
        assert base is not None
        stored = await jetstream.last_scoped(c1.js, config.stream_name, subjects.snapshot)
        assert stored is not None
        parent = wire.decode(stored.data, doc_id=doc_id)
        assert isinstance(parent, Snapshot)
        payloads = []
        previous: Snapshot = parent
        for i in range(300):
            previous = _snapshot(mallory, doc_id, f"honest flood {i}", previous)
            payloads.append(wire.encode(previous, include_doc_id=False))
        last = await _store(c3, subjects.snapshot, payloads)

        applied: dict[str, int] = {"a": 0, "b": 0}
        limited: dict[str, int] = {"a": 0, "b": 0}

        def count(name: str, event: Event) -> None:
            if isinstance(event, SnapshotApplied) and event.author == mallory.public_key:
                applied[name] += 1
            elif isinstance(event, MessageRejected) and event.error.code == 118:
                limited[name] += 1

        async def settled() -> bool:
            """Both clients on the snapshot the broker holds last (the flood's newest, or a
            repair written on a flood snapshot that lacked the honest text), nothing unsent and
            no repair still to write (until it is written, a newcomer loads what lacks it)."""
            stored = await jetstream.last_scoped(c3.js, config.stream_name, subjects.snapshot)
            assert stored is not None
            latest = wire.decode(stored.data, doc_id=doc_id)
            return all(
                getattr(d.session.active_snapshot, "snapshot_id", None) == latest.snapshot_id
                and d.session.is_synced
                and not d.session.repair_wanted
                and d.last_sequence >= last
                for d in (da, db)
            )

        docs = {"a": da, "b": db}
        async with asyncio.timeout(30):
            while not await settled():
                waiting = {asyncio.ensure_future(d.next_event()): n for n, d in docs.items()}
                done, _ = await asyncio.wait(
                    waiting, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                for task in waiting:
                    task.cancel()
                for task in done:
                    count(waiting[task], task.result())
        for name, doc in docs.items():
            for event in _drain(doc):
                count(name, event)
        for name in ("a", "b"):
            assert applied[name] <= 12  # the burst, the refills meanwhile, the newest
            assert limited[name] >= 250  # held or dropped unread
        assert alice.content == bob.content and "honest" in alice.content
        fresh = YClient()
        df = await open_y(c3, doc_id, fresh)
        assert fresh.content == alice.content  # what a newcomer loads is what they hold
        await df.close()
        # and the document goes on: honest edits on the flood's newest snapshot converge
        alice.text.insert(0, "> ")
        await da.flush(5)
        await until(db, lambda: bob.content == alice.content)
