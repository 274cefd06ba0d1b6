import json

import msgpack
import pytest

from secsync.errors import (
    EphemeralParseError,
    MalformedMessageError,
    MessageTooLargeError,
    SecsyncError,
    SnapshotParseError,
    UnsupportedVersionError,
    UpdateParseError,
)
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.messages import EphemeralMessage, Snapshot, Update
from tests.factories import DOC_ID, KEY, ephemeral_public, make_snapshot, make_update, yjs_change


@pytest.fixture
def signer() -> crypto.SigningKeyPair:
    return crypto.SigningKeyPair.generate()


def _messages(signer: crypto.SigningKeyPair) -> list[Snapshot | Update | EphemeralMessage]:
    snap = make_snapshot(signer, b"state", clocks={signer.public_key: 3})
    child = make_snapshot(signer, b"state2", parent=snap)
    upd = make_update(signer, snap, 7, [b"a", b"bc"])
    eph = sealing.seal(ephemeral_public(signer), b"\x04" + bytes(28) + b"hi", KEY, signer)
    return [snap, child, upd, eph]


@pytest.mark.parametrize("include_doc_id", [True, False])
def test_native_round_trip(signer: crypto.SigningKeyPair, include_doc_id: bool) -> None:
    for message in _messages(signer):
        data = wire.encode(message, include_doc_id=include_doc_id)
        assert wire.decode(data, doc_id=DOC_ID) == message
        assert sealing.open_message(wire.decode(data, doc_id=DOC_ID), KEY)


def test_implicit_doc_id_needs_context(signer: crypto.SigningKeyPair) -> None:
    data = wire.encode(_messages(signer)[2], include_doc_id=False)
    with pytest.raises(UpdateParseError):
        wire.decode(data)


def test_json_round_trip_and_routing(signer: crypto.SigningKeyPair) -> None:
    for message in _messages(signer):
        text = wire.to_json(message)
        back = wire.from_json(text)
        assert back == message
        # the reference server routes by fields; an explicit "type" key is tolerated
        obj = json.loads(text)
        obj["type"] = "update"
        assert wire.from_json_dict(obj) == message


def test_json_keeps_extra_public_data_and_signature_covers_it(
    signer: crypto.SigningKeyPair,
) -> None:
    message = _messages(signer)[2]
    obj = wire.to_json_dict(message)
    assert isinstance(obj["publicData"], dict)
    obj["publicData"]["keyId"] = "k1"  # an extra the author did not sign
    tampered = wire.from_json_dict(obj)
    assert tampered.public_data.extra == {"keyId": "k1"}
    with pytest.raises(SecsyncError) as info:
        sealing.open_message(tampered, KEY)
    assert info.value.code == 212


def test_one_keystroke_update_is_compact(signer: crypto.SigningKeyPair) -> None:
    change, _ = yjs_change("a")
    snap = make_snapshot(signer, b"")
    update = make_update(signer, snap, 0, [change])
    native = wire.encode(update, include_doc_id=False)
    as_json = wire.to_json(update)
    assert len(native) <= 250, len(native)
    assert len(native) < len(as_json) * 0.6


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda items: items.__setitem__(0, 99), UnsupportedVersionError),
        (lambda items: items.__setitem__(0, "1"), UpdateParseError),
        (lambda items: items.__setitem__(1, 9), MalformedMessageError),
        (lambda items: items.__setitem__(5, -1), UpdateParseError),
        (lambda items: items.__setitem__(5, True), UpdateParseError),
        (lambda items: items.__setitem__(3, b"short"), UpdateParseError),
        (lambda items: items.__setitem__(7, b"x" * 23), UpdateParseError),
        (lambda items: items.__setitem__(8, b"x" * 47), UpdateParseError),
        (lambda items: items.__setitem__(6, {"docId": "x"}), UpdateParseError),
        (lambda items: items.__setitem__(6, {"f": 1.5}), UpdateParseError),
        (lambda items: items.append(b"extra"), UpdateParseError),
        (lambda items: items.pop(), UpdateParseError),
    ],
)
def test_native_decode_rejects_malformed(
    signer: crypto.SigningKeyPair, mutate: object, error: type[SecsyncError]
) -> None:
    items = msgpack.unpackb(wire.encode(_messages(signer)[2]), raw=False)
    mutate(items)  # type: ignore[operator]
    with pytest.raises(error):
        wire.decode(msgpack.packb(items, use_bin_type=True), doc_id=DOC_ID)


def test_native_decode_rejects_garbage_and_size() -> None:
    for data in [b"", b"\xc1", b"\x92\x01", msgpack.packb({"a": 1}), b"\x93\x01\x02\x03" + b"\x00"]:
        with pytest.raises(MalformedMessageError):
            wire.decode(data, doc_id=DOC_ID)
    with pytest.raises(MessageTooLargeError):
        wire.decode(b"\x00" * 101, max_bytes=100)


def test_snapshot_and_ephemeral_parse_errors_are_kind_specific(
    signer: crypto.SigningKeyPair,
) -> None:
    snap, _, _, eph = _messages(signer)
    items = msgpack.unpackb(wire.encode(snap), raw=False)
    items[5] = b"x" * 5  # parentSnapshotId of bad length
    with pytest.raises(SnapshotParseError):
        wire.decode(msgpack.packb(items, use_bin_type=True))
    items = msgpack.unpackb(wire.encode(eph), raw=False)
    items[3] = "not bytes"
    with pytest.raises(EphemeralParseError):
        wire.decode(msgpack.packb(items, use_bin_type=True))


@pytest.mark.parametrize(
    "patch",
    [
        {"nonce": "AAA="},
        {"nonce": 5},
        {"signature": "+" * 86},
        {"publicData": {"docId": DOC_ID}},
        {"publicData": []},
        {"unknownTopLevel": 1},
    ],
)
def test_json_decode_rejects_malformed(signer: crypto.SigningKeyPair, patch: dict) -> None:
    obj = wire.to_json_dict(_messages(signer)[2])
    obj.update(patch)
    with pytest.raises(MalformedMessageError):
        wire.from_json_dict(obj)


def test_json_rejects_floats_and_non_json(signer: crypto.SigningKeyPair) -> None:
    text = wire.to_json(_messages(signer)[2]).replace('"clock":7', '"clock":7.0')
    assert '"clock":7.0' in text
    with pytest.raises(MalformedMessageError):
        wire.from_json(text)
    with pytest.raises(MalformedMessageError):
        wire.from_json("{not json")
    with pytest.raises(MalformedMessageError):
        wire.from_json("[1]")


def test_json_tolerates_additional_server_data_and_lone_surrogates(
    signer: crypto.SigningKeyPair,
) -> None:
    snap = make_snapshot(signer, b"x", doc_id="a\ud800b")
    obj = wire.to_json_dict(snap)
    obj["additionalServerData"] = {"anything": 1}  # unsigned, sent by secsync JS clients
    text = json.dumps(obj)  # escapes the lone surrogate as \ud800
    back = wire.from_json(text)
    assert back == snap
    assert sealing.open_message(back, KEY) == b"x"


def test_only_the_canonical_encoding_is_accepted(signer: crypto.SigningKeyPair) -> None:
    message = _messages(signer)[2]
    data = wire.encode(message)
    assert wire.decode(data) == message
    items = msgpack.unpackb(data, raw=False)
    items[6] = {}  # "no extras" spelled as an empty map instead of nil
    with pytest.raises(UpdateParseError, match="non-canonical"):
        wire.decode(msgpack.packb(items, use_bin_type=True))
    wide = data.replace(b"\x07\xc0", b"\xcd\x00\x07\xc0", 1)  # clock 7 as a uint16
    assert wide != data
    with pytest.raises(UpdateParseError, match="non-canonical"):
        wire.decode(wide)
