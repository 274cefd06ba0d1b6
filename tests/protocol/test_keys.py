"""Keys and identities: what open() and the session accept, and what they refuse at once."""

from __future__ import annotations

import dataclasses

import pytest

from secsync.errors import InvalidKeyError, SecsyncError, UpdateSnapshotMismatchError
from secsync.protocol import crypto
from secsync.protocol.events import MessageRejected
from secsync.protocol.keys import (
    StaticKey,
    decode_key,
    document_key,
    encode_key,
    key_provider,
    signing_key_pair,
)
from secsync.protocol.session import DocumentSession
from tests.factories import DOC_ID, KEY, make_snapshot, make_update, plain_yjs_doc, yjs_change


def test_document_key_text_round_trips_and_opens_like_bytes() -> None:
    key = crypto.generate_key()
    text = encode_key(key)
    assert isinstance(text, str) and len(text) == 43
    assert decode_key(text) == key
    assert decode_key(f"  {text}\n") == key  # as read from a file
    provider = key_provider(text)
    assert isinstance(provider, StaticKey) and provider.key == key


@pytest.mark.parametrize(
    "bad",
    [
        "abc",  # the typo that used to pass as a key provider
        "",
        encode_key(crypto.generate_key())[:-2],  # cut short
        encode_key(crypto.generate_key()) + "AAAA",  # too long
        "+" * 43,  # not base64url
        b"short",
        bytes(33),
        12345,
        None,
        object(),
        ["not", "a", "key"],
    ],
)
def test_anything_else_is_refused_at_once_naming_the_parameter(bad: object) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        key_provider(bad)
    assert caught.value.message.startswith("key:")
    assert isinstance(caught.value, SecsyncError)


def test_an_error_never_shows_the_key_text() -> None:
    secret = encode_key(crypto.generate_key())[:40]
    with pytest.raises(InvalidKeyError) as caught:
        key_provider(secret)
    assert secret not in str(caught.value)


def test_a_key_provider_is_recognised_by_its_protocol() -> None:
    class Provider:
        def snapshot_key(self, snapshot: object) -> bytes:
            return KEY

        def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, dict[str, object]]:
            return KEY, {}

    provider = Provider()
    assert key_provider(provider) is provider

    class HalfProvider:
        snapshot_key = "not callable"

        def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, dict[str, object]]:
            return KEY, {}

    with pytest.raises(InvalidKeyError):
        key_provider(HalfProvider())


def test_storage_key_is_named_in_its_error() -> None:
    with pytest.raises(InvalidKeyError, match=r"\] storage_key:"):
        document_key("nope", parameter="storage_key")


def test_identity_text_round_trips() -> None:
    me = crypto.SigningKeyPair.generate()
    text = me.to_b64()
    again = crypto.SigningKeyPair.from_b64(text)
    assert again.public_key == me.public_key and again.secret_key == me.secret_key
    assert signing_key_pair(text).public_key == me.public_key
    assert text not in repr(me)  # the secret never shows in a repr


@pytest.mark.parametrize("bad", [b"\x01" * 64, "abc", crypto.generate_key(), 7, None])
def test_a_wrong_signing_key_is_a_typed_error(bad: object) -> None:
    with pytest.raises(InvalidKeyError, match=r"\] signing_key:"):
        signing_key_pair(bad)


def test_the_session_applies_the_same_rules() -> None:
    me = crypto.SigningKeyPair.generate()
    session = DocumentSession(DOC_ID, me.to_b64(), encode_key(KEY), plain_yjs_doc())
    assert session.public_key == me.public_key
    with pytest.raises(InvalidKeyError):
        DocumentSession(DOC_ID, me, "abc", plain_yjs_doc())
    with pytest.raises(InvalidKeyError):
        DocumentSession(DOC_ID, object(), KEY, plain_yjs_doc())  # type: ignore[arg-type]


# --- which stored snapshot to load ----------------------------------------------------------


def _session() -> DocumentSession:
    return DocumentSession(DOC_ID, crypto.SigningKeyPair.generate(), KEY, plain_yjs_doc())


def test_choose_takes_the_newest_snapshot_that_opens() -> None:
    alice, mallory = crypto.SigningKeyPair.generate(), crypto.SigningKeyPair.generate()
    content, _ = yjs_change("hello")
    first = make_snapshot(alice, content)
    second = make_snapshot(alice, content, parent=first)
    foreign = make_snapshot(mallory, content, key=crypto.generate_key())  # another key
    forged = make_snapshot(mallory, content)
    forged = dataclasses.replace(forged, signature=bytes(64))
    session = _session()
    choice = session.choose([first, second, foreign, forged])
    assert choice.index == 1
    assert choice.unreadable  # a validly signed snapshot did not open
    assert [r.error.code for r in choice.rejected] == [111, 101]  # newest first


def test_choose_finds_nothing_when_no_snapshot_opens() -> None:
    alice = crypto.SigningKeyPair.generate()
    content, _ = yjs_change("hello")
    sealed_elsewhere = make_snapshot(alice, content, key=crypto.generate_key())
    choice = _session().choose([sealed_elsewhere])
    assert choice.index is None and choice.unreadable
    assert _session().choose([]) == type(choice)(None, (), False)


def test_only_junk_is_not_unreadable_history() -> None:
    alice = crypto.SigningKeyPair.generate()
    content, _ = yjs_change("hello")
    good = make_snapshot(alice, content)
    junk = dataclasses.replace(good, signature=bytes(64))
    other_doc = make_snapshot(alice, content, doc_id="another-document")
    choice = _session().choose([junk, other_doc])
    assert choice.index is None
    assert not choice.unreadable  # nobody's readable history: a first snapshot may follow


def test_updates_on_a_snapshot_that_did_not_open_are_refused_at_once() -> None:
    alice, mallory = crypto.SigningKeyPair.generate(), crypto.SigningKeyPair.generate()
    content, _ = yjs_change("hello")
    good = make_snapshot(alice, content)
    foreign_key = crypto.generate_key()
    foreign = make_snapshot(mallory, content, key=foreign_key)
    session = _session()
    choice = session.choose([good, foreign])
    session.load([good, foreign][choice.index or 0], now=0.0)
    change, _ = yjs_change("x")
    events = session.receive(make_update(mallory, foreign, 0, [change], key=foreign_key), now=0.0)
    rejected = [e for e in events if isinstance(e, MessageRejected)]
    assert rejected and isinstance(rejected[0].error, UpdateSnapshotMismatchError)
    assert session.next_deadline() is None  # nothing held waiting for that snapshot
