"""The document session: convergence, queues, snapshots, rebase, recovery, rejections."""

from __future__ import annotations

import pycrdt
import pytest

from secsync.config import SecsyncConfig
from secsync.errors import IdentityInUseError, SecsyncError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.changes import deserialize_changes
from secsync.protocol.events import (
    GapDetected,
    IdentityCollision,
    IdentityInUse,
    MessageRejected,
    RecoveryNeeded,
    SnapshotApplied,
    SnapshotStored,
    UpdateApplied,
    UpdateStored,
)
from secsync.protocol.messages import ProofChainEntry, Snapshot, Update
from secsync.protocol.policy import AllowList
from secsync.protocol.session import DocumentSession
from tests.factories import (
    DOC_ID,
    KEY,
    MemoryBroker,
    Participant,
    YPeer,
    make_snapshot,
    make_update,
    plain_yjs_doc,
    yjs_change,
)

EMPTY_STATE = plain_yjs_doc().get_update()


def test_snapshot_content_the_crdt_refuses_is_rejected() -> None:
    peer = YPeer()
    peer.session.load(None, now=0.0)
    snap = make_snapshot(crypto.SigningKeyPair.generate(), b"not a yjs update")
    assert rejected_code(peer.session.receive(snap, now=0.0)) == 105
    assert peer.session.active_snapshot is None


def codes(events: list[object]) -> list[int]:
    return [e.error.code for e in events if isinstance(e, MessageRejected)]


def rejected_code(events: list[object]) -> int:
    found = codes(events)
    assert len(found) == 1, events
    return found[0]


def two_peers(config: SecsyncConfig | None = None) -> tuple[YPeer, YPeer, MemoryBroker]:
    broker = MemoryBroker()
    a, b = YPeer(config=config), YPeer(config=config)
    a.p = Participant(a.session, broker)  # type: ignore[attr-defined]
    b.p = Participant(b.session, broker)  # type: ignore[attr-defined]
    return a, b, broker


# --- convergence through the broker rules ----------------------------------------------------


def test_two_peers_converge_and_report_authors() -> None:
    a, b, broker = two_peers()
    a.type(0, "Hello")
    a.p.sync()
    assert isinstance(broker.log[0], Snapshot)  # the first change creates the initial snapshot
    b.p.sync()
    assert b.content == "Hello"
    b.type(5, " World")
    b.p.sync()
    a.type(0, ">")
    a.p.sync()
    b.p.sync()
    a.p.sync()
    assert a.content == b.content == ">Hello World"
    applied = [e for e in a.p.events if isinstance(e, UpdateApplied)]
    assert [(e.author, e.clock) for e in applied] == [(b.signer.public_key, 0)]
    assert a.session.is_synced and b.session.is_synced


def test_burst_of_changes_becomes_one_update() -> None:
    a, b, broker = two_peers()
    a.type(0, "x")
    a.p.sync()
    for i in range(50):
        a.type(i, "k")
    a.p.sync()
    assert len(broker.log) == 2
    update = broker.log[1]
    assert isinstance(update, Update) and update.clock == 0
    b.p.sync()
    assert b.content == a.content


def test_large_pending_changes_are_split() -> None:
    a, _, broker = two_peers(SecsyncConfig(max_update_plaintext_bytes=1024))
    a.type(0, "x")
    a.p.sync()
    for i in range(40):
        a.type(i, "y" * 100)
    a.p.sync()
    updates = [m for m in broker.log if isinstance(m, Update)]
    assert len(updates) > 1
    assert [u.clock for u in updates] == list(range(len(updates)))


def test_snapshot_policy_triggers_snapshot_and_updates_continue_on_it() -> None:
    a, b, broker = two_peers(SecsyncConfig(snapshot_after_updates=3))
    a.type(0, "a")
    a.p.sync()
    for i in range(5):
        a.type(i, "b")
        a.p.sync()
    kinds = [type(m).__name__ for m in broker.log]
    assert kinds == ["Snapshot", "Update", "Update", "Update", "Snapshot", "Update"]
    b.p.sync()
    assert b.content == a.content
    second = broker.log[4]
    assert isinstance(second, Snapshot)
    assert second.public_data.parent_snapshot_update_clocks == {a.signer.public_key: 2}


def test_racing_snapshots_one_wins_loser_rebases() -> None:
    a, b, broker = two_peers()
    a.type(0, "base")
    a.p.sync()
    b.p.sync()
    a.type(4, " from a")
    b.type(0, "from b ")
    # both want to write a snapshot now
    snap_a = a.session.create_snapshot()
    snap_b = b.session.create_snapshot()
    assert broker.publish(snap_a, a.p.seen)
    a.session.snapshot_stored(snap_a.snapshot_id, now=0.0)
    a.p.seen = len(broker.log)
    assert not broker.publish(snap_b, b.p.seen)  # compare-and-set refuses the loser
    b.session.snapshot_rejected(snap_b.snapshot_id)
    b.p.sync()  # receives a's snapshot, re-sends its change as an update on it
    a.p.sync()
    assert a.content == b.content
    assert "from a" in a.content and "from b" in a.content
    applied = [e for e in b.p.events if isinstance(e, SnapshotApplied)]
    assert applied[-1].snapshot_id == snap_a.snapshot_id and applied[-1].rebased_changes >= 1


def test_update_refused_for_stale_snapshot_is_rebased() -> None:
    a, b, broker = two_peers()
    a.type(0, "base")
    a.p.sync()
    b.p.sync()
    snap = a.session.create_snapshot()
    assert broker.publish(snap, a.p.seen)
    a.session.snapshot_stored(snap.snapshot_id, now=0.0)
    a.p.seen = len(broker.log)
    b.type(0, "B")
    (stale,) = b.session.data_to_send()
    assert isinstance(stale, Update) and not broker.publish(stale, b.p.seen)
    assert b.session.update_rejected(stale.public_data.ref_snapshot_id, stale.clock) == []
    # nothing rolls back: the refused update waits, as it is, and nothing more is written on
    # a snapshot the broker said is no longer the latest
    assert b.session.unacknowledged == 0 and b.session.pending_changes == 1
    assert not b.session.is_synced
    assert b.session.unacknowledged_messages() == [stale]
    b.type(1, "b")
    assert b.session.data_to_send() == []
    b.p.sync()  # the newer snapshot arrives: both changes are sealed again on it
    rebased = [m for m in broker.log[-2:] if isinstance(m, Update)]
    assert rebased and all(m.public_data.ref_snapshot_id == snap.snapshot_id for m in rebased)
    assert rebased[0].clock == 0
    applied = [e for e in b.p.events if isinstance(e, SnapshotApplied)]
    assert applied[-1].rebased_changes >= 1
    a.p.sync()
    assert a.content == b.content == "Bbbase"
    assert b.session.is_synced


def _peer_with_updates(n: int) -> tuple[YPeer, Snapshot, list[Update]]:
    """A loaded peer on its own stored snapshot with ``n`` updates in flight, one per edit."""
    peer = YPeer()
    peer.session.load(None, now=0.0)
    peer.type(0, "base")
    (snap,) = peer.session.data_to_send()
    assert isinstance(snap, Snapshot)
    peer.session.snapshot_stored(snap.snapshot_id, now=0.0)
    updates = []
    for i in range(n):
        peer.type(len(peer.text), str(i))
        (update,) = peer.session.data_to_send()
        assert isinstance(update, Update)
        updates.append(update)
    return peer, snap, updates


def test_refusal_never_reuses_a_clock_whose_publish_may_still_land() -> None:
    """The first of three pipelined updates is refused while the other two may still be
    stored: none of their clocks is sealed again with other content."""
    peer, snap, (u0, u1, u2) = _peer_with_updates(3)
    session = peer.session
    session.update_rejected(snap.snapshot_id, u0.clock)
    assert session.unacknowledged == 2 and session.pending_changes == 1
    assert session.update_stored(snap.snapshot_id, u1.clock) == [UpdateStored(snap.snapshot_id, 1)]
    peer.type(len(peer.text), "later")
    assert session.data_to_send() == []  # not on the stale snapshot, under no clock
    # The refusal turns out to have been junk on the snapshot subject: the refused update goes
    # out again as it was, byte for byte; new edits continue after the highest clock.
    (again,) = session.resend_refused(snap.snapshot_id)
    assert again is u0 and wire.encode(again) == wire.encode(u0)
    assert session.resend_refused(snap.snapshot_id) == []
    (after,) = session.data_to_send()
    assert isinstance(after, Update) and after.clock == 3
    for update in (u0, u2, after):
        session.update_stored(snap.snapshot_id, update.clock)
    assert session.is_synced and session.update_clocks[peer.signer.public_key] == 3


def test_preempted_update_is_sealed_again_under_a_fresh_clock() -> None:
    """Other bytes under our update's message id: its changes go out under the next clock,
    and a snapshot follows once nothing is in flight (readers may lack that clock)."""
    peer, snap, (u0, u1) = _peer_with_updates(2)
    session = peer.session
    assert session.update_preempted(snap.snapshot_id, u0.clock) == []
    assert session.pending_changes == 1 and session.snapshot_requested
    (resealed,) = session.data_to_send()  # u1 is in flight: no snapshot yet
    assert isinstance(resealed, Update) and resealed.clock == 2
    assert wire.encode(resealed) != wire.encode(u0)
    session.update_stored(snap.snapshot_id, u1.clock)
    session.update_stored(snap.snapshot_id, resealed.clock)
    (snapshot,) = session.data_to_send()
    assert isinstance(snapshot, Snapshot)
    assert snapshot.public_data.parent_snapshot_update_clocks[peer.signer.public_key] == 2
    # the snapshot holds what the preempted update carried
    reader = YPeer()
    reader.session.load(None, now=0.0)
    reader.session.receive(snap, now=0.0)
    reader.session.receive(snapshot, now=0.0)
    assert reader.content == peer.content == "base01"


def test_own_clock_written_elsewhere_stops_writing_and_keeps_the_changes() -> None:
    """The stream holds another update of our key under a clock we have in flight, with
    content we lacked: our identity is in use on another client. It is applied, we stop
    writing (typed event, error), our own update stays to be acknowledged, and local changes
    made afterwards stay pending."""
    peer, snap, (u0,) = _peer_with_updates(1)
    session = peer.session
    change, _ = yjs_change("elsewhere")
    other = make_update(peer.signer, snap, u0.clock, [change])
    events = session.receive(other, now=0.0)
    assert IdentityCollision(snap.snapshot_id, peer.signer.public_key, 0) in events
    (in_use,) = [e for e in events if isinstance(e, IdentityInUse)]
    assert in_use.error.code == 805 and in_use.clock == 0 and in_use.kept_changes == 1
    assert session.identity_in_use is in_use.error
    assert "elsewhere" in peer.content and "base0" in peer.content
    assert session.unacknowledged == 1  # ours was sent: its acknowledgement still counts
    peer.type(0, "!")
    assert session.data_to_send() == []  # nothing more under this key
    assert session.pending_changes == 1 and len(session.unsent_changes()) == 2
    assert session.update_stored(snap.snapshot_id, u0.clock) == [UpdateStored(snap.snapshot_id, 0)]
    assert len(session.unsent_changes()) == 1 and not session.is_synced
    with pytest.raises(IdentityInUseError):
        session.create_snapshot()


def test_own_update_from_before_a_restart_is_a_collision_but_not_another_writer() -> None:
    """Another update of our key at a clock we have in flight whose content we hold already
    (sealed before a restart that lost its record): reported as a collision only."""
    peer, snap, (u0,) = _peer_with_updates(1)
    session = peer.session
    (change,) = deserialize_changes(
        sealing.open_sealed(u0, KEY)  # the very content, sealed again
    )
    again = make_update(peer.signer, snap, u0.clock, [change])
    events = session.receive(again, now=0.0)
    assert IdentityCollision(snap.snapshot_id, peer.signer.public_key, 0) in events
    assert not [e for e in events if isinstance(e, IdentityInUse)]
    assert session.identity_in_use is None and session.unacknowledged == 1
    # the very bytes we sent, delivered back, are a confirmation
    events = session.receive(wire.decode(wire.encode(u0), doc_id=DOC_ID), now=0.0)
    assert UpdateStored(snap.snapshot_id, 0) in events


def test_concurrent_initial_snapshots() -> None:
    a, b, broker = two_peers()
    a.type(0, "A")
    b.type(0, "B")
    a.p.sync()
    b.p.sync()  # b's initial snapshot loses, b adopts a's and sends its change as an update
    a.p.sync()
    assert a.content == b.content and sorted(a.content) == ["A", "B"]
    assert sum(isinstance(m, Snapshot) for m in broker.log) == 1


# --- per-author queues --------------------------------------------------------------------------


def _history(n: int = 4) -> tuple[crypto.SigningKeyPair, Snapshot, list[Update], str]:
    author = crypto.SigningKeyPair.generate()
    base, doc = yjs_change("")
    snap = make_snapshot(author, base)
    text = doc.get("text", type=pycrdt.Text)
    updates = []
    for clock in range(n):
        before = doc.get_state()
        text.insert(len(text), str(clock))
        updates.append(make_update(author, snap, clock, [doc.get_update(before)]))
    return author, snap, updates, str(text)


def test_out_of_order_updates_wait_for_their_predecessor() -> None:
    _, snap, updates, expected = _history(4)
    peer = YPeer()
    peer.session.load(snap, now=0.0)
    events = peer.session.receive_many([updates[2], updates[1], updates[3]], now=0.0)
    assert not [e for e in events if isinstance(e, UpdateApplied)]
    assert peer.content == ""
    events = peer.session.receive(updates[0], now=0.5)
    assert [e.clock for e in events if isinstance(e, UpdateApplied)] == [0, 1, 2, 3]
    assert peer.content == expected


def test_duplicates_and_replays_are_no_ops() -> None:
    _, snap, updates, _ = _history(2)
    peer = YPeer()
    peer.session.load(snap, updates, now=0.0)
    content, clocks = peer.content, peer.session.update_clocks
    events = peer.session.receive_many([updates[0], updates[1], snap], now=0.0)
    assert codes(events) == [214, 214]
    assert peer.content == content and peer.session.update_clocks == clocks


def test_another_update_with_a_used_clock_is_a_collision_applied_and_reported() -> None:
    """Two validly signed updates of one author with one clock (one identity on two clients):
    the second is applied and reported, not dropped as a replay; the same bytes again are."""
    author, snap, updates, _ = _history(1)
    peer = YPeer()
    peer.session.load(snap, updates, now=0.0)
    other, _ = yjs_change("twin")
    twin = make_update(author, snap, 0, [other])
    events = peer.session.receive(twin, now=0.0)
    assert IdentityCollision(snap.snapshot_id, author.public_key, 0) in events
    assert not codes(events) and "twin" in peer.content
    assert peer.session.update_clocks[author.public_key] == 0
    assert rejected_code(peer.session.receive(twin, now=0.0)) == 214  # the same message: a replay
    assert rejected_code(peer.session.receive(updates[0], now=0.0)) == 214


def test_unfilled_gap_asks_to_refetch_then_to_recover() -> None:
    config = SecsyncConfig(gap_refetch_after=1.0, gap_recover_after=5.0)
    _, snap, updates, expected = _history(3)
    peer = YPeer(config=config)
    peer.session.load(snap, now=0.0)
    peer.session.receive(updates[2], now=10.0)
    assert peer.session.next_deadline() == 11.0
    assert peer.session.handle_timer(10.5) == []
    (gap,) = peer.session.handle_timer(11.0)
    assert isinstance(gap, GapDetected) and gap.expected_clock == 0 and gap.queued == 1
    assert peer.session.handle_timer(12.0) == []
    (recovery,) = peer.session.handle_timer(15.0)
    assert isinstance(recovery, RecoveryNeeded)
    # the transport recovers from the latest snapshot; clocks 0..1 never come: skipped
    events = peer.session.recover(snap, [updates[2]], reason="gap", now=16.0)
    assert 202 in codes(events)
    assert [e.clock for e in events if isinstance(e, UpdateApplied)] == [2]
    assert peer.session.update_clocks == {updates[2].author: 2}
    assert peer.session.next_deadline() is None
    assert expected.endswith(peer.content[-1:])


def test_clocks_skipped_by_recovery_are_not_claimed_and_are_applied_late() -> None:
    """Recovery gave up on clocks 0..1 of an author. A snapshot written afterwards claims that
    author's updates only below them (its author, who has them stored, refuses it with 102
    and sends again what it lacks), and the skipped updates, should they arrive after all,
    are applied."""
    author, snap, updates, expected = _history(3)
    peer = YPeer()
    peer.session.load(snap, now=0.0)
    peer.session.receive(updates[2], now=0.0)
    assert 202 in codes(peer.session.recover(snap, [updates[2]], reason="gap", now=20.0))
    assert peer.session.update_clocks == {author.public_key: 2}
    snapshot = peer.session.create_snapshot()
    assert author.public_key not in snapshot.public_data.parent_snapshot_update_clocks
    peer.session.snapshot_rejected(snapshot.snapshot_id)
    events = peer.session.receive_many(updates[:2], now=0.0)
    assert [e.clock for e in events if isinstance(e, UpdateApplied)] == [0, 1]
    assert codes(events) == []
    assert peer.content == expected
    assert peer.session.update_clocks == {author.public_key: 2}
    # replays below the skipped clock are still replays
    assert codes(peer.session.receive(updates[2], now=0.0)) == [214]


def test_update_for_a_snapshot_not_yet_received_is_deferred() -> None:
    _author, snap, updates, expected = _history(2)
    peer = YPeer()
    peer.session.load(None, now=0.0)
    assert peer.session.receive_many(updates, now=0.0) == []
    peer.session.receive(snap, now=0.0)
    assert peer.content == expected


def test_queue_bound_is_enforced() -> None:
    _, snap, updates, _ = _history(4)
    peer = YPeer(config=SecsyncConfig(max_queued_updates_per_author=1))
    peer.session.load(snap, now=0.0)
    assert codes(peer.session.receive_many([updates[2], updates[3]], now=0.0)) == [217]


# --- snapshot checks ---------------------------------------------------------------------------


def test_child_snapshot_chain_and_replay() -> None:
    author = crypto.SigningKeyPair.generate()
    s1 = make_snapshot(author, yjs_change("one")[0])
    s2 = make_snapshot(author, yjs_change("two")[0], parent=s1)
    s3 = make_snapshot(author, yjs_change("three")[0], parent=s2)
    peer = YPeer()
    peer.session.load(s1, now=0.0)
    events = peer.session.receive(s2, now=0.0)
    assert isinstance(events[0], SnapshotApplied) and not events[0].recovered
    assert rejected_code(peer.session.receive(s1, now=0.0)) == 116  # superseded: a replay
    assert peer.session.receive(s2, now=0.0) == []  # the active one again: nothing to do
    peer.session.receive(s3, now=0.0)
    assert peer.session.active_snapshot == s3.info()


def test_snapshot_via_proof_chain_and_broken_chain() -> None:
    author = crypto.SigningKeyPair.generate()
    s1 = make_snapshot(author, yjs_change("one")[0])
    s2 = make_snapshot(author, yjs_change("two")[0], parent=s1)
    s3 = make_snapshot(author, yjs_change("three")[0], parent=s2)
    chain = [ProofChainEntry.of(s2), ProofChainEntry.of(s3)]
    peer = YPeer()
    peer.session.load(s1, now=0.0)
    broken = [chain[1]]
    assert rejected_code(peer.session.receive(s3, proof_chain=broken, now=0.0)) == 115
    assert peer.session.active_snapshot == s1.info()
    events = peer.session.receive(s3, proof_chain=chain, now=0.0)
    assert isinstance(events[0], SnapshotApplied)


def test_snapshot_with_wrong_parent_or_proof_is_rejected() -> None:
    author = crypto.SigningKeyPair.generate()
    s1 = make_snapshot(author, yjs_change("one")[0])
    s2 = make_snapshot(author, b"x", parent=s1)
    fork = make_snapshot(author, yjs_change("fork")[0])  # another initial snapshot
    peer = YPeer()
    peer.session.load(s1, now=0.0)
    assert rejected_code(peer.session.receive(fork, now=0.0)) == 112
    # right parent id, wrong proof
    bad = make_snapshot(author, b"x", parent=s2)
    object.__setattr__(bad.public_data, "parent_snapshot_id", s1.snapshot_id)
    tampered = make_snapshot(author, b"x", snapshot_id=bad.snapshot_id, parent=s2)
    assert tampered.public_data.parent_snapshot_id == s2.snapshot_id
    assert peer.session.active_snapshot == s1.info()


def test_snapshot_missing_our_confirmed_update_is_rejected() -> None:
    a, b, broker = two_peers()
    a.type(0, "a")
    a.p.sync()
    b.p.sync()
    b.type(0, "b")
    b.p.sync()  # b's update 0 is confirmed by the broker
    # a (maliciously) writes a child that claims to include none of b's updates
    evil = make_snapshot(a.signer, a.doc.get_update(), parent=broker.log[0], clocks={})
    assert rejected_code(b.session.receive(evil, now=0.0)) == 102
    assert b.content == "ba"


def test_wrong_document_and_wrong_key() -> None:
    author = crypto.SigningKeyPair.generate()
    peer = YPeer()
    peer.session.load(None, now=0.0)
    other_doc = make_snapshot(author, b"", doc_id="another-doc")
    assert rejected_code(peer.session.receive(other_doc, now=0.0)) == 113
    other_key = make_snapshot(author, b"", key=bytes(32))
    assert rejected_code(peer.session.receive(other_key, now=0.0)) == 101
    snap = make_snapshot(author, yjs_change("ok")[0])
    peer.session.receive(snap, now=0.0)
    upd_doc = make_update(author, snap, 0, [yjs_change("z")[0]], doc_id="another-doc")
    assert rejected_code(peer.session.receive(upd_doc, now=0.0)) == 216
    upd_key = make_update(author, snap, 0, [yjs_change("z")[0]], key=bytes(32))
    assert rejected_code(peer.session.receive(upd_key, now=0.0)) == 201
    assert peer.content == "ok" and peer.session.update_clocks == {}


def test_undecodable_update_content_is_rejected() -> None:
    author = crypto.SigningKeyPair.generate()
    snap = make_snapshot(author, EMPTY_STATE)
    peer = YPeer()
    assert codes(peer.session.load(snap, now=0.0)) == []
    from secsync.protocol import sealing
    from secsync.protocol.messages import UpdatePublicData

    public = UpdatePublicData(DOC_ID, author.public_key, snap.snapshot_id, 0)
    garbage = sealing.seal(public, b"\xc1 not msgpack", KEY, author)
    assert rejected_code(peer.session.receive(garbage, now=0.0)) == 204
    # refused content spends its clock (its author signed it): a copy is a replay
    assert peer.session.update_clocks == {author.public_key: 0}
    assert rejected_code(peer.session.receive(garbage, now=0.0)) == 214
    public = UpdatePublicData(DOC_ID, author.public_key, snap.snapshot_id, 1)
    not_yjs = sealing.seal(public, wire.msgpack.packb([b"\xff\xff\xff"]), KEY, author)
    assert rejected_code(peer.session.receive(not_yjs, now=0.0)) == 203
    assert peer.session.update_clocks == {author.public_key: 1}


def test_policy_rejects_outsiders() -> None:
    writer, outsider = crypto.SigningKeyPair.generate(), crypto.SigningKeyPair.generate()
    doc: pycrdt.Doc = plain_yjs_doc()
    session = DocumentSession(
        DOC_ID, crypto.SigningKeyPair.generate(), KEY, doc, policy=AllowList([writer.public_key])
    )
    session.load(None, now=0.0)
    assert rejected_code(session.receive(make_snapshot(outsider, b""), now=0.0)) == 114
    snap = make_snapshot(writer, EMPTY_STATE)
    assert codes(session.receive(snap, now=0.0)) == []
    assert rejected_code(session.receive(make_update(outsider, snap, 0, [b"x"]), now=0.0)) == 215

    class Broken:
        def may_author(self, *args: object) -> bool:
            raise RuntimeError("policy backend down")

    session.policy = Broken()
    assert rejected_code(session.receive(make_update(writer, snap, 0, [b"x"]), now=0.0)) == 205


def test_garbage_bytes_are_rejected_not_raised() -> None:
    peer = YPeer()
    peer.session.load(None, now=0.0)
    for data in [b"", b"\x00", b"\x96" + b"\x01" * 6]:
        events = peer.session.receive(data, now=0.0)
        assert isinstance(events[0], MessageRejected)
        assert isinstance(events[0].error, SecsyncError)


def test_native_bytes_are_accepted() -> None:
    _, snap, updates, expected = _history(2)
    peer = YPeer()
    peer.session.load(None, now=0.0)
    frames = [wire.encode(m, include_doc_id=False) for m in [snap, *updates]]
    peer.session.receive_many(frames, now=0.0)
    assert peer.content == expected


# --- acknowledgements and recovery -------------------------------------------------------------


def test_acknowledgements_and_own_echoes() -> None:
    a, _, broker = two_peers()
    a.type(0, "a")
    (snap,) = a.session.data_to_send()
    assert a.session.unacknowledged == 1 and not a.session.is_synced
    broker.publish(snap, 0)
    assert a.session.receive(snap, now=0.0) == [SnapshotStored(snap.snapshot_id)]  # echo = stored
    a.type(1, "b")
    (upd,) = a.session.data_to_send()
    assert isinstance(upd, Update)
    assert a.session.update_stored(snap.snapshot_id, 0) == [UpdateStored(snap.snapshot_id, 0)]
    assert a.session.receive(upd, now=0.0) == []  # its echo after the ack is silent
    assert a.session.is_synced and a.content == "ab"


def test_recover_adopts_unrelated_snapshot_and_keeps_local_changes() -> None:
    a, _, _ = two_peers()
    a.type(0, "local")
    a.p.sync()
    a.type(0, "more ")
    other = crypto.SigningKeyPair.generate()
    unrelated = make_snapshot(other, yjs_change("remote")[0])
    assert rejected_code(a.session.receive(unrelated, now=0.0)) == 112
    events = a.session.recover(unrelated, reason="unverifiable chain", now=0.0)
    applied = [e for e in events if isinstance(e, SnapshotApplied)]
    assert applied and applied[0].recovered and applied[0].rebased_changes >= 1
    assert "local" in a.content and "remote" in a.content
    out = a.session.data_to_send()
    assert out and all(isinstance(m, Update) for m in out)


def test_no_sending_before_load() -> None:
    doc: pycrdt.Doc = plain_yjs_doc()
    doc.get("text", type=pycrdt.Text).insert(0, "early")
    session = DocumentSession(DOC_ID, crypto.SigningKeyPair.generate(), KEY, doc)
    assert session.data_to_send() == []
    assert session.pending_changes == 1
    session.load(None, now=0.0)
    (snap,) = session.data_to_send()
    assert isinstance(snap, Snapshot)


@pytest.mark.parametrize("encoding", ["native", "secsync-json"])
def test_change_encodings_interoperate(encoding: str) -> None:
    a, b, _ = two_peers(SecsyncConfig(change_encoding=encoding))  # type: ignore[arg-type]
    a.type(0, "x")
    a.p.sync()
    b.p.sync()
    a.type(1, "y")
    a.p.sync()
    b.p.sync()
    assert b.content == "xy"
