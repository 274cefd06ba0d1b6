"""Nobody can claim an author's message ids in advance and make the broker drop its updates
as duplicates: an update's id follows from its signature."""

from __future__ import annotations

import secsync
from secsync.config import SecsyncConfig
from secsync.protocol.encoding import b64encode
from secsync.transport.events import PublishFailed
from secsync.transport.subjects import DocumentSubjects, update_msg_id
from tests.transport.helpers import YClient, open_y, until

CONFIG = SecsyncConfig(batch_interval=0.002, snapshot_after_updates=0)


async def test_junk_stored_under_guessable_ids_drops_nothing(broker) -> None:
    async with (
        secsync.connect(broker.url, config=CONFIG) as c1,
        secsync.connect(broker.url, config=CONFIG) as attacker,
    ):
        alice = YClient()
        doc = await open_y(c1, "ids", alice)
        alice.text.insert(0, "start")
        await doc.flush(5)
        snapshot = doc.session.active_snapshot
        assert snapshot is not None
        subjects = DocumentSubjects.of("ids")
        ref, author = b64encode(snapshot.snapshot_id), b64encode(alice.signer.public_key)
        for clock in range(40):  # every id a snapshot/author/clock scheme would use next
            await attacker.js.publish(
                subjects.update, b"junk", headers={"Nats-Msg-Id": f"u.{ref}.{author}.{clock}"}
            )
        for i in range(20):
            alice.text.insert(len(alice.text), f" {i}")
            await doc.flush(5)
        failures = []
        while not doc._events.empty():
            event = doc._events.get_nowait()
            if isinstance(event, PublishFailed):
                failures.append(event)
        assert failures == []  # every update stored at once, none taken for a duplicate
        async with secsync.connect(broker.url, config=CONFIG) as c2:
            bob = YClient()
            reader = await open_y(c2, "ids", bob)
            await until(reader, lambda: bob.content == alice.content)
            assert bob.content == "start" + "".join(f" {i}" for i in range(20))


def test_an_update_id_is_the_same_for_the_same_bytes_and_unguessable_otherwise() -> None:
    from secsync.protocol import crypto
    from tests.factories import make_snapshot, make_update, yjs_change

    alice = crypto.SigningKeyPair.generate()
    content, _ = yjs_change("x")
    snapshot = make_snapshot(alice, content)
    first = make_update(alice, snapshot, 0, [content])
    again = make_update(alice, snapshot, 0, [content])  # same clock, other nonce
    assert update_msg_id(first) == update_msg_id(first)
    assert update_msg_id(first) != update_msg_id(again)
    assert b64encode(alice.public_key) not in update_msg_id(first)
