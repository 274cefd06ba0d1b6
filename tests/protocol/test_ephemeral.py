"""Ephemeral sessions: handshake, delivery, replay protection (stricter than secsync JS)."""

from __future__ import annotations

import pytest

from secsync.errors import EphemeralParseError
from secsync.protocol import crypto, sealing
from secsync.protocol.ephemeral import EphemeralPlaintext, EphemeralSessions, EphemeralType
from secsync.protocol.events import EphemeralReceived, MessageRejected
from secsync.protocol.messages import EphemeralMessage
from tests.factories import DOC_ID, KEY, YPeer, ephemeral_public, make_snapshot, yjs_change


def codes(events: list[object]) -> list[int]:
    return [e.error.code for e in events if isinstance(e, MessageRejected)]


def payloads(events: list[object]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, EphemeralReceived)]


@pytest.fixture
def pair() -> tuple[YPeer, YPeer]:
    a, b = YPeer(), YPeer()
    snap = make_snapshot(a.signer, yjs_change("")[0])
    a.session.load(snap, now=0.0)
    b.session.load(snap, now=0.0)
    return a, b


def handshake(a: YPeer, b: YPeer) -> None:
    init = a.session.ephemeral_initialize()
    assert b.session.receive(init, now=0.0) == []
    (proof_and_request,) = b.session.data_to_send()
    assert a.session.receive(proof_and_request, now=0.0) == []
    (proof,) = a.session.data_to_send()
    assert b.session.receive(proof, now=0.0) == []
    assert b.session.ephemeral.peers == {a.signer.public_key: a.session.ephemeral.session_id}
    assert a.session.ephemeral.peers == {b.signer.public_key: b.session.ephemeral.session_id}


def test_plaintext_layout() -> None:
    plain = EphemeralPlaintext(4, bytes(range(24)), 3000575, b"hi")
    data = plain.encode()
    assert data[0] == 4 and data[1:25] == bytes(range(24))
    assert data[25:29] == bytes([255, 200, 45, 0])  # uint32 little-endian, as secsync JS
    assert EphemeralPlaintext.decode(data) == plain
    with pytest.raises(EphemeralParseError):
        EphemeralPlaintext.decode(data[:28])


def test_handshake_then_messages_both_ways(pair: tuple[YPeer, YPeer]) -> None:
    a, b = pair
    handshake(a, b)
    assert payloads(b.session.receive(a.session.send_ephemeral(b"*aa"), now=0.0)) == [b"*aa"]
    assert payloads(a.session.receive(b.session.send_ephemeral(b"[\x0b"), now=0.0)) == [b"[\x0b"]


def test_message_without_session_asks_for_proof(pair: tuple[YPeer, YPeer]) -> None:
    a, b = pair
    events = b.session.receive(a.session.send_ephemeral(b"lost"), now=0.0)
    assert codes(events) == [302] and payloads(events) == []
    (request,) = b.session.data_to_send()
    a.session.receive(request, now=0.0)
    (proof,) = a.session.data_to_send()
    b.session.receive(proof, now=0.0)
    assert payloads(b.session.receive(a.session.send_ephemeral(b"now"), now=0.0)) == [b"now"]


def test_replayed_message_is_rejected(pair: tuple[YPeer, YPeer]) -> None:
    a, b = pair
    handshake(a, b)
    m1, m2 = a.session.send_ephemeral(b"1"), a.session.send_ephemeral(b"2")
    assert payloads(b.session.receive(m1, now=0.0)) == [b"1"]
    assert codes(b.session.receive(m1, now=0.0)) == [303]
    assert payloads(b.session.receive(m2, now=0.0)) == [b"2"]
    assert codes(b.session.receive(m1, now=0.0)) == [303]


def test_replayed_proof_does_not_reset_the_counter(pair: tuple[YPeer, YPeer]) -> None:
    # secsync JS: proof, M1, M2, M1 (303), proof again, M1 accepted again. Not here.
    a, b = pair
    init = b.session.ephemeral_initialize()
    a.session.receive(init, now=0.0)
    (proof_and_request,) = a.session.data_to_send()
    b.session.receive(proof_and_request, now=0.0)
    b.session.data_to_send()
    m1 = a.session.send_ephemeral(b"1")
    assert payloads(b.session.receive(m1, now=0.0)) == [b"1"]
    assert codes(b.session.receive(proof_and_request, now=0.0)) == [303]
    assert codes(b.session.receive(m1, now=0.0)) == [303]


def test_left_session_cannot_be_revived(pair: tuple[YPeer, YPeer]) -> None:
    a, b = pair
    handshake(a, b)
    old = a.session.send_ephemeral(b"old session")
    a.session.ephemeral.new_session()
    handshake(a, b)
    assert codes(b.session.receive(old, now=0.0)) == [303]


def test_proof_for_another_receiver_is_ignored(pair: tuple[YPeer, YPeer]) -> None:
    a, b = pair
    c = YPeer()
    c.session.load(None, now=0.0)
    c.session.receive(make_snapshot(a.signer, yjs_change("")[0]), now=0.0)  # any snapshot: same key
    init = a.session.ephemeral_initialize()
    b.session.receive(init, now=0.0)
    (for_a,) = b.session.data_to_send()
    assert c.session.receive(for_a, now=0.0) == []  # not for c: silently ignored
    assert c.session.ephemeral.peers == {} and c.session.data_to_send() == []


def test_wrong_document_tampering_and_bad_type(pair: tuple[YPeer, YPeer]) -> None:
    a, b = pair
    handshake(a, b)
    session = EphemeralSessions("another-doc", a.signer)
    assert codes(b.session.receive(session.create(KEY, b"x"), now=0.0)) == [306]
    good = a.session.send_ephemeral(b"x")
    forged = EphemeralMessage(good.nonce, good.ciphertext, bytes(64), public_data=good.public_data)
    assert codes(b.session.receive(forged, now=0.0)) == [308]
    plain = EphemeralPlaintext(9, a.session.ephemeral.session_id, 2**31, b"")
    weird = sealing.seal(ephemeral_public(a.signer), plain.encode(), KEY, a.signer)
    assert codes(b.session.receive(weird, now=0.0)) == [305]
    short = sealing.seal(ephemeral_public(a.signer), b"\x04abc", KEY, a.signer)
    assert codes(b.session.receive(short, now=0.0)) == [307]
    other_key = sealing.seal(ephemeral_public(a.signer), plain.encode(), bytes(32), a.signer)
    assert codes(b.session.receive(other_key, now=0.0)) == [301]


def test_own_echo_is_silent(pair: tuple[YPeer, YPeer]) -> None:
    a, _ = pair
    assert a.session.receive(a.session.send_ephemeral(b"me"), now=0.0) == []


def test_counter_wrap_starts_a_new_session(pair: tuple[YPeer, YPeer]) -> None:
    a, b = pair
    handshake(a, b)
    first = a.session.ephemeral.session_id
    a.session.ephemeral._counter = 0xFFFFFFFF
    message = a.session.send_ephemeral(b"after wrap")
    assert a.session.ephemeral.session_id != first
    assert codes(b.session.receive(message, now=0.0)) == [302]


def test_ephemeral_needs_a_snapshot_key() -> None:
    peer = YPeer()
    peer.session.load(None, now=0.0)
    other = crypto.SigningKeyPair.generate()
    message = EphemeralSessions(DOC_ID, other).create(KEY, b"x", EphemeralType.INITIALIZE)
    assert codes(peer.session.receive(message, now=0.0)) == [801]


def test_a_flood_of_initialize_messages_gets_a_few_replies(pair: tuple[YPeer, YPeer]) -> None:
    from secsync.protocol.ephemeral import REPLY_BURST

    a, b = pair
    for i in range(800):  # within a tenth of a second
        a.session.ephemeral.new_session()
        b.session.receive(a.session.ephemeral_initialize(), now=100.0 + i / 8000)
    replies = b.session.data_to_send()
    assert len(replies) == REPLY_BURST  # not 800
    b.session.receive(a.session.ephemeral_initialize(), now=101.2)  # a second later: one more
    assert len(b.session.data_to_send()) == 1
