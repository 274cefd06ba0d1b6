"""One identity used by two clients at once: clock collisions are applied and reported by
every reader, in any order, and never wedge the author's queue."""

from __future__ import annotations

import random

import pycrdt
import pytest

from secsync.protocol import crypto
from secsync.protocol.collisions import ClockDigests, content_version, message_digest
from secsync.protocol.events import IdentityCollision, IdentityInUse, MessageRejected
from secsync.protocol.messages import Snapshot, Update
from tests.factories import YPeer, make_snapshot, make_update, plain_yjs_doc, yjs_change


def _two_writers(n: int) -> tuple[crypto.SigningKeyPair, Snapshot, list[Update], list[str]]:
    """Two documents writing ``n`` updates each, clocks 0..n-1, under one key."""
    me = crypto.SigningKeyPair.generate()
    base, _ = yjs_change("")
    snap = make_snapshot(me, base)
    updates, words = [], []
    for tag in "ab":
        doc: pycrdt.Doc = plain_yjs_doc()
        doc.apply_update(base)
        text = doc.get("text", type=pycrdt.Text)
        for clock in range(n):
            before = doc.get_state()
            word = f"<{tag}{clock}>"
            text.insert(len(text), word)
            words.append(word)
            updates.append(make_update(me, snap, clock, [doc.get_update(before)]))
    return me, snap, updates, words


@pytest.mark.parametrize("seed", range(12))
def test_readers_apply_both_sequences_in_any_order(seed: int) -> None:
    me, snap, updates, words = _two_writers(8)
    order = list(updates)
    random.Random(seed).shuffle(order)
    reader = YPeer()
    reader.session.load(snap, now=0.0)
    events = reader.session.receive_many(order, now=0.0)
    assert not [e for e in events if isinstance(e, MessageRejected)], events
    assert all(word in reader.content for word in words)
    collisions = {e.clock for e in events if isinstance(e, IdentityCollision)}
    assert collisions == set(range(8))  # each clock reported once, whichever copy came second
    assert reader.session.update_clocks[me.public_key] == 7
    assert reader.session.next_deadline() is None  # nothing waits: no gap, no recovery
    # every reader ends with the same document, whatever the order
    other = YPeer()
    other.session.load(snap, now=0.0)
    other.session.receive_many(updates, now=0.0)
    assert sorted(other.content) == sorted(reader.content)
    text = other.doc.get("text", type=pycrdt.Text)
    assert str(text) == str(reader.doc.get("text", type=pycrdt.Text))


def test_a_collision_waiting_behind_a_gap_is_applied_when_the_gap_closes() -> None:
    _, snap, updates, words = _two_writers(3)
    a, b = updates[:3], updates[3:]
    reader = YPeer()
    reader.session.load(snap, now=0.0)
    events = reader.session.receive_many([a[2], b[2], b[2], a[1]], now=0.0)  # b[2] twice
    assert not [e for e in events if isinstance(e, MessageRejected | IdentityCollision)]
    events = reader.session.receive(b[0], now=0.0)
    assert [e.clock for e in events if isinstance(e, IdentityCollision)] == [2]
    events = reader.session.receive_many([a[0], b[1]], now=0.0)
    assert [e.clock for e in events if isinstance(e, IdentityCollision)] == [0, 1]
    assert all(word in reader.content for word in words)
    assert reader.session.next_deadline() is None


def test_a_writer_sees_its_key_written_elsewhere_ahead_of_it() -> None:
    """The other client is ahead: its updates of our key wait for our acknowledgements and
    are applied as they come, one of them at a clock of ours: a collision, we stop."""
    peer = YPeer()
    peer.session.load(None, now=0.0)
    peer.type(0, "base")
    (snap,) = peer.session.data_to_send()
    assert isinstance(snap, Snapshot)
    peer.session.snapshot_stored(snap.snapshot_id, now=0.0)
    base = peer.doc.get_update()
    mine = []
    for i in range(2):
        peer.type(len(peer.text), f"m{i}")
        (update,) = peer.session.data_to_send()
        mine.append(update)
    elsewhere: pycrdt.Doc = plain_yjs_doc()
    elsewhere.apply_update(base)
    text = elsewhere.get("text", type=pycrdt.Text)
    theirs = []
    for clock in range(3):
        before = elsewhere.get_state()
        text.insert(0, f"e{clock}")
        theirs.append(make_update(peer.signer, snap, clock, [elsewhere.get_update(before)]))
    events = peer.session.receive(theirs[2], now=0.0)  # waits for clocks 0..1
    assert not events
    events = peer.session.update_stored(snap.snapshot_id, 0)
    events += peer.session.update_stored(snap.snapshot_id, 1)
    assert [e.clock for e in events if isinstance(e, IdentityCollision)] == []
    # applied after our clock 1 (Yjs holds its content until e0 and e1 arrive)
    assert peer.session.update_clocks[peer.signer.public_key] == 2
    assert peer.session.identity_in_use is None  # clock 2 is not one of ours
    events = peer.session.receive(theirs[0], now=0.0)
    assert [type(e) for e in events if isinstance(e, IdentityCollision | IdentityInUse)] == [
        IdentityCollision,
        IdentityInUse,
    ]
    assert peer.session.identity_in_use is not None
    peer.session.receive(theirs[1], now=0.0)
    assert all(word in peer.content for word in ("base", "m0", "m1", "e0", "e1", "e2"))
    assert peer.session.next_deadline() is None


def test_clock_digests_are_bounded_and_survive_export() -> None:
    digests = ClockDigests(3)
    for clock in range(5):
        digests.add(b"a", clock, bytes([clock]) * 16)
    digests.add(b"a", 4, b"x" * 16)
    assert len(digests) == 3 and digests.get(b"a", 0) == ()
    assert digests.get(b"a", 4) == (b"\x04" * 16, b"x" * 16)
    again = ClockDigests.restore(digests.export(), 3)
    assert again.export() == digests.export()


def test_digests_tell_messages_apart_and_versions_follow_content() -> None:
    me = crypto.SigningKeyPair.generate()
    change, _ = yjs_change("x")
    snap = make_snapshot(me, change)
    one, two = make_update(me, snap, 0, [change]), make_update(me, snap, 0, [change])
    assert message_digest(one) == message_digest(one) != message_digest(two)
    peer = YPeer()
    before = content_version(peer.session.crdt)
    peer.type(0, "y")
    assert content_version(peer.session.crdt) != before
    assert content_version(object()) is None
