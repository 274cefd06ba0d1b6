"""Snapshots are checked by their content, not by what they claim: a member's snapshot that
leaves content out is reported (naming its author) and repaired, our own changes are sent again
unless the snapshot holds them, and honest snapshots raise nothing. Sans-IO, on real pycrdt and
Automerge documents, through the in-memory broker with JetStream's compare-and-set rules."""

from __future__ import annotations

import random
from collections.abc import Callable

import pycrdt
import pytest
from automerge import core

from secsync.config import SecsyncConfig
from secsync.crdt import ContentCheck, CrdtAdapter
from secsync.crdt.automerge import AutomergeAdapter
from secsync.crdt.yjs import YjsAdapter
from secsync.errors import SnapshotBudgetError, UpdatePendingBudgetError
from secsync.protocol import crypto
from secsync.protocol.events import MessageRejected, SnapshotIncomplete, UpdateApplied
from secsync.protocol.messages import Snapshot, Update
from secsync.protocol.session import DocumentSession
from tests.factories import (
    DOC_ID,
    KEY,
    AMPeer,
    MemoryBroker,
    Participant,
    YPeer,
    make_snapshot,
    make_update,
    plain_yjs_doc,
    yjs_change,
)

Peer = YPeer | AMPeer
KINDS: dict[str, tuple[Callable[..., Peer], Callable[[], bytes]]] = {
    "yjs": (YPeer, lambda: plain_yjs_doc().get_update()),
    "automerge": (AMPeer, lambda: core.Document().save()),
}


def _incomplete(events: list[object]) -> list[SnapshotIncomplete]:
    return [e for e in events if isinstance(e, SnapshotIncomplete)]


def _latest_snapshot(broker: MemoryBroker) -> Snapshot:
    return next(m for m in reversed(broker.log) if isinstance(m, Snapshot))


def _fresh_reader(kind: str, broker: MemoryBroker) -> Peer:
    """A reader that opens the document now: the latest snapshot and the updates after it."""
    make, _ = KINDS[kind]
    reader = make()
    latest = _latest_snapshot(broker)
    after = broker.log[broker.log.index(latest) + 1 :]
    events = reader.session.load(latest, [m for m in after if isinstance(m, Update)], now=0.0)
    assert not [e for e in events if isinstance(e, MessageRejected)], events
    return reader


def _hostile_snapshot(
    broker: MemoryBroker, mallory: crypto.SigningKeyPair, content: bytes, clocks: dict[bytes, int]
) -> Snapshot:
    """Mallory, a member, stores a validly signed snapshot on the latest one."""
    snapshot = make_snapshot(mallory, content, parent=_latest_snapshot(broker), clocks=clocks)
    assert broker.publish(snapshot, len(broker.log))
    return snapshot


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_empty_snapshot_with_truthful_clocks_is_reported_and_repaired(kind: str) -> None:
    make, empty = KINDS[kind]
    broker = MemoryBroker()
    alice_peer, bob_peer = make(), make()
    alice, bob = Participant(alice_peer.session, broker), Participant(bob_peer.session, broker)
    alice_peer.type(0, "hello")
    alice.session.request_snapshot()
    alice.sync()
    alice_peer.type(5, " world")  # an update on the snapshot
    alice.sync()
    bob.sync()
    bob_peer.type(0, "> ")
    bob.sync()
    alice.pull()
    assert alice_peer.content == bob_peer.content == "> hello world"

    mallory = crypto.SigningKeyPair.generate()
    clocks = dict(alice.session.update_clocks)  # the truth: it claims what it was shown
    lossy = _hostile_snapshot(broker, mallory, empty(), clocks)
    alice.pull()
    bob.pull()
    # online clients keep their text, and are told who wrote the lossy snapshot
    assert alice_peer.content == bob_peer.content == "> hello world"
    (seen_by_alice,) = _incomplete(alice.events)
    (seen_by_bob,) = _incomplete(bob.events)
    assert seen_by_alice.author == seen_by_bob.author == mallory.public_key
    assert seen_by_alice.snapshot_id == lossy.snapshot_id
    assert seen_by_alice.repair and seen_by_bob.repair  # each lacks the other's content
    assert seen_by_alice.resent_changes == 1 and seen_by_bob.resent_changes == 1
    assert alice.session.repair_wanted and bob.session.repair_wanted

    # both try to repair; the compare-and-set lets one through, the other applies it, checks
    # it, finds it complete and stops
    alice.push()
    bob.sync()
    alice.sync()
    snapshots = [m for m in broker.log if isinstance(m, Snapshot)]
    assert snapshots[-2] is lossy  # one repair, on top of it
    assert snapshots[-1].public_data.parent_snapshot_id == lossy.snapshot_id
    assert not alice.session.repair_wanted and not bob.session.repair_wanted
    assert len(_incomplete(alice.events)) == len(_incomplete(bob.events)) == 1
    stored = len(broker.log)
    alice.sync()
    bob.sync()
    assert len(broker.log) == stored  # no repair loop

    assert _fresh_reader(kind, broker).content == "> hello world"
    # edits after it reach fresh readers too
    bob_peer.type(len(bob_peer.content), "!")
    bob.sync()
    assert _fresh_reader(kind, broker).content == "> hello world!"


@pytest.mark.parametrize("kind", list(KINDS))
def test_claimed_clocks_of_a_billion_do_not_drop_our_changes(kind: str) -> None:
    make, _ = KINDS[kind]
    broker = MemoryBroker()
    alice_peer, bob_peer = make(), make()
    alice, bob = Participant(alice_peer.session, broker), Participant(bob_peer.session, broker)
    alice_peer.type(0, "base")
    alice.session.request_snapshot()
    alice.sync()
    bob.sync()
    # alice's update is in flight (sent, not acknowledged) when mallory's snapshot lands
    alice_peer.type(4, " in flight")
    (in_flight,) = alice.session.data_to_send()
    assert isinstance(in_flight, Update)

    mallory = crypto.SigningKeyPair.generate()
    claimed = {alice.session.public_key: 10**9}
    # it holds the base (mallory read it), not the update in flight
    base_copy = make()
    base_copy.session.load(_latest_snapshot(broker), now=0.0)
    lossy = _hostile_snapshot(broker, mallory, base_copy.session.crdt.encode_state(), claimed)
    alice.pull()
    assert alice.session.active_snapshot is not None
    assert alice.session.active_snapshot.snapshot_id == lossy.snapshot_id
    (event,) = _incomplete(alice.events)
    assert event.author == mallory.public_key
    assert event.resent_changes == 1 and not event.repair  # only ours lacks: sent again
    assert alice.session.pending_changes >= 1
    alice.push()
    sent = [m for m in broker.log[broker.log.index(lossy) + 1 :] if isinstance(m, Update)]
    assert [m.clock for m in sent] == [0]  # clocks start over on the new snapshot
    bob.pull()
    assert bob_peer.content == "base in flight"
    assert _fresh_reader(kind, broker).content == "base in flight"


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_complete_snapshot_raises_nothing_and_sends_nothing_again(kind: str) -> None:
    make, _ = KINDS[kind]
    broker = MemoryBroker()
    alice_peer, bob_peer = make(), make()
    alice, bob = Participant(alice_peer.session, broker), Participant(bob_peer.session, broker)
    alice_peer.type(0, "one")
    alice.session.request_snapshot()
    alice.sync()
    bob.sync()
    alice_peer.type(3, " two")
    alice.sync()
    bob.sync()
    stored = len(broker.log)
    bob.session.request_snapshot()
    bob.sync()
    assert len(broker.log) == stored + 1
    alice.sync()
    assert not _incomplete(alice.events) and not _incomplete(bob.events)
    assert alice.session.pending_changes == 0  # nothing of hers was sent again
    assert len(broker.log) == stored + 1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", list(KINDS))
def test_honest_concurrent_writers_and_snapshots_raise_no_event(kind: str, seed: int) -> None:
    make, _ = KINDS[kind]
    rng = random.Random(seed)
    broker = MemoryBroker()
    peers = [make() for _ in range(3)]
    parts = [Participant(peer.session, broker) for peer in peers]
    peers[0].type(0, "start ")
    parts[0].session.request_snapshot()
    parts[0].sync()
    for step in range(60):
        index = rng.randrange(3)
        peer, part = peers[index], parts[index]
        action = rng.random()
        if action < 0.5:
            peer.type(rng.randrange(len(peer.content) + 1), f"{index}{step} ")
            if rng.random() < 0.5:
                # sent before the others' newest messages are read: races a snapshot
                for message in part.session.data_to_send():
                    if isinstance(message, Update) and broker.publish(message, part.seen):
                        part.events += part.session.update_stored(
                            message.public_data.ref_snapshot_id, message.clock
                        )
                    elif isinstance(message, Update):
                        part.events += part.session.update_rejected(
                            message.public_data.ref_snapshot_id, message.clock
                        )
                    elif isinstance(message, Snapshot):
                        part.events += part.session.snapshot_rejected(message.snapshot_id)
        elif action < 0.7:
            part.session.request_snapshot()
            part.sync()
        else:
            part.sync()
    for _ in range(3):
        for part in parts:
            part.sync()
    assert len({peer.content for peer in peers}) == 1
    for part in parts:
        assert not _incomplete(part.events), part.events
    assert sum(isinstance(m, Snapshot) for m in broker.log) >= 3
    assert _fresh_reader(kind, broker).content == peers[0].content


def test_held_snapshots_stay_within_their_byte_budget() -> None:
    budget = 1024 * 1024
    config = SecsyncConfig(max_held_snapshot_bytes=budget)
    session = DocumentSession(
        DOC_ID, crypto.SigningKeyPair.generate(), KEY, plain_yjs_doc(), config=config
    )
    alice = crypto.SigningKeyPair.generate()
    root = make_snapshot(alice, yjs_change("root")[0])
    session.load(root, now=0.0)
    content = yjs_change("x" * 150_000)[0]
    evicted = 0
    for _ in range(12):  # children of parents nobody will ever see: held for their parent
        # one identity each: the per-author snapshot rate would hold back a single one
        mallory = crypto.SigningKeyPair.generate()
        orphan = make_snapshot(mallory, content, parent=make_snapshot(mallory, b"\x00\x00"))
        events = session.receive(orphan, now=0.0)
        evicted += sum(
            isinstance(e, MessageRejected) and isinstance(e.error, SnapshotBudgetError)
            for e in events
        )
        assert session.held_snapshot_bytes <= budget
    assert evicted >= 12 - budget // 150_000
    assert all(
        e.author == mallory.public_key
        for e in session.receive(orphan, now=0.0)  # the same again: replaced, not counted twice
        if isinstance(e, MessageRejected)
    )
    assert session.held_snapshot_bytes <= budget
    too_big = make_snapshot(mallory, yjs_change("y" * 2 * budget)[0], parent=orphan)
    (rejected,) = [e for e in session.receive(too_big, now=0.0) if isinstance(e, MessageRejected)]
    assert rejected.error.code == 117
    # an honest child of a snapshot that arrives later is still held and applied
    child_parent = make_snapshot(alice, yjs_change("root!")[0], parent=root)
    child = make_snapshot(alice, yjs_change("root!!")[0], parent=child_parent)
    session.receive(child, now=0.0)
    session.receive(child_parent, now=0.0)
    assert session.active_snapshot is not None
    assert session.active_snapshot.snapshot_id == child.snapshot_id


def test_pending_yjs_content_is_bounded_and_released_when_its_dependencies_arrive() -> None:
    writer: pycrdt.Doc = plain_yjs_doc()
    text = writer.get("text", type=pycrdt.Text)
    chain = []
    for index in range(12):
        before = writer.get_state()
        text.insert(len(text), f"{index}:" + "z" * 10_000)
        chain.append(writer.get_update(before))
    reader: pycrdt.Doc = plain_yjs_doc()
    adapter = YjsAdapter(reader)
    adapter.set_pending_budget(64 * 1024)
    refused = 0
    for change in chain[1:]:  # the first never arrives: all of these depend on it
        try:
            adapter.apply_changes([change])
        except UpdatePendingBudgetError as exc:
            assert exc.code == 220
            refused += 1
        assert adapter.pending_bytes <= 64 * 1024
    assert refused == 11 - (64 * 1024) // len(chain[1])
    assert str(reader.get("text", type=pycrdt.Text)) == ""
    adapter.apply_changes([chain[0]])  # the dependency arrives: what waited is integrated
    assert adapter.pending_bytes == 0
    assert str(reader.get("text", type=pycrdt.Text)).startswith("0:z")
    for change in chain[1:]:  # the refused ones are now accepted
        adapter.apply_changes([change])
    assert str(reader.get("text", type=pycrdt.Text)) == str(text)


def test_pending_budget_refusals_reach_the_session_as_rejections() -> None:
    config = SecsyncConfig(max_pending_bytes=16 * 1024)
    reader = YPeer(config=config)
    alice = crypto.SigningKeyPair.generate()
    root_content = yjs_change("root")[0]
    root = make_snapshot(alice, root_content)
    reader.session.load(root, now=0.0)
    mallory = crypto.SigningKeyPair.generate()
    writer: pycrdt.Doc = plain_yjs_doc()
    text = writer.get("text", type=pycrdt.Text)
    text.insert(0, "never sent")
    codes = []
    for clock in range(6):
        before = writer.get_state()
        text.insert(len(text), "w" * 8000)
        events = reader.session.receive(
            make_update(mallory, root, clock, [writer.get_update(before)]), now=0.0
        )
        codes += [e.error.code for e in events if isinstance(e, MessageRejected)]
    assert codes and set(codes) == {220}
    assert isinstance(reader.session.crdt, YjsAdapter)
    assert reader.session.crdt.pending_bytes <= 16 * 1024
    honest, _ = yjs_change("!", base=root_content)
    events = reader.session.receive(make_update(alice, root, 0, [honest]), now=0.0)
    assert any(isinstance(e, UpdateApplied) for e in events)


def test_yjs_lacks_sees_lost_deletions_and_lost_structs() -> None:
    writer: pycrdt.Doc = plain_yjs_doc()
    text = writer.get("text", type=pycrdt.Text)
    text.insert(0, "hello world")
    before_delete = writer.get_update()
    deletions: list[bytes] = []
    subscription = writer.observe(lambda event: deletions.append(event.update))
    del text[0:6]
    writer.unobserve(subscription)
    reader: pycrdt.Doc = plain_yjs_doc()
    adapter = YjsAdapter(reader)
    adapter.apply_snapshot(writer.get_update())
    assert str(reader.get("text", type=pycrdt.Text)) == "world"
    # every struct is there, the deletion is not: a fresh reader would see "hello world"
    assert adapter.lacks(before_delete, [])
    assert not adapter.lacks(before_delete, deletions)  # explained by the deleting change
    assert adapter.uncontained(before_delete, deletions) == deletions
    assert adapter.uncontained(writer.get_update(), deletions) == []
    assert adapter.lacks(plain_yjs_doc().get_update(), [])
    assert not adapter.lacks(writer.get_update(), [])


def test_automerge_lacks_compares_changes() -> None:
    alice = AMPeer()
    alice.type(0, "one")
    first = alice.doc.save()
    alice.type(3, " two")
    later = alice.doc.get_changes(core.Document.load(first).get_heads())
    reader = core.Document()
    adapter = AutomergeAdapter(reader)
    adapter.apply_snapshot(alice.doc.save())
    assert adapter.lacks(first, [])
    assert not adapter.lacks(first, [change.bytes for change in later])
    assert adapter.uncontained(first, [change.bytes for change in later]) == [
        change.bytes for change in later
    ]
    assert not adapter.lacks(alice.doc.save(), [])


class _PlainAdapter:
    """A third-party adapter with the original interface only (no content check)."""

    def __init__(self) -> None:
        self.inner = YjsAdapter(plain_yjs_doc())

    def take_local_changes(self) -> list[bytes]:
        return self.inner.take_local_changes()

    def apply_changes(self, changes: list[bytes]) -> None:
        self.inner.apply_changes(changes)

    def apply_snapshot(self, state: bytes) -> None:
        self.inner.apply_snapshot(state)

    def encode_state(self) -> bytes:
        return self.inner.encode_state()

    def missing_from(self, state: bytes) -> list[bytes]:
        return self.inner.missing_from(state)

    def close(self) -> None:
        self.inner.close()


def test_an_adapter_without_the_content_check_still_works_on_claims() -> None:
    plain = _PlainAdapter()
    assert isinstance(plain, CrdtAdapter) and not isinstance(plain, ContentCheck)
    broker = MemoryBroker()
    alice = Participant(
        DocumentSession(DOC_ID, crypto.SigningKeyPair.generate(), KEY, plain), broker
    )
    bob_peer = YPeer()
    bob = Participant(bob_peer.session, broker)
    text = plain.inner.doc.get("text", type=pycrdt.Text)
    text.insert(0, "plain")
    alice.session.request_snapshot()
    alice.sync()
    bob.sync()
    bob_peer.type(5, "!")
    bob.sync()
    bob.session.request_snapshot()
    bob.sync()
    alice.sync()
    assert str(text) == "plain!"
    assert not _incomplete(alice.events)
    # a lossy snapshot goes unnoticed by it (documented), but nothing breaks
    _hostile_snapshot(broker, crypto.SigningKeyPair.generate(), plain_yjs_doc().get_update(), {})
    alice.sync()
    assert not _incomplete(alice.events) and str(text) == "plain!"
