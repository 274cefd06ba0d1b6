"""Documents synced through a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import time

import pycrdt
import pytest
from automerge import core

import secsync
from secsync.config import SecsyncConfig
from secsync.crdt.yjs import new_yjs_doc
from secsync.errors import TransportError
from secsync.protocol import crypto, wire
from secsync.protocol.events import Event, UpdateApplied
from secsync.protocol.messages import Update
from secsync.protocol.stream import landed
from secsync.transport import Document, jetstream
from secsync.transport.events import DocumentLoaded, SyncFailed
from secsync.transport.subjects import DocumentSubjects
from tests.factories import automerge_text, automerge_type
from tests.transport.helpers import KEY, YClient, open_y, until

FAST = SecsyncConfig(batch_interval=0.005, publish_timeout=2.0, request_timeout=2.0)


async def test_two_and_three_clients_converge_on_yjs(broker) -> None:
    async with (
        secsync.connect(broker.url, config=FAST) as c1,
        secsync.connect(broker.url, config=FAST) as c2,
        secsync.connect(broker.url, config=FAST) as c3,
    ):
        a, b, c = YClient(), YClient(), YClient()
        da = await open_y(c1, "doc-3", a)
        a.text.insert(0, "hello")
        await da.flush(5)
        db = await open_y(c2, "doc-3", b)
        assert b.content == "hello"  # loaded from the snapshot
        dc = await open_y(c3, "doc-3", c)
        b.text.insert(5, " world")
        c.text.insert(0, ">> ")
        await asyncio.gather(db.flush(5), dc.flush(5))
        a.text.insert(len(a.text), "!")
        await da.flush(5)
        expected = ">> hello world!"
        for doc, who in [(da, a), (db, b), (dc, c)]:
            await until(doc, lambda who=who: who.content == expected)
        applied = []
        while not db._events.empty():
            applied.append(db._events.get_nowait())
        authors = {e.author for e in applied if isinstance(e, UpdateApplied)}
        assert authors <= {a.signer.public_key, c.signer.public_key}


async def test_two_clients_converge_on_automerge(broker) -> None:
    async with secsync.connect(broker.url, config=FAST) as client:
        ka, kb = crypto.SigningKeyPair.generate(), crypto.SigningKeyPair.generate()
        a, b = core.Document(), core.Document()
        automerge_type(a, 0, "automerge")
        da = await client.open("am", key=KEY, signing_key=ka, crdt=a)
        await da.flush(5)
        async with secsync.connect(broker.url, config=FAST) as other:
            db = await other.open("am", key=KEY, signing_key=kb, crdt=b)
            assert automerge_text(b) == "automerge"
            automerge_type(b, 0, "hi ")
            db.notify_changed()
            automerge_type(a, 9, "!")
            da.notify_changed()
            await asyncio.gather(da.flush(5), db.flush(5))
            await until([da, db], lambda: automerge_text(a) == automerge_text(b) == "hi automerge!")


async def test_an_idle_automerge_document_is_polled_not_spun(broker) -> None:
    """Automerge has no change notification: the sender checks every poll_interval, and an
    idle document must not turn that into a busy loop (which also starves the event loop)."""
    config = SecsyncConfig(poll_interval=0.05)
    async with secsync.connect(broker.url, config=config) as client:
        doc = core.Document()
        automerge_type(doc, 0, "idle")
        opened = await client.open(
            "am-idle", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=doc
        )
        await opened.flush(5)
        polls: list[float] = []
        fifth = asyncio.Event()
        handle_timer = opened.session.handle_timer

        def counted(now: float) -> list:  # type: ignore[type-arg]
            polls.append(time.monotonic())
            if len(polls) == 8:
                fifth.set()
            return handle_timer(now)

        opened.session.handle_timer = counted  # type: ignore[method-assign]
        await asyncio.wait_for(fifth.wait(), 5)
        # about one poll per poll_interval once the open's own wake-ups (acknowledgements,
        # echoes) are handled: four intervals between the last five polls, not a spin
        assert polls[7] - polls[3] >= 4 * 0.05 * 0.8, polls
        automerge_type(doc, 4, "!")  # and a change is still picked up by the polling
        await opened.flush(5)
        assert opened.is_synced


async def test_a_sender_that_fails_is_reported_and_flush_raises(broker) -> None:
    """A bug below the sender must not leave edits silently waiting: SyncFailed, and flush
    raises instead of hanging."""
    async with secsync.connect(broker.url) as client:
        ydoc = new_yjs_doc(signer := crypto.SigningKeyPair.generate())
        text = ydoc.get("text", type=pycrdt.Text)
        doc = await client.open("sender-fails", key=KEY, signing_key=signer, crdt=ydoc)
        text += "stored"
        await doc.flush(5)

        def broken(now: float) -> list:  # type: ignore[type-arg]
            raise RuntimeError("a bug")

        doc.session.handle_timer = broken  # type: ignore[method-assign]
        text += " lost?"
        doc.notify_changed()
        with pytest.raises(TransportError, match="RuntimeError"):
            await doc.flush(5)
        failed = [e for e in _drain(doc) if isinstance(e, SyncFailed)]
        assert len(failed) == 1 and "a bug" in failed[0].error.message
        assert doc.session.pending_changes  # still here, not dropped


async def test_flush_after_write_snapshot_returns_once_the_snapshot_is_stored(broker) -> None:
    """A membership change takes effect with a snapshot: flush must not return before it."""
    async with secsync.connect(broker.url) as client:
        ydoc = new_yjs_doc(signer := crypto.SigningKeyPair.generate())
        text = ydoc.get("text", type=pycrdt.Text)
        doc = await client.open("flush-snapshot", key=KEY, signing_key=signer, crdt=ydoc)
        text += "content"
        await doc.flush(5)
        first = doc.session.active_snapshot
        assert first is not None
        doc.write_snapshot()
        await doc.flush(5)
        active = doc.session.active_snapshot
        assert active is not None and active.snapshot_id != first.snapshot_id
        stored = await jetstream.last_scoped(
            client.js, client.config.stream_name, DocumentSubjects.of("flush-snapshot").snapshot
        )
        assert stored is not None
        assert wire.decode(stored.data, doc_id="flush-snapshot").snapshot_id == active.snapshot_id


async def test_a_reader_verifying_on_worker_threads_converges(broker) -> None:
    threaded = SecsyncConfig(batch_interval=0.0, verify_threads=1, snapshot_after_updates=50)
    async with (
        secsync.connect(broker.url, config=SecsyncConfig(batch_interval=0.0)) as wc,
        secsync.connect(broker.url, config=threaded) as rc,
    ):
        writer, reader = YClient(), YClient()
        dw = await open_y(wc, "threaded", writer)
        for i in range(40):  # stored before the reader opens: loaded as one batch
            writer.text.insert(len(writer.text), f"{i} ")
            await asyncio.sleep(0)
        await dw.flush(10)
        dr = await open_y(rc, "threaded", reader)
        assert reader.content == writer.content
        assert rc._verify_pool is not None  # one pool for the client's documents
        for i in range(40, 200):  # and followed live, in bursts
            writer.text.insert(len(writer.text), f"{i} ")
            await asyncio.sleep(0)
        await dw.flush(10)
        await until(dr, lambda: reader.content == writer.content)
        assert reader.content.split() == [str(i) for i in range(200)]
    assert rc._verify_pool is None  # ended with the client


async def test_offline_client_catches_up_from_snapshot_and_updates(broker) -> None:
    config = SecsyncConfig(batch_interval=0.002, snapshot_after_updates=5)
    async with secsync.connect(broker.url, config=config) as client:
        a = YClient()
        da = await open_y(client, "offline", a)
        for i in range(12):
            a.text.insert(len(a.text), f"{i},")
            await da.flush(5)
    async with secsync.connect(broker.url, config=config) as client:
        late = YClient()
        dl = await open_y(client, "offline", late)
        assert late.content == a.content
        loaded = [e for e in _drain(dl) if isinstance(e, DocumentLoaded)]
        assert loaded and loaded[0].snapshot_id is not None
        assert loaded[0].updates < 12  # a later snapshot spared most of the updates


def _drain(doc: Document) -> list[Event]:
    out = []
    while not doc._events.empty():
        out.append(doc._events.get_nowait())
    return out


async def test_broker_killed_and_restarted_loses_no_acknowledged_update(broker) -> None:
    config = SecsyncConfig(
        batch_interval=0.002, publish_timeout=1.0, request_timeout=1.0, retry_max=0.5
    )
    async with (
        secsync.connect(broker.url, config=config) as c1,
        secsync.connect(broker.url, config=config) as c2,
    ):
        a, b = YClient(), YClient()
        da, db = await open_y(c1, "crash", a), await open_y(c2, "crash", b)
        for _i in range(20):
            a.text.insert(len(a.text), "a")
            await da.flush(5)
        acknowledged = a.content
        broker.kill()
        a.text.insert(0, "during outage ")  # stays pending while the broker is down
        await asyncio.to_thread(broker.restart)
        await da.flush(20)
        b.text.insert(len(b.text), " b")
        await db.flush(20)
        expected = "during outage " + acknowledged + " b"
        await until(da, lambda: a.content == expected, timeout=20)
        await until(db, lambda: b.content == expected, timeout=20)
        # both resumed from their last applied sequence: nothing was downloaded twice
        assert da.redelivered == 0 and db.redelivered == 0
        assert da.last_sequence == db.last_sequence > 20


async def test_snapshot_race_one_wins_and_loser_rebases(broker) -> None:
    async with (
        secsync.connect(broker.url, config=FAST) as c1,
        secsync.connect(broker.url, config=FAST) as c2,
    ):
        a, b = YClient(), YClient()
        da = await open_y(c1, "race", a)
        a.text.insert(0, "base")
        await da.flush(5)
        db = await open_y(c2, "race", b)
        a.text.insert(4, " A")
        b.text.insert(0, "B ")
        # both write a snapshot against the same parent, concurrently
        sa = da.session.create_snapshot()
        sb = db.session.create_snapshot()
        await asyncio.gather(da._sender.publish_stored(sa), db._sender.publish_stored(sb))
        await asyncio.gather(da.flush(5), db.flush(5))
        await until([da, db], lambda: a.content == b.content == "B base A")
        stored = await jetstream.messages_after(
            c1.nc, FAST.stream_name, DocumentSubjects.of("race").snapshot, 1
        )
        ids = [wire.decode(m.data, doc_id="race").public_data.snapshot_id for m in stored]
        assert (sa.snapshot_id in ids) != (sb.snapshot_id in ids)  # exactly one stored


async def test_update_refused_for_stale_snapshot_is_rebased(broker) -> None:
    async with (
        secsync.connect(broker.url, config=FAST) as c1,
        secsync.connect(broker.url, config=FAST) as c2,
    ):
        a, b = YClient(), YClient()
        da = await open_y(c1, "stale", a)
        a.text.insert(0, "x")
        await da.flush(5)
        db = await open_y(c2, "stale", b)
        # b prepares an update on the current snapshot while a moves to a new one
        b.text.insert(0, "y")
        (stale,) = [m for m in db.session.data_to_send() if isinstance(m, Update)]
        snap = da.session.create_snapshot()
        await da._sender.publish_stored(snap)
        await db._sender.publish_stored(stale)  # refused by compare-and-set, rebased
        await db.flush(5)
        await until(da, lambda: a.content == "yx")
        stored = await jetstream.messages_after(
            c1.nc, FAST.stream_name, DocumentSubjects.of("stale").update, 1
        )
        updates = [wire.decode(m.data, doc_id="stale") for m in stored]
        assert [u.public_data.ref_snapshot_id for u in updates] == [snap.snapshot_id]


async def test_retried_snapshot_publish_is_stored_once(broker) -> None:
    async with secsync.connect(broker.url, config=FAST) as client:
        a = YClient()
        da = await open_y(client, "retry", a)
        a.text.insert(0, "x")
        await da.flush(5)
        snap = da.session.create_snapshot()
        payload = wire.encode(snap, include_doc_id=False)
        headers = da.binding.headers(snap)
        first, _, _ = await da._io.store(da.subjects.snapshot, payload, headers)
        # the acknowledgement was "lost": the same publish is retried
        assert (
            landed(headers["Nats-Msg-Id"], await da._io.last_direct(da.subjects.snapshot)) == first
        )
        await da._sender.publish_stored(snap)
        stored = await jetstream.messages_after(
            client.nc, FAST.stream_name, da.subjects.snapshot, 1
        )
        assert sum(m.headers.get("Nats-Msg-Id") == headers["Nats-Msg-Id"] for m in stored) == 1
        assert da.session.active_snapshot is not None
        assert da.session.active_snapshot.snapshot_id == snap.snapshot_id


async def test_hundred_documents_share_one_connection_without_leaks(broker) -> None:
    async with secsync.connect(broker.url, config=FAST) as client:
        before = (await client.js.stream_info(FAST.stream_name)).state.consumer_count
        peers = [YClient() for _ in range(100)]
        docs = [await open_y(client, f"many-{i}", p) for i, p in enumerate(peers)]
        assert (await client.js.stream_info(FAST.stream_name)).state.consumer_count == before + 100
        for i, p in enumerate(peers):
            p.text.insert(0, f"doc {i}")
        await asyncio.gather(*(d.flush(10) for d in docs))
        for d in docs:
            await d.close()
        info = await client.js.stream_info(FAST.stream_name)
        assert info.state.consumer_count == before
        assert len(client.nc._subs) <= 2  # nothing left behind but the client's own inbox
        async with secsync.connect(broker.url, config=FAST) as reader:
            check = YClient()
            d = await open_y(reader, "many-57", check)
            assert check.content == "doc 57"
            await d.close()


async def test_five_megabyte_snapshot_round_trips_in_parts(broker) -> None:
    # parts of at most 1 MiB, as a broker with the default payload limit requires
    config = SecsyncConfig(batch_interval=0.005, max_part_bytes=1024 * 1024 - 4096)
    async with secsync.connect(broker.url, config=config) as client:
        a = YClient()
        blob = "".join(chr(0x41 + (i * 7919) % 26) for i in range(5_000_000))
        a.text.insert(0, blob)
        da = await open_y(client, "big", a)
        await da.flush(30)
        stored = await jetstream.messages_after(
            client.nc, config.stream_name, da.subjects.snapshot, 1
        )
        assert len(stored) >= 5 and all(len(m.data) <= config.max_part_bytes for m in stored)
        async with secsync.connect(broker.url, config=config) as other:
            b = YClient()
            await open_y(other, "big", b)
            assert b.content == blob


async def test_missing_stream_is_a_clear_error(broker) -> None:
    from secsync.errors import StreamNotFoundError

    config = SecsyncConfig(provision_stream=False, request_timeout=2.0)
    async with secsync.connect(broker.url, config=config) as client:
        with pytest.raises(StreamNotFoundError):
            await open_y(client, "nowhere", YClient())
        assert client.documents == {}
        assert (await client.js.account_info()).consumers == 0


async def test_events_iterate_and_end_on_close(broker) -> None:
    async with secsync.connect(broker.url, config=FAST) as client:
        a = YClient()
        doc = await open_y(client, "iterate", a)
        a.text.insert(0, "x")
        await doc.flush(5)
        await doc.close()
        kinds = [type(e).__name__ async for e in doc]
        assert kinds[0] == "DocumentLoaded" and "SnapshotStored" in kinds
