"""Updates that cannot be applied yet are held within a byte budget: a flood under many fresh
identities is refused past it and reported, and honest edits keep flowing."""

from __future__ import annotations

import os

import secsync
from secsync.config import SecsyncConfig
from secsync.protocol import crypto, sealing
from secsync.protocol.changes import serialize_changes
from secsync.protocol.events import MessageRejected
from secsync.protocol.messages import UpdatePublicData
from secsync.protocol.session import DocumentSession
from secsync.transport.subjects import DocumentSubjects
from tests.factories import DOC_ID, KEY, make_snapshot, plain_yjs_doc, yjs_change
from tests.security.forge import native
from tests.transport.helpers import KEY as DOC_KEY
from tests.transport.helpers import YClient, open_y, until

MiB = 1024 * 1024
_CONTENT: dict[int, bytes] = {}


def _content(size: int) -> bytes:
    """A real Yjs change of about ``size`` bytes (applies cleanly, again and again)."""
    if size not in _CONTENT:
        _CONTENT[size] = yjs_change(os.urandom(size // 2).hex())[0]
    return _CONTENT[size]


def _junk_update(
    signer: crypto.SigningKeyPair, doc_id: str, ref: bytes, clock: int, size: int, key: bytes
):
    public = UpdatePublicData(
        doc_id=doc_id, pub_key=signer.public_key, ref_snapshot_id=ref, clock=clock
    )
    return sealing.seal(public, serialize_changes([_content(size)]), key, signer)


def test_the_budget_bounds_a_flood_and_is_released_when_the_snapshot_arrives() -> None:
    config = SecsyncConfig(max_queued_bytes=8 * MiB, max_queued_bytes_per_author=1 * MiB)
    session = DocumentSession(
        DOC_ID, crypto.SigningKeyPair.generate(), KEY, plain_yjs_doc(), config=config
    )
    session.load(None, now=0.0)
    alice = crypto.SigningKeyPair.generate()
    content, _ = yjs_change("base")
    snapshot = make_snapshot(alice, content)  # not delivered yet: updates on it wait
    refused = 0
    for _ in range(40):  # forty fresh identities, 4 x 300 KB each
        mallory = crypto.SigningKeyPair.generate()
        for clock in range(4):
            events = session.receive(
                _junk_update(mallory, DOC_ID, snapshot.snapshot_id, clock, 300_000, KEY), now=0.0
            )
            refused += sum(isinstance(e, MessageRejected) and e.error.code == 217 for e in events)
            assert session._budget.held <= 8 * MiB
            assert session._budget.held_by(mallory.public_key) <= 1 * MiB
    assert refused >= 40 * 4 - (8 * MiB) // 300_256  # everything past the budget was refused
    session.receive(snapshot, now=0.0)  # the snapshot arrives: what waited is processed and let go
    assert session._budget.held == 0


def test_gaps_hold_within_the_budget_and_let_go_on_a_new_snapshot() -> None:
    config = SecsyncConfig(max_queued_bytes=2 * MiB, max_waiting_authors=3)
    session = DocumentSession(
        DOC_ID, crypto.SigningKeyPair.generate(), KEY, plain_yjs_doc(), config=config
    )
    alice = crypto.SigningKeyPair.generate()
    content, _ = yjs_change("base")
    first = make_snapshot(alice, content)
    session.load(first, now=0.0)
    codes = []
    for _ in range(5):  # clock 1 without 0: waits for its predecessor
        mallory = crypto.SigningKeyPair.generate()
        events = session.receive(
            _junk_update(mallory, DOC_ID, first.snapshot_id, 1, 1000, KEY), now=0.0
        )
        codes += [e.error.code for e in events if isinstance(e, MessageRejected)]
    assert codes == [217, 217]  # the fourth and fifth authors: no room
    assert session._budget.held > 0
    session.receive(make_snapshot(alice, content, parent=first), now=0.0)
    assert session._budget.held == 0


async def test_a_flood_of_fresh_identities_is_bounded_through_nats(broker) -> None:
    budget = 8 * MiB
    config = SecsyncConfig(batch_interval=0.002, max_queued_bytes=budget)
    async with (
        secsync.connect(broker.url, config=config) as c1,
        secsync.connect(broker.url, config=config) as c2,
    ):
        alice, bob = YClient(), YClient()
        da = await open_y(c1, "flood", alice)
        alice.text.insert(0, "honest")
        await da.flush(5)
        db = await open_y(c2, "flood", bob)
        subjects = DocumentSubjects.of("flood")
        unknown = crypto.generate_id()
        peak = 0
        last = None
        for _ in range(40):
            mallory = crypto.SigningKeyPair.generate()
            for clock in range(3):
                junk = _junk_update(mallory, "flood", unknown, clock, 250_000, DOC_KEY)
                last = await c1.js.publish(subjects.update, native(junk))
        await until(db, lambda: db.last_sequence >= last.seq, timeout=30)
        peak = db.session._budget.held
        assert 0 < peak <= budget
        alice.text.insert(len(alice.text), " and still flowing")
        await da.flush(5)
        await until(db, lambda: bob.content == "honest and still flowing")
