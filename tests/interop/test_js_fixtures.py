"""Messages sealed by secsync JS 0.5.0 (committed fixtures) open byte-exactly in Python.

``fixtures/js_sealed.json`` is written by ``interop/js/generate.mjs`` with the real JS
``createSnapshot`` / ``createUpdate`` / ``createEphemeralMessage``; ``python_sealed.json`` by
``interop/make_python_sealed.py`` (and checked by ``interop/js/verify.mjs``). No node needed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from secsync.errors import SecsyncError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.encoding import b64decode, b64encode
from secsync.protocol.ephemeral import EphemeralPlaintext, EphemeralSessions, EphemeralType
from secsync.protocol.messages import INITIAL_PARENT_PROOF, Message, Snapshot

FIXTURES = Path(__file__).parent / "fixtures"
SIGNING_PUBLIC_KEY = "74IPzs2dhoERLRuxeS7zadzEvKfb7IqOK-jKu0mQxIM"
SIGNING_SECRET_KEY = (
    "g3dtwb9XzhSzZGkxTfg11t1KEIb4D8rO7K54R6dnxArvgg_OzZ2GgREtG7F5LvNp3MS8p9vsio4r6Mq7SZDEgw"
)

SIGNATURE_ERROR_CODES = {"snapshot": 111, "update": 212, "ephemeral": 308}
DECRYPTION_ERROR_CODES = {"snapshot": 101, "update": 201, "ephemeral": 301}
EPHEMERAL_TYPES = {
    "initialize": EphemeralType.INITIALIZE,
    "proofAndRequestProof": EphemeralType.PROOF_AND_REQUEST_PROOF,
    "proof": EphemeralType.PROOF,
    "message": EphemeralType.MESSAGE,
}


def _load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text("utf-8"))
    return cases


JS_CASES = _load("js_sealed.json")
PY_CASES = _load("python_sealed.json")
JS_BY_NAME = {case["name"]: case for case in JS_CASES}
PY_BY_NAME = {case["name"]: case for case in PY_CASES}


def _params(cases: list[dict[str, Any]], kind: str | None = None) -> list[Any]:
    return [
        pytest.param(case, id=case["name"])
        for case in cases
        if kind is None or case["kind"] == kind
    ]


def _flip_first_char(text: str) -> str:
    return ("B" if text[0] == "A" else "A") + text[1:]


def _parse(case: dict[str, Any]) -> Message:
    message = wire.from_json_dict(case["message"])
    assert message.kind.name.lower() == case["kind"]
    assert b64encode(message.public_data.pub_key) == case["signingPublicKey"]
    return message


def _check_proof_chain(case: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> None:
    child = _parse(case)
    assert isinstance(child, Snapshot)
    public = child.public_data
    if "parent" not in case:
        assert public.parent_snapshot_id == b""
        assert public.parent_snapshot_proof == INITIAL_PARENT_PROOF
        return
    parent = _parse(by_name[case["parent"]])
    assert isinstance(parent, Snapshot)
    expected = crypto.snapshot_proof(
        b64encode(parent.public_data.parent_snapshot_proof),
        crypto.ciphertext_hash(parent.ciphertext),
        b64encode(parent.public_data.snapshot_id),
    )
    assert case["message"]["publicData"]["parentSnapshotProof"] == expected
    assert public.parent_snapshot_id == parent.public_data.snapshot_id
    assert parent.info().child_proof() == public.parent_snapshot_proof


def test_fixtures_cover_the_required_cases() -> None:
    for cases in (JS_CASES, PY_CASES):
        names = {case["name"] for case in cases}
        assert {
            "snapshot-initial",
            "snapshot-child",
            "snapshot-extra-public-data",
            "update-clock-0",
            "update-clock-7",
            "snapshot-non-ascii-docid",
            "ephemeral-initialize",
            "ephemeral-message",
        } <= names
        assert all(case["signingPublicKey"] == SIGNING_PUBLIC_KEY for case in cases)
    initial = JS_BY_NAME["snapshot-initial"]["message"]["publicData"]
    assert initial["parentSnapshotId"] == ""
    assert initial["parentSnapshotProof"] == crypto.snapshot_proof("", "", "")
    assert "keyDerivationTrace" in JS_BY_NAME["snapshot-extra-public-data"]["message"]["publicData"]
    assert JS_BY_NAME["snapshot-non-ascii-docid"]["message"]["publicData"]["docId"] == "dök-ü-😀"


@pytest.mark.parametrize("case", _params(JS_CASES))
def test_js_message_opens(case: dict[str, Any]) -> None:
    message = _parse(case)
    plaintext = sealing.open_message(message, b64decode(case["key"]))
    assert plaintext == b64decode(case["plaintext"])
    # Python's JSON form of the parsed message is the object JS produced.
    assert wire.to_json_dict(message) == case["message"]


@pytest.mark.parametrize("case", _params(JS_CASES))
def test_js_message_with_flipped_signature_is_rejected(case: dict[str, Any]) -> None:
    tampered = dict(case["message"], signature=_flip_first_char(case["message"]["signature"]))
    message = wire.from_json_dict(tampered)
    with pytest.raises(SecsyncError) as excinfo:
        sealing.open_message(message, b64decode(case["key"]))
    assert excinfo.value.code == SIGNATURE_ERROR_CODES[case["kind"]]


@pytest.mark.parametrize("case", _params(JS_CASES))
def test_js_message_with_wrong_key_is_rejected(case: dict[str, Any]) -> None:
    key = bytearray(b64decode(case["key"]))
    key[0] ^= 1
    with pytest.raises(SecsyncError) as excinfo:
        sealing.open_message(_parse(case), bytes(key))
    assert excinfo.value.code == DECRYPTION_ERROR_CODES[case["kind"]]


@pytest.mark.parametrize("case", _params(JS_CASES, "snapshot"))
def test_js_snapshot_proof_chain(case: dict[str, Any]) -> None:
    _check_proof_chain(case, JS_BY_NAME)


@pytest.mark.parametrize("case", _params(JS_CASES, "ephemeral"))
def test_js_ephemeral_header(case: dict[str, Any]) -> None:
    plain = EphemeralPlaintext.decode(b64decode(case["plaintext"]))
    info = case["ephemeral"]
    assert plain.type == EPHEMERAL_TYPES[info["type"]]
    assert b64encode(plain.session_id) == info["sessionId"]
    assert plain.counter == info["counter"]
    if info["type"] == "initialize":
        assert plain.payload == b""


def test_js_session_proof_is_accepted_by_python_session() -> None:
    case = JS_BY_NAME["ephemeral-proof-and-request-proof"]
    info = case["ephemeral"]
    plain = EphemeralPlaintext.decode(b64decode(case["plaintext"]))
    public_key = b64decode(case["signingPublicKey"])
    receiver = b64decode(info["receiverSessionId"])
    sender = b64decode(info["sessionId"])
    assert crypto.verify_session_proof(plain.payload, public_key, sender, receiver)
    # The JS proof was made for its receiver's session only.
    assert not crypto.verify_session_proof(plain.payload, public_key, sender, bytes(24))

    # A Python peer whose session is the receiver accepts it and answers with a proof.
    message = _parse(case)
    sessions = EphemeralSessions(
        message.public_data.doc_id, crypto.SigningKeyPair.from_b64(SIGNING_SECRET_KEY)
    )
    sessions.session_id = receiver
    result = sessions.receive(message, b64decode(case["key"]), now=0.0)
    assert sessions.peers == {public_key: sender}
    (reply,) = result.replies
    answer = EphemeralPlaintext.decode(sealing.open_message(reply, b64decode(case["key"])))
    assert answer.type == EphemeralType.PROOF
    assert crypto.verify_session_proof(answer.payload, public_key, receiver, sender)


@pytest.mark.parametrize("case", _params(PY_CASES))
def test_python_sealed_message_reopens(case: dict[str, Any]) -> None:
    message = _parse(case)
    plaintext = sealing.open_message(message, b64decode(case["key"]))
    assert plaintext == b64decode(case["plaintext"])
    assert wire.to_json_dict(message) == case["message"]
    if case["kind"] == "snapshot":
        _check_proof_chain(case, PY_BY_NAME)
