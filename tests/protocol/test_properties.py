"""Property tests: convergence under any delivery order, tamper resistance, replay no-ops."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from secsync.config import SecsyncConfig
from secsync.errors import SecsyncError
from secsync.protocol import wire
from secsync.protocol.events import (
    EphemeralReceived,
    MessageRejected,
    SnapshotApplied,
    UpdateApplied,
)
from secsync.protocol.messages import Snapshot, Update
from tests.factories import DOC_ID, AMPeer, MemoryBroker, Participant, YPeer

EXAMPLES = 200
PEERS = {"yjs": YPeer, "automerge": AMPeer}
CONFIG = SecsyncConfig(snapshot_after_updates=4)

op = st.tuples(
    st.integers(0, 4),  # author
    st.sampled_from(["type", "type", "type", "sync", "snapshot"]),
    st.integers(0, 30),  # position
    st.text(alphabet="abcxyz ", min_size=1, max_size=4),
)


def run_history(kind: str, n_authors: int, ops: list[tuple[int, str, int, str]]):  # type: ignore[no-untyped-def]
    broker = MemoryBroker()
    peers = [PEERS[kind](config=CONFIG) for _ in range(n_authors)]
    parts = [Participant(p.session, broker) for p in peers]
    peers[0].type(0, "start")
    parts[0].sync()
    for part in parts[1:]:
        part.sync()
    for author, action, pos, text in ops:
        i = author % n_authors
        if action == "type":
            peers[i].type(pos, text)
        elif action == "sync":
            parts[i].sync()
        elif peers[i].session.active_snapshot is not None:
            parts[i].pull()
            peers[i].type(pos, text)
            if not peers[i].session.unacknowledged:
                parts[i].publish(peers[i].session.create_snapshot())
    for _ in range(3):
        for part in parts:
            part.sync()
    return broker, peers


def state_of(peer: YPeer | AMPeer) -> tuple[object, ...]:
    s = peer.session
    return (peer.content, s.active_snapshot, s.update_clocks, s.ephemeral.peers)


@pytest.mark.parametrize("kind", sorted(PEERS))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_authors=st.integers(2, 5),
    ops=st.lists(op, max_size=24),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_delivery_order_with_duplicates_converges(
    kind: str, n_authors: int, ops: list[tuple[int, str, int, str]], seed: int
) -> None:
    broker, peers = run_history(kind, n_authors, ops)
    snapshots = sum(isinstance(m, Snapshot) for m in broker.log)
    event(f"snapshots: {min(snapshots, 3)}{'+' if snapshots >= 3 else ''}")
    event(f"updates: {'>=5' if len(broker.log) - snapshots >= 5 else '<5'}")
    expected = peers[0].content
    assert all(p.content == expected for p in peers), [p.content for p in peers]
    rng = random.Random(seed)
    delivery = list(broker.log) + rng.choices(broker.log, k=rng.randint(0, len(broker.log)))
    rng.shuffle(delivery)
    receiver = PEERS[kind]()
    receiver.session.load(None, now=0.0)
    for second, message in enumerate(delivery):
        # a message a second: the per-author snapshot rate lets each author's newest through
        events = receiver.session.receive(message, now=float(second))
        assert all(
            isinstance(e.error, SecsyncError) for e in events if isinstance(e, MessageRejected)
        )
    receiver.session.handle_timer(float(len(delivery) + 3600))
    assert receiver.content == expected


def _loaded_receiver(kind: str) -> tuple[YPeer | AMPeer, list[Snapshot | Update], YPeer | AMPeer]:
    broker, peers = run_history(
        kind, 2, [(0, "type", 3, "ab"), (1, "sync", 0, ""), (1, "type", 0, "q")]
    )
    receiver = PEERS[kind]()
    receiver.session.load(None, now=0.0)
    receiver.session.receive_many(broker.log, now=0.0)
    assert receiver.content == peers[0].content
    return receiver, broker.log, peers[1]


@pytest.mark.parametrize("kind", sorted(PEERS))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_flipping_any_bit_is_rejected_and_changes_nothing(kind: str, data: st.DataObject) -> None:
    receiver, _log, author = _loaded_receiver(kind)
    # the next messages this receiver would accept: a new update, a child snapshot, presence
    author.type(0, "next")
    candidates = [m for m in author.session.data_to_send() if isinstance(m, Update)]
    candidates.append(author.session.create_snapshot())
    candidates.append(author.session.send_ephemeral(b"cursor"))
    # draws independent of sizes: keys and ids are random, so lengths vary between runs
    message = candidates[data.draw(st.integers(0, 2**16)) % len(candidates)]
    encoded = bytearray(wire.encode(message))
    bit = data.draw(st.integers(0, 2**32)) % (len(encoded) * 8)
    encoded[bit // 8] ^= 1 << (bit % 8)
    before = state_of(receiver)
    events = receiver.session.receive(bytes(encoded), now=0.0)
    assert events and all(isinstance(e, MessageRejected) for e in events), events
    assert all(isinstance(e.error, SecsyncError) for e in events)
    assert state_of(receiver) == before


@pytest.mark.parametrize("kind", sorted(PEERS))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_replayed_message_is_a_no_op(kind: str, data: st.DataObject) -> None:
    receiver, log, author = _loaded_receiver(kind)
    # presence traffic too: establish a session, then replay any of its messages
    init = author.session.ephemeral_initialize()
    receiver.session.receive(init, now=0.0)
    for reply in receiver.session.data_to_send():
        author.session.receive(reply, now=0.0)
    traffic = [init, *author.session.data_to_send(), author.session.send_ephemeral(b"c1")]
    for message in traffic:
        receiver.session.receive(message, now=0.0)
    receiver.session.data_to_send()
    everything = [*log, *traffic]
    replayed = everything[data.draw(st.integers(0, 2**16)) % len(everything)]
    before = state_of(receiver)
    events = receiver.session.receive(replayed, now=0.0)
    assert not [
        e for e in events if isinstance(e, UpdateApplied | SnapshotApplied | EphemeralReceived)
    ]
    assert state_of(receiver) == before
    assert DOC_ID
