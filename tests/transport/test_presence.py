"""Presence through a real broker: appears, follows, disappears; replays and forgeries fail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pycrdt

import secsync
from secsync.config import SecsyncConfig
from secsync.protocol import crypto
from secsync.protocol.events import Event, MessageRejected, PresenceChanged
from secsync.transport import Document
from tests.factories import plain_yjs_doc

KEY = crypto.generate_key()
CONFIG = SecsyncConfig(
    batch_interval=0.002, presence_interval=0.01, presence_heartbeat=0.3, presence_timeout=1.0
)


async def wait_event(
    doc: Document, predicate: Callable[[Event], bool], timeout: float = 10
) -> Event:
    async with asyncio.timeout(timeout):
        while True:
            event = await doc.next_event()
            if predicate(event):
                return event


async def open_pair(broker) -> tuple:  # type: ignore[no-untyped-def]
    c1 = await secsync.connect(broker.url, config=CONFIG)
    c2 = await secsync.connect(broker.url, config=CONFIG)
    ya, yb = plain_yjs_doc(), plain_yjs_doc()
    ka, kb = crypto.SigningKeyPair.generate(), crypto.SigningKeyPair.generate()
    da = await c1.open("presence", key=KEY, signing_key=ka, crdt=ya)
    ya.get("text", type=pycrdt.Text).insert(0, "doc")
    await da.flush(5)
    db = await c2.open("presence", key=KEY, signing_key=kb, crdt=yb)
    return c1, c2, da, db, ka, kb


async def test_awareness_state_appears_and_leaves(broker) -> None:
    c1, c2, da, db, ka, _ = await open_pair(broker)
    try:
        assert da.presence.awareness is not None and db.presence.awareness is not None
        da.presence.awareness.set_local_state({"user": "alice", "cursor": 2})
        seen = await wait_event(db, lambda e: isinstance(e, PresenceChanged) and e.state)
        assert isinstance(seen, PresenceChanged) and seen.author == ka.public_key
        client_id = da.presence.awareness.client_id
        assert db.presence.awareness.states[client_id] == {"user": "alice", "cursor": 2}
        assert db.presence.states == {ka.public_key: {"user": "alice", "cursor": 2}}
        # a burst of cursor moves is throttled, the last state wins
        for cursor in range(50):
            da.presence.awareness.set_local_state({"user": "alice", "cursor": cursor})
        await wait_event(
            db,
            lambda e: isinstance(e, PresenceChanged) and e.state == {"user": "alice", "cursor": 49},
        )
        assert da.presence.tracker.clock < 50
        await da.close()  # a clean leave is seen at once
        left = await wait_event(db, lambda e: isinstance(e, PresenceChanged) and e.state is None)
        assert isinstance(left, PresenceChanged) and not left.timed_out
        assert client_id not in db.presence.awareness.states
    finally:
        await c1.close()
        await c2.close()


async def test_peer_that_vanishes_disappears_after_the_timeout(broker) -> None:
    c1, c2, da, db, ka, _ = await open_pair(broker)
    try:
        da.presence.set_local_state({"cursor": 1})
        await wait_event(db, lambda e: isinstance(e, PresenceChanged) and e.state)
        # the process dies: no leave message, no heartbeats
        assert da.presence._task is not None
        da.presence._task.cancel()
        await c1.nc.close()
        started = asyncio.get_running_loop().time()
        gone = await wait_event(db, lambda e: isinstance(e, PresenceChanged) and e.state is None)
        assert isinstance(gone, PresenceChanged) and gone.timed_out
        assert gone.author == ka.public_key
        elapsed = asyncio.get_running_loop().time() - started
        assert elapsed <= CONFIG.presence_timeout + 1.0
    finally:
        await c2.close()
        await c1.close()


async def test_replayed_and_forged_presence_is_rejected(broker) -> None:
    c1, c2, da, db, ka, _ = await open_pair(broker)
    try:
        captured: list[bytes] = []

        async def record(msg) -> None:  # type: ignore[no-untyped-def]
            captured.append(msg.data)

        sniff = await c2.nc.subscribe(da.subjects.ephemeral, cb=record)
        da.presence.set_local_state({"cursor": 5})
        await wait_event(db, lambda e: isinstance(e, PresenceChanged) and e.state == {"cursor": 5})
        await sniff.unsubscribe()
        # replay everything a sent, as a hostile relay would
        for data in captured:
            await c2.nc.publish(da.subjects.ephemeral, data)
        replay = await wait_event(
            db, lambda e: isinstance(e, MessageRejected) and e.error.code == 303
        )
        assert isinstance(replay, MessageRejected)
        # a third participant, who holds the key, claims a's cursor (its Yjs client id)
        async with secsync.connect(broker.url, config=CONFIG) as c3:
            mallory = crypto.SigningKeyPair.generate()
            dm = await c3.open("presence", key=KEY, signing_key=mallory, crdt=plain_yjs_doc())
            assert da.presence.awareness is not None
            dm.presence.tracker.local_yjs_client_id = da.presence.awareness.client_id
            dm.presence.set_local_state({"cursor": 0})
            forged = await wait_event(
                db, lambda e: isinstance(e, MessageRejected) and e.error.code == 311
            )
            assert isinstance(forged, MessageRejected) and forged.author == mallory.public_key
            assert db.presence.states.get(ka.public_key) == {"cursor": 5}
            assert mallory.public_key not in db.presence.states
            assert db.presence.awareness is not None
            assert db.presence.awareness.states[da.presence.awareness.client_id] == {"cursor": 5}
    finally:
        await c1.close()
        await c2.close()


async def test_presence_works_on_a_document_nobody_has_written(broker) -> None:
    """Presence needs a snapshot's key: setting a state on an empty document writes a first,
    empty snapshot, and both sides see each other without anyone editing."""
    c1 = await secsync.connect(broker.url, config=CONFIG)
    c2 = await secsync.connect(broker.url, config=CONFIG)
    try:
        ya, yb = plain_yjs_doc(), plain_yjs_doc()
        ka, kb = crypto.SigningKeyPair.generate(), crypto.SigningKeyPair.generate()
        da = await c1.open("fresh-presence", key=KEY, signing_key=ka, crdt=ya)
        db = await c2.open("fresh-presence", key=KEY, signing_key=kb, crdt=yb)
        assert da.session.active_snapshot is None and db.session.active_snapshot is None
        da.presence.set_local_state({"user": "alice"})
        db.presence.set_local_state({"user": "bob"})
        await wait_event(db, lambda e: isinstance(e, PresenceChanged) and e.state is not None)
        await wait_event(da, lambda e: isinstance(e, PresenceChanged) and e.state is not None)
        assert db.presence.states[ka.public_key] == {"user": "alice"}
        assert da.presence.states[kb.public_key] == {"user": "bob"}
        # one first snapshot for both (the loser of the race adopts the winner's), no text
        assert da.session.active_snapshot == db.session.active_snapshot
        assert str(ya.get("text", type=pycrdt.Text)) == ""
    finally:
        await c1.close()
        await c2.close()
