"""Gaps the broker cannot fill, unverifiable snapshots, compaction — against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pycrdt

import secsync
from secsync.config import SecsyncConfig
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.changes import serialize_changes
from secsync.protocol.events import Event, MessageRejected, SnapshotApplied, UpdateApplied
from secsync.protocol.messages import INITIAL_PARENT_PROOF, SnapshotPublicData, UpdatePublicData
from secsync.transport import Document, jetstream
from secsync.transport.compaction import compact_document
from tests.factories import plain_yjs_doc

KEY = crypto.generate_key()


async def collect(doc: Document, predicate: Callable[[list[Event]], bool], timeout: float = 10):
    seen: list[Event] = []
    async with asyncio.timeout(timeout):
        while not predicate(seen):
            seen.append(await doc.next_event())
    return seen


def yjs_insert(text: str) -> bytes:
    doc: pycrdt.Doc = plain_yjs_doc()
    doc.get("text", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


async def test_gap_that_never_fills_is_recovered_and_reported(broker) -> None:
    config = SecsyncConfig(batch_interval=0.002, gap_refetch_after=0.1, gap_recover_after=0.3)
    async with secsync.connect(broker.url, config=config) as client:
        ydoc: pycrdt.Doc = plain_yjs_doc()
        text = ydoc.get("text", type=pycrdt.Text)
        doc = await client.open(
            "gap", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=ydoc
        )
        text.insert(0, "base")
        await doc.flush(5)
        active = doc.session.active_snapshot
        assert active is not None
        # another author's update 1 is stored, its update 0 never is
        other = crypto.SigningKeyPair.generate()
        public = UpdatePublicData("gap", other.public_key, active.snapshot_id, 1)
        lost_next = sealing.seal(public, serialize_changes([yjs_insert("X")]), KEY, other)
        await jetstream.publish(
            client.js, doc.subjects.update, wire.encode(lost_next, include_doc_id=False)
        )
        seen = await collect(
            doc, lambda evs: any(isinstance(e, UpdateApplied) and e.clock == 1 for e in evs)
        )
        kinds = [type(e).__name__ for e in seen]
        assert "GapDetected" in kinds and "RecoveryNeeded" in kinds
        skipped = [e for e in seen if isinstance(e, MessageRejected) and e.error.code == 202]
        assert skipped and skipped[0].author == other.public_key
        assert "X" in str(text) and "base" in str(text)


async def test_unverifiable_stored_snapshot_triggers_recovery_keeping_local_changes(
    broker,
) -> None:
    config = SecsyncConfig(batch_interval=0.002)
    async with secsync.connect(broker.url, config=config) as client:
        ydoc: pycrdt.Doc = plain_yjs_doc()
        text = ydoc.get("text", type=pycrdt.Text)
        doc = await client.open(
            "fork", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=ydoc
        )
        text.insert(0, "mine")
        await doc.flush(5)
        # a second "initial" snapshot appears in the stream (stored without compare-and-set)
        rogue = crypto.SigningKeyPair.generate()
        fork = sealing.seal(
            SnapshotPublicData(
                "fork", rogue.public_key, crypto.generate_id(), b"", INITIAL_PARENT_PROOF, {}
            ),
            yjs_insert("theirs "),
            KEY,
            rogue,
        )
        await jetstream.publish(
            client.js, doc.subjects.snapshot, wire.encode(fork, include_doc_id=False)
        )
        seen = await collect(
            doc, lambda evs: any(isinstance(e, SnapshotApplied) and e.recovered for e in evs)
        )
        assert any(isinstance(e, MessageRejected) and e.error.code == 112 for e in seen)
        text.insert(0, "more ")
        await doc.flush(5)
        assert "mine" in str(text) and "theirs" in str(text)
    # a fresh reader sees our local changes on top of the adopted snapshot
    async with secsync.connect(broker.url, config=config) as client:
        fresh: pycrdt.Doc = plain_yjs_doc()
        await client.open("fork", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=fresh)
        content = str(fresh.get("text", type=pycrdt.Text))
        assert "mine" in content and "theirs" in content and "more" in content


async def test_compaction_keeps_what_loading_needs(broker) -> None:
    config = SecsyncConfig(batch_interval=0.002, snapshot_after_updates=4)
    async with secsync.connect(broker.url, config=config) as client:
        ydoc: pycrdt.Doc = plain_yjs_doc()
        text = ydoc.get("text", type=pycrdt.Text)
        doc = await client.open(
            "compact", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=ydoc
        )
        for i in range(10):
            text.insert(len(text), str(i))
            await doc.flush(5)
        before = await jetstream.messages_after(
            client.nc, config.stream_name, doc.subjects.stored, 1
        )
        result = await compact_document(client.nc, "compact", config=config)
        after = await jetstream.messages_after(
            client.nc, config.stream_name, doc.subjects.stored, 1
        )
        assert result.purged == len(before) - len(after) > 0
        assert after[0].sequence == result.kept_from_sequence
        assert after[0].subject == doc.subjects.snapshot
        # the live client keeps working, a new one loads the same content
        text.insert(0, ">")
        await doc.flush(5)
    async with secsync.connect(broker.url, config=config) as reader:
        fresh = plain_yjs_doc()
        await reader.open(
            "compact", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=fresh
        )
        assert str(fresh.get("text", type=pycrdt.Text)) == ">0123456789"
