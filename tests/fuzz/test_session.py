"""A DocumentSession that holds a document, fed hostile bytes and hostile proof chains.

The session never raises for a received message; whatever it rejects leaves its state and the
text exactly as they were; a snapshot is accepted with a proof chain only if the chain is the
true one.
"""

from __future__ import annotations

from functools import cache

from hypothesis import given
from hypothesis import strategies as st

from secsync.protocol import crypto
from secsync.protocol.events import Event, MessageRejected, SnapshotApplied
from secsync.protocol.messages import ProofChainEntry, Snapshot
from tests.factories import KEY, YPeer, make_snapshot, yjs_change
from tests.fuzz.conftest import Inputs
from tests.fuzz.strategies import (
    fuzz_settings,
    genuine_encodings,
    genuine_messages,
    genuine_or_mutated,
    wire_like,
)


def _holder() -> YPeer:
    """A session that holds the genuine root snapshot and update of ``genuine_messages``."""
    root, _child, update, _ephemeral = genuine_messages()
    peer = YPeer(key=KEY)
    peer.session.load(root, [update], now=0.0)
    assert peer.content == "base!"
    return peer


def _state(peer: YPeer) -> tuple[object, ...]:
    s = peer.session
    return (
        peer.content,
        s.active_snapshot,
        s.update_clocks,
        s.ephemeral.peers,
        s.unacknowledged,
        s.pending_changes,
    )


def _fed(inputs: Inputs, data: bytes | list[bytes]) -> None:
    peer = _holder()
    before = _state(peer)
    many = isinstance(data, list)
    events: list[Event] | None = inputs.feed(
        peer.session.receive_many if many else peer.session.receive, data, now=0.0
    )
    assert events is not None, "the session raised a SecsyncError for a received message"
    genuine = set(genuine_encodings())
    if all(isinstance(e, MessageRejected) for e in events) and not (
        set(data) & genuine if many else data in genuine
    ):
        assert _state(peer) == before


@fuzz_settings(400)
@given(data=st.binary(max_size=400))
def test_session_fed_random_bytes(inputs: Inputs, data: bytes) -> None:
    inputs.example()
    _fed(inputs, data)


@fuzz_settings(700)
@given(data=genuine_or_mutated())
def test_session_fed_mutated_messages(inputs: Inputs, data: bytes) -> None:
    inputs.example()
    _fed(inputs, data)


@fuzz_settings(300)
@given(data=st.lists(st.one_of(genuine_or_mutated(), wire_like()), min_size=1, max_size=6))
def test_session_fed_mutated_batches(inputs: Inputs, data: list[bytes]) -> None:
    inputs.example()
    _fed(inputs, data)


# --- snapshot proof chains --------------------------------------------------------------------


@cache
def _lineage() -> tuple[Snapshot, Snapshot, Snapshot]:
    """A root, its child and grandchild, by the author of ``genuine_messages``'s root."""
    signer = crypto.SigningKeyPair.generate()
    base, _ = yjs_change("base")
    root = make_snapshot(signer, base)
    child = make_snapshot(signer, base, parent=root)
    grandchild = make_snapshot(signer, base, parent=child)
    return root, child, grandchild


def _valid_chain() -> list[ProofChainEntry]:
    _root, child, grandchild = _lineage()
    return [ProofChainEntry.of(child), ProofChainEntry.of(grandchild)]


field_bytes = st.one_of(
    st.binary(max_size=40), st.sampled_from([b"", bytes(24), bytes(32), b"\xff" * 32])
)


@st.composite
def entries(draw: st.DrawFn) -> ProofChainEntry:
    entry = draw(st.sampled_from(_valid_chain()))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return entry
    if kind == 4:
        return ProofChainEntry(draw(field_bytes), draw(field_bytes), draw(field_bytes))
    fields = [entry.snapshot_id, entry.parent_snapshot_proof, entry.snapshot_ciphertext_hash]
    value = bytearray(fields[kind - 1])
    if value and draw(st.booleans()):
        value[draw(st.integers(0, len(value) - 1))] ^= 1 << draw(st.integers(0, 7))
    else:
        value = bytearray(draw(field_bytes))
    fields[kind - 1] = bytes(value)
    return ProofChainEntry(*fields)


chains = st.one_of(
    st.lists(entries(), max_size=5),
    st.permutations(_valid_chain()).map(list),
    st.just(_valid_chain()),
)


@fuzz_settings(400)
@given(chain=chains)
def test_snapshot_accepted_only_with_the_true_proof_chain(
    inputs: Inputs, chain: list[ProofChainEntry]
) -> None:
    inputs.example()
    root, _child, grandchild = _lineage()
    peer = YPeer(key=KEY)
    peer.session.load(root, now=0.0)
    before = _state(peer)
    events = inputs.feed(lambda c: peer.session.receive(grandchild, proof_chain=c, now=0.0), chain)
    assert events is not None
    applied = any(isinstance(e, SnapshotApplied) for e in events)
    assert applied == (chain == _valid_chain()), (events, chain)
    if not applied:
        assert _state(peer) == before
        codes = {e.error.code for e in events if isinstance(e, MessageRejected)}
        assert codes <= {115}, codes
