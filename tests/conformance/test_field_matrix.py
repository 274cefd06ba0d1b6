"""Every field of every message kind altered, checked by the sans-IO session directly.

The relay scenarios (``test_transit.py``) alter updates in transit through a real broker; this
matrix covers every public field, the sealed parts, re-signing and swapped public data of all
three kinds, quickly, against a :class:`DocumentSession` that holds a document. Each alteration
must be rejected with its specific code and leave the session and the text exactly as they
were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import msgpack
import pytest

from secsync.protocol import crypto, wire
from secsync.protocol.events import MessageRejected
from secsync.protocol.messages import (
    EphemeralMessage,
    Message,
    Snapshot,
    SnapshotPublicData,
    Update,
    UpdatePublicData,
)
from tests.conformance.plugin import Conformance
from tests.conformance.test_transit import RELAY_KEY, _flip, _resign
from tests.factories import DOC_ID, KEY, YPeer, make_snapshot, make_update, yjs_change

Alter = Callable[[Message, Message], bytes]


def _pd(message: Message, **changes: object) -> Message:
    return replace(message, public_data=replace(message.public_data, **changes))  # type: ignore[arg-type]


def _enc(message: Message, *, doc_id: bool = False) -> bytes:
    return wire.encode(message, include_doc_id=doc_id)


def _repack(message: Message, index: int, value: object) -> bytes:
    items = msgpack.unpackb(_enc(message), raw=False)
    items[index] = value
    return msgpack.packb(items, use_bin_type=True)


COMMON: dict[str, tuple[Alter, str]] = {
    "nonce": (lambda m, o: _enc(replace(m, nonce=_flip(m.nonce))), "sig"),
    "ciphertext": (lambda m, o: _enc(replace(m, ciphertext=_flip(m.ciphertext, 50))), "sig"),
    "ciphertext (tag)": (lambda m, o: _enc(replace(m, ciphertext=_flip(m.ciphertext, 3))), "sig"),
    "signature": (lambda m, o: _enc(replace(m, signature=_flip(m.signature, 7))), "sig"),
    "pubKey": (lambda m, o: _enc(_pd(m, pub_key=_flip(m.public_data.pub_key))), "sig"),
    "docId": (lambda m, o: _enc(_pd(m, doc_id="another-document"), doc_id=True), "sig"),
    "extras added": (lambda m, o: _enc(_pd(m, extra={"keyId": "x"})), "sig"),
    "re-signed, author kept": (lambda m, o: _enc(_resign(m, RELAY_KEY)), "sig"),
    "re-signed as another author": (
        lambda m, o: _enc(_resign(_pd(m, pub_key=RELAY_KEY.public_key), RELAY_KEY)),
        "aead",
    ),
    "public data swapped with another message": (
        lambda m, o: _enc(replace(m, public_data=o.public_data)),
        "sig",
    ),
    "genuine, of another document": (lambda m, o: _enc(o, doc_id=True), "doc"),
    "protocol version 2": (lambda m, o: _repack(m, 0, 2), "version"),
    "unknown kind 9": (lambda m, o: _repack(m, 1, 9), "kind"),
    "truncated": (lambda m, o: _enc(m)[:-1], "kind"),
    "non-canonical (int as uint64)": (
        lambda m, o: _enc(m)[:1] + b"\xcf" + (1).to_bytes(8, "big") + _enc(m)[2:],
        "parse",
    ),
}
SNAPSHOT_ONLY: dict[str, tuple[Alter, str]] = {
    "snapshotId": (lambda m, o: _enc(_pd(m, snapshot_id=_flip(m.public_data.snapshot_id))), "sig"),
    "parentSnapshotId": (
        lambda m, o: _enc(_pd(m, parent_snapshot_id=_flip(m.public_data.parent_snapshot_id))),
        "sig",
    ),
    "parentSnapshotProof": (
        lambda m, o: _enc(_pd(m, parent_snapshot_proof=_flip(m.public_data.parent_snapshot_proof))),
        "sig",
    ),
    "parentSnapshotUpdateClocks": (
        lambda m, o: _enc(_pd(m, parent_snapshot_update_clocks={bytes(32): 5})),
        "sig",
    ),
}
UPDATE_ONLY: dict[str, tuple[Alter, str]] = {
    "refSnapshotId": (
        lambda m, o: _enc(_pd(m, ref_snapshot_id=_flip(m.public_data.ref_snapshot_id))),
        "sig",
    ),
    "clock": (lambda m, o: _enc(_pd(m, clock=m.public_data.clock + 1)), "sig"),
}
CODES = {
    "snapshot": {"sig": 111, "aead": 101, "doc": 113, "parse": 110, "version": 701, "kind": 700},
    "update": {"sig": 212, "aead": 201, "doc": 216, "parse": 211, "version": 701, "kind": 700},
    "ephemeral": {"sig": 308, "aead": 301, "doc": 306, "parse": 307, "version": 701, "kind": 700},
}
CASES = [
    (kind, field)
    for kind, extra in (("snapshot", SNAPSHOT_ONLY), ("update", UPDATE_ONLY), ("ephemeral", {}))
    for field in [*COMMON, *extra]
]


def _setup(kind: str) -> tuple[YPeer, Message, Message]:
    """A receiver holding a document, the next message of ``kind`` it would accept, and a
    second genuine message of that kind (for swaps; of another document where that matters)."""
    author = crypto.SigningKeyPair.generate()
    base, _ = yjs_change("base")
    root = make_snapshot(author, base)
    receiver = YPeer()
    receiver.session.load(root, now=0.0)
    assert receiver.content == "base"
    change, _ = yjs_change("!", at=4, base=base)
    other_doc = f"{DOC_ID}-other"
    if kind == "snapshot":
        message: Message = make_snapshot(author, base, parent=root)
        other: Message = make_snapshot(author, base, parent=root, doc_id=other_doc)
    elif kind == "update":
        message = make_update(author, root, 0, [change])
        other = make_update(author, root, 0, [change], doc_id=other_doc)
    else:
        sender = YPeer(author)
        sender.session.load(root, now=0.0)
        message = sender.session.send_ephemeral(b"\x80")
        foreign = YPeer(author, doc_id=other_doc)
        foreign.session.load(make_snapshot(author, base, doc_id=other_doc), now=0.0)
        other = foreign.session.ephemeral.create(KEY, b"\x80")
    return receiver, message, other


def _state(peer: YPeer) -> tuple[object, ...]:
    s = peer.session
    return (peer.content, s.active_snapshot, s.update_clocks, s.ephemeral.peers, s.unacknowledged)


@pytest.mark.parametrize(("kind", "field"), CASES, ids=[f"{k}-{f}" for k, f in CASES])
def test_altered_field_is_rejected_with_its_code(
    conformance: Conformance, kind: str, field: str
) -> None:
    alter, outcome = {**COMMON, **SNAPSHOT_ONLY, **UPDATE_ONLY}[field]
    code = CODES[kind][outcome]
    conformance.declare(
        f"F-{kind}-{field.split(' (', maxsplit=1)[0].replace(' ', '-').replace(',', '')}",
        f"{kind}: {field}",
        attack=f"the {field} of a {kind} the receiver would accept is altered",
        expected=f"rejected {code}; session state and text unchanged",
    )
    receiver, message, other = _setup(kind)
    if field == "public data swapped with another message":
        other = _sibling(kind, message)
    data = alter(message, other)
    before = _state(receiver)
    events = receiver.session.receive(data, now=0.0)
    rejected = [e for e in events if isinstance(e, MessageRejected)]
    assert rejected and len(rejected) == len(events), events
    assert rejected[0].error.code == code, rejected[0].error
    assert _state(receiver) == before
    conformance.observe(f"rejected {rejected[0].error.code}; state unchanged")
    # the genuine message is still accepted afterwards (an ephemeral one asks for a session)
    events = receiver.session.receive(_enc(message), now=0.0)
    assert {e.error.code for e in events if isinstance(e, MessageRejected)} <= {302}, events


def _sibling(kind: str, message: Message) -> Message:
    """Another genuine message of the same author and kind (its public data to swap in)."""
    if isinstance(message, Snapshot):
        pd: SnapshotPublicData = message.public_data
        return replace(message, public_data=replace(pd, snapshot_id=crypto.generate_id()))
    if isinstance(message, Update):
        upd: UpdatePublicData = message.public_data
        return replace(message, public_data=replace(upd, clock=upd.clock + 1))
    assert isinstance(message, EphemeralMessage)
    return replace(message, public_data=replace(message.public_data, extra={"n": 1}))
