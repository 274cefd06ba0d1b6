"""A wrong key never hides a document: through a real nats-server, a client that opens an
existing document with another key is refused before it writes anything, and readers with the
right key always load the last snapshot they can open, whatever was stored after it."""

from __future__ import annotations

import pycrdt
import pytest

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import InvalidKeyError, WrongKeyError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.changes import serialize_changes
from secsync.protocol.events import Event, MessageRejected
from secsync.protocol.keys import encode_key
from secsync.protocol.messages import (
    INITIAL_PARENT_PROOF,
    SnapshotPublicData,
    UpdatePublicData,
)
from secsync.transport import jetstream
from secsync.transport.subjects import DocumentSubjects
from tests.factories import plain_yjs_doc
from tests.transport.helpers import KEY, YClient, open_y, until

FAST = SecsyncConfig(batch_interval=0.005, publish_timeout=2.0, request_timeout=2.0)


async def _stored(client: secsync.SecsyncClient, doc_id: str) -> list[jetstream.StoredMessage]:
    """Everything stored for ``doc_id`` (snapshots and updates), straight from the stream."""
    subjects = DocumentSubjects.of(doc_id)
    return await jetstream.messages_scoped(
        client.js, client.config.stream_name, subjects.stored, 1, timeout=2.0
    )


async def test_the_wrong_key_is_refused_and_nothing_is_written(broker) -> None:
    async with secsync.connect(broker.url, config=FAST) as client:
        alice = YClient()
        doc = await open_y(client, "diary", alice)
        alice.text.insert(0, "dear diary")
        await doc.flush(5)
        before = [(m.sequence, m.data) for m in await _stored(client, "diary")]
        assert before

        async with secsync.connect(broker.url, config=FAST) as other:
            stranger = YClient()
            stranger.text.insert(0, "typed before opening")  # content that would be sent
            with pytest.raises(WrongKeyError) as caught:
                await other.open(
                    "diary",
                    key=crypto.generate_key(),
                    signing_key=stranger.signer,
                    crdt=stranger.ydoc,
                )
            assert "does not open this document" in caught.value.message
            assert "diary" not in other.documents  # the failed open left nothing behind

        assert [(m.sequence, m.data) for m in await _stored(client, "diary")] == before
        async with secsync.connect(broker.url, config=FAST) as third:
            reader = YClient()
            await open_y(third, "diary", reader)
            assert reader.content == "dear diary"


async def test_the_key_as_keygen_prints_it_opens_the_document(broker) -> None:
    async with (
        secsync.connect(broker.url, config=FAST) as c1,
        secsync.connect(broker.url, config=FAST) as c2,
    ):
        alice, bob = YClient(), YClient()
        doc = await c1.open(
            "text-key", key=encode_key(KEY), signing_key=alice.signer.to_b64(), crdt=alice.ydoc
        )
        alice.text.insert(0, "from text")
        await doc.flush(5)
        await open_y(c2, "text-key", bob)  # the same key as bytes
        assert bob.content == "from text"


async def test_a_typo_in_the_key_is_refused_before_anything_happens(broker) -> None:
    async with secsync.connect(broker.url, config=FAST) as client:
        who = YClient()
        with pytest.raises(InvalidKeyError, match="key:"):
            await client.open("typo", key="abc", signing_key=who.signer, crdt=who.ydoc)
        with pytest.raises(InvalidKeyError, match="signing_key:"):
            await client.open("typo", key=KEY, signing_key=b"\x00" * 64, crdt=who.ydoc)
        assert client.documents == {}
        assert await _stored(client, "typo") == []


def _foreign_snapshot(doc_id: str, text: str) -> tuple[bytes, bytes, bytes, crypto.SigningKeyPair]:
    """A validly signed first snapshot sealed under a key nobody else has (what a client with
    the wrong key wrote before such clients were refused), and an update on it."""
    mallory = crypto.SigningKeyPair.generate()
    key = crypto.generate_key()
    ydoc = plain_yjs_doc()
    ydoc.get("text", type=pycrdt.Text).insert(0, text)
    public = SnapshotPublicData(
        doc_id=doc_id,
        pub_key=mallory.public_key,
        snapshot_id=crypto.generate_id(),
        parent_snapshot_id=b"",
        parent_snapshot_proof=INITIAL_PARENT_PROOF,
        parent_snapshot_update_clocks={},
    )
    snapshot = sealing.seal(public, ydoc.get_update(), key, mallory)
    update = sealing.seal(
        UpdatePublicData(
            doc_id=doc_id,
            pub_key=mallory.public_key,
            ref_snapshot_id=public.snapshot_id,
            clock=0,
        ),
        serialize_changes([ydoc.get_update()]),
        key,
        mallory,
    )
    return (
        wire.encode(snapshot, include_doc_id=False),
        wire.encode(update, include_doc_id=False),
        public.snapshot_id,
        mallory,
    )


@pytest.mark.parametrize("with_update", [False, True])
async def test_readers_load_the_last_snapshot_they_can_open(broker, with_update: bool) -> None:
    doc_id = f"overwritten-{with_update}"
    subjects = DocumentSubjects.of(doc_id)
    async with secsync.connect(broker.url, config=FAST) as client:
        alice = YClient()
        doc = await open_y(client, doc_id, alice)
        alice.text.insert(0, "the real text")
        await doc.flush(5)
        await doc.close()
        snapshot, update, _, _ = _foreign_snapshot(doc_id, "an empty-looking fresh start")
        await client.js.publish(subjects.snapshot, snapshot)  # no precondition: raw junk
        if with_update:
            await client.js.publish(subjects.update, update)

    async with secsync.connect(broker.url, config=FAST) as client:
        bob = YClient()
        doc = await open_y(client, doc_id, bob)
        assert bob.content == "the real text"
        refused = [e.error for e in _drain(doc) if isinstance(e, MessageRejected)]
        assert any(e.code == 101 for e in refused)  # the foreign snapshot, reported
        # and the document stays writable on the snapshot that opens
        bob.text.insert(len(bob.text), ", continued")
        await doc.flush(5)

    async with secsync.connect(broker.url, config=FAST) as client:
        carol = YClient()
        doc = await open_y(client, doc_id, carol)
        assert carol.content == "the real text, continued"
        carol.text.insert(0, "> ")
        doc.write_snapshot()  # a snapshot written on top of the junk is stored as well
        await until(
            doc,
            lambda: (
                doc.is_synced
                and getattr(doc.session.active_snapshot, "author", None) == carol.signer.public_key
            ),
        )

    async with secsync.connect(broker.url, config=FAST) as client:
        dave = YClient()
        await open_y(client, doc_id, dave)
        assert dave.content == "> the real text, continued"


async def test_an_online_writer_keeps_writing_after_junk_arrives(broker) -> None:
    """Junk stored while a writer is online changes nothing for it or for new readers."""
    async with (
        secsync.connect(broker.url, config=FAST) as c1,
        secsync.connect(broker.url, config=FAST) as c2,
    ):
        alice = YClient()
        doc = await open_y(c1, "live-junk", alice)
        alice.text.insert(0, "before")
        await doc.flush(5)
        snapshot, update, _, _ = _foreign_snapshot("live-junk", "junk")
        subjects = DocumentSubjects.of("live-junk")
        await c2.js.publish(subjects.snapshot, snapshot)
        ack = await c2.js.publish(subjects.update, update)
        await until(doc, lambda: doc.last_sequence >= ack.seq)  # the junk reached the writer
        alice.text.insert(len(alice.text), " and after")
        await doc.flush(5)
        bob = YClient()
        await open_y(c2, "live-junk", bob)
        assert bob.content == "before and after"


def _drain(doc: secsync.Document) -> list[Event]:
    out: list[Event] = []
    while not doc._events.empty():
        out.append(doc._events.get_nowait())
    return out


async def test_a_wrong_key_with_a_local_store_is_refused_every_time(broker, tmp_path) -> None:
    """A failed open leaves no local state that would let the next open skip the check."""
    async with secsync.connect(broker.url, config=FAST) as client:
        alice = YClient()
        doc = await open_y(client, "stored", alice)
        alice.text.insert(0, "kept")
        await doc.flush(5)
        before = [(m.sequence, m.data) for m in await _stored(client, "stored")]
    wrong = crypto.generate_key()
    config = SecsyncConfig(
        batch_interval=0.005, publish_timeout=2.0, request_timeout=2.0, store_path=tmp_path / "db"
    )
    for _ in range(2):
        async with secsync.connect(broker.url, config=config) as client:
            stranger = YClient()
            stranger.text.insert(0, "mine")
            with pytest.raises(WrongKeyError):
                await client.open(
                    "stored", key=wrong, signing_key=stranger.signer, crdt=stranger.ydoc
                )
    async with secsync.connect(broker.url, config=FAST) as client:
        assert [(m.sequence, m.data) for m in await _stored(client, "stored")] == before


async def test_a_snapshot_whose_content_does_not_apply_is_passed_over(broker) -> None:
    """A member (who holds the key) stores a snapshot whose content the CRDT refuses: fresh
    readers load the snapshot before it, and report the refused one (105)."""
    async with secsync.connect(broker.url, config=FAST) as client:
        alice = YClient()
        doc = await open_y(client, "bad-content", alice)
        alice.text.insert(0, "good content")
        await doc.flush(5)
        base = doc.session.active_snapshot
        assert base is not None
        mallory = crypto.SigningKeyPair.generate()
        public = SnapshotPublicData(
            doc_id="bad-content",
            pub_key=mallory.public_key,
            snapshot_id=crypto.generate_id(),
            parent_snapshot_id=base.snapshot_id,
            parent_snapshot_proof=base.child_proof(),
            parent_snapshot_update_clocks={},
        )
        bad = sealing.seal(public, b"\xff\x00 not a Yjs update", KEY, mallory)
        await client.js.publish(
            DocumentSubjects.of("bad-content").snapshot, wire.encode(bad, include_doc_id=False)
        )
    async with secsync.connect(broker.url, config=FAST) as client:
        bob = YClient()
        reader = await open_y(client, "bad-content", bob)
        assert bob.content == "good content"
        assert reader.session.active_snapshot == base
        assert 105 in [e.code for e in reader.load_errors]
