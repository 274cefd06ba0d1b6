"""Wire formats: the native msgpack encoding and secsync's JSON message form.

Native layout (a msgpack array, binary values as msgpack ``bin``)::

    snapshot  [version, 1, docId|nil, pubKey, snapshotId, parentSnapshotId,
               parentSnapshotProof, {pubKey: clock}, extra|nil, nonce, ciphertext, signature]
    update    [version, 2, docId|nil, pubKey, refSnapshotId, clock, extra|nil,
               nonce, ciphertext, signature]
    ephemeral [version, 3, docId|nil, pubKey, extra|nil, nonce, ciphertext, signature]

``docId`` may be left out (nil) when the receiver knows the document from the context (for
example the broker subject): the signature covers it all the same, so a message moved to
another document fails verification.

Size: both forms are in this one module on purpose: they share
the field checks (sizes, document id, ``extra``, clocks) and the bounds, and a message decoded
from either must pass exactly the same rules; splitting them would put those rules in a third
module that both halves import, for no reader's benefit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import msgpack

from secsync.errors import (
    EncodingError,
    EphemeralParseError,
    MalformedMessageError,
    MessageTooLargeError,
    SecsyncError,
    SnapshotParseError,
    UnsupportedVersionError,
    UpdateParseError,
)
from secsync.protocol.crypto import (
    CIPHERTEXT_OVERHEAD,
    HASH_BYTES,
    ID_BYTES,
    NONCE_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
)
from secsync.protocol.encoding import (
    MAX_SAFE_INTEGER,
    JsonValue,
    b64decode,
    b64encode,
    check_json_value,
    check_msgpack_structure,
)
from secsync.protocol.messages import (
    EPHEMERAL_FIELDS,
    SNAPSHOT_FIELDS,
    SUPPORTED_VERSIONS,
    UPDATE_FIELDS,
    EphemeralMessage,
    EphemeralPublicData,
    Message,
    MessageKind,
    Snapshot,
    SnapshotPublicData,
    Update,
    UpdatePublicData,
    trusted_ephemeral,
    trusted_update,
)

DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
MAX_DOC_ID_LENGTH: Final = 1024
MAX_CLOCK_ENTRIES: Final = 100_000
MAX_EXTRA_BYTES: Final = 16 * 1024
MAX_SNAPSHOT_EXTRA_BYTES: Final = 512 * 1024
"""Snapshots carry more public data than other messages: a closed group's sealed keys and
membership chain (``secsync.group``) travel in every snapshot."""

_PARSE_ERRORS: dict[int, type[MalformedMessageError]] = {
    MessageKind.SNAPSHOT: SnapshotParseError,
    MessageKind.UPDATE: UpdateParseError,
    MessageKind.EPHEMERAL: EphemeralParseError,
}


# --- native msgpack -------------------------------------------------------------------------------


def encode(message: Message, *, include_doc_id: bool = True) -> bytes:
    """Encode ``message`` in the native msgpack wire form."""
    pd = message.public_data
    doc_id = pd.doc_id if include_doc_id else None
    extra = dict(pd.extra) or None
    body: list[Any]
    if isinstance(message, Update):
        assert isinstance(pd, UpdatePublicData)
        body = [message.version, 2, doc_id, pd.pub_key, pd.ref_snapshot_id, pd.clock, extra]
    elif isinstance(message, Snapshot):
        assert isinstance(pd, SnapshotPublicData)
        body = [
            message.version,
            1,
            doc_id,
            pd.pub_key,
            pd.snapshot_id,
            pd.parent_snapshot_id,
            pd.parent_snapshot_proof,
            dict(pd.parent_snapshot_update_clocks),
            extra,
        ]
    else:
        body = [message.version, 3, doc_id, pd.pub_key, extra]
    body += [message.nonce, message.ciphertext, message.signature]
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def _bytes(value: object, size: int | None, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(f"{what} must be binary")
    if size is not None and len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return value


def _uint(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SAFE_INTEGER:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


def _doc_id(value: object, expected: str | None) -> str:
    if value is None:
        if expected is None:
            raise ValueError("docId is implicit but no document context was given")
        return expected
    if not isinstance(value, str) or len(value) > MAX_DOC_ID_LENGTH:
        raise ValueError("docId must be a string of bounded length")
    return value


def _extra(
    value: object, fields: frozenset[str], limit: int = MAX_EXTRA_BYTES
) -> dict[str, JsonValue]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("extra public data must be a map")
    checked = check_json_value(value)
    assert isinstance(checked, dict)
    if fields & checked.keys():
        raise ValueError("extra public data repeats a protocol field")
    if len(json.dumps(checked)) > limit:
        raise ValueError("extra public data too large")
    return checked


def _clocks(value: object) -> dict[bytes, int]:
    if not isinstance(value, dict) or len(value) > MAX_CLOCK_ENTRIES:
        raise ValueError("clocks must be a bounded map")
    return {_bytes(k, PUBLIC_KEY_BYTES, "clock key"): _uint(v, "clock") for k, v in value.items()}


def _sealed(items: list[Any]) -> tuple[bytes, bytes, bytes]:
    nonce = _bytes(items[0], NONCE_BYTES, "nonce")
    ciphertext = _bytes(items[1], None, "ciphertext")
    if len(ciphertext) < CIPHERTEXT_OVERHEAD:
        raise ValueError("ciphertext too short")
    return nonce, ciphertext, _bytes(items[2], SIGNATURE_BYTES, "signature")


def decode(
    data: bytes,
    *,
    doc_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Message:
    """Decode untrusted native wire bytes; only :class:`SecsyncError` subclasses escape.

    ``doc_id`` supplies the document id for messages that leave it implicit; a message that
    names another document than ``doc_id`` is still decoded (the session rejects it).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessageError("message must be bytes")
    if len(data) > max_bytes:
        raise MessageTooLargeError(f"message of {len(data)} bytes exceeds {max_bytes}")
    if type(data) is bytes:
        fast = _decode_canonical(data, doc_id)
        if fast is not None:
            return fast
    try:
        check_msgpack_structure(bytes(data))
        items = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
            # a container cannot hold more items than the input has bytes: a header claiming
            # more is refused before anything is allocated for it
            max_array_len=min(MAX_CLOCK_ENTRIES, len(data)),
            max_map_len=min(MAX_CLOCK_ENTRIES, len(data) // 2),
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types on hostile input
        raise MalformedMessageError("not a msgpack message") from exc
    if not isinstance(items, list) or len(items) < 2:
        raise MalformedMessageError("message must be a msgpack array")
    version, kind = items[0], items[1]
    if type(kind) is not int or kind not in _PARSE_ERRORS:
        raise MalformedMessageError("unknown message kind")
    if type(version) is not int:
        raise _PARSE_ERRORS[kind]("protocol version must be an integer")
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(f"protocol version {version} is not supported")
    try:
        message = _decode_body(version, kind, items, doc_id)
        # One message, one encoding: anything else (an empty map for "no extras", a wider
        # integer, str for bin) could be altered in transit without touching the signature.
        if encode(message, include_doc_id=items[2] is not None) != data:
            raise ValueError("non-canonical encoding")
        return message
    except (ValueError, TypeError, IndexError, EncodingError) as exc:
        raise _PARSE_ERRORS[kind](
            str(exc) if not isinstance(exc, SecsyncError) else exc.message
        ) from None


_CANONICAL_HEADS: Final = {
    b"\x9a\x01\x02": MessageKind.UPDATE,
    b"\x98\x01\x03": MessageKind.EPHEMERAL,
}
_BIN_PUBLIC_KEY: Final = b"\xc4\x20"
_BIN_ID: Final = b"\xc4\x18"  # ids and nonces: 24 bytes
_BIN_SIGNATURE: Final = b"\xc4\x40"


def _decode_canonical(data: bytes, doc_id: str | None) -> Message | None:
    """The common case, read straight from the bytes: an update or ephemeral message of
    protocol version 1 without extras, in its one canonical encoding. ``None`` for anything
    else (the general decoder then accepts or refuses it, with its errors).

    Equivalence with the general path: this accepts exactly the byte strings that are the
    msgpack encoding, as :func:`encode` writes it, of ``[1, kind, docId|nil, pubKey(32),
    (refSnapshotId(24), clock,) nil, nonce(24), ciphertext(≥48), signature(64)]`` with a valid
    ``docId`` (UTF-8, at most ``MAX_DOC_ID_LENGTH`` characters, or nil with ``doc_id`` given)
    and a clock of 0 to 2^53-1: each item must carry the header ``msgpack.packb`` gives it (the
    shortest integer, str and bin forms, ``bin`` for binary values) and the last one must end
    the input. The general path decodes such bytes to the very same message (the one container
    is the top-level array of 8 or 10 items; every size and type check passes) and re-encodes
    them to the same bytes, so it accepts them too. Whatever this does not accept, the general
    path decides, with its errors. It allocates nothing but slices of the input.
    """
    kind = _CANONICAL_HEADS.get(data[:3])
    if kind is None:
        return None
    size = len(data)
    try:
        first = data[3]
        if first == 0xC0:
            if doc_id is None:
                return None
            doc, pos = doc_id, 4
        else:
            if 0xA0 <= first <= 0xBF:
                length, pos = first & 0x1F, 4
            elif first == 0xD9:
                length, pos = data[4], 5
                if length < 0x20:
                    return None
            elif first == 0xDA:
                length, pos = int.from_bytes(data[4:6], "big"), 6
                if length < 0x100:
                    return None
            else:
                return None
            end = pos + length
            if end > size:
                return None
            try:
                doc = data[pos:end].decode("utf-8")
            except UnicodeDecodeError:
                return None
            if len(doc) > MAX_DOC_ID_LENGTH:
                return None
            pos = end
        if data[pos : pos + 2] != _BIN_PUBLIC_KEY:
            return None
        pub_key = data[pos + 2 : pos + 34]
        pos += 34
        clock = 0
        ref = b""
        if kind == MessageKind.UPDATE:
            if data[pos : pos + 2] != _BIN_ID:
                return None
            ref = data[pos + 2 : pos + 26]
            pos += 26
            first = data[pos]
            if first <= 0x7F:
                clock, pos = first, pos + 1
            elif first == 0xCC:
                clock, pos = data[pos + 1], pos + 2
                if clock <= 0x7F:
                    return None
            elif first == 0xCD:
                clock, pos = int.from_bytes(data[pos + 1 : pos + 3], "big"), pos + 3
                if clock <= 0xFF:
                    return None
            elif first == 0xCE:
                clock, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
                if clock <= 0xFFFF:
                    return None
            elif first == 0xCF:
                clock, pos = int.from_bytes(data[pos + 1 : pos + 9], "big"), pos + 9
                if clock <= 0xFFFFFFFF or clock > MAX_SAFE_INTEGER:
                    return None
            else:
                return None
        if data[pos] != 0xC0 or data[pos + 1 : pos + 3] != _BIN_ID:  # no extras; the nonce
            return None
        nonce = data[pos + 3 : pos + 27]
        pos += 27
        first = data[pos]
        if first == 0xC4:
            length, pos = data[pos + 1], pos + 2
        elif first == 0xC5:
            length, pos = int.from_bytes(data[pos + 1 : pos + 3], "big"), pos + 3
            if length <= 0xFF:
                return None
        elif first == 0xC6:
            length, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
            if length <= 0xFFFF:
                return None
        else:
            return None
        end = pos + length
        if (
            length < CIPHERTEXT_OVERHEAD
            or end + 2 + SIGNATURE_BYTES != size
            or data[end : end + 2] != _BIN_SIGNATURE
        ):
            return None
    except IndexError:
        return None
    ciphertext = data[pos:end]
    signature = data[end + 2 :]
    if kind == MessageKind.UPDATE:
        return trusted_update(
            nonce=nonce,
            ciphertext=ciphertext,
            signature=signature,
            version=1,
            doc_id=doc,
            pub_key=pub_key,
            ref_snapshot_id=ref,
            clock=clock,
        )
    return trusted_ephemeral(
        nonce=nonce,
        ciphertext=ciphertext,
        signature=signature,
        version=1,
        doc_id=doc,
        pub_key=pub_key,
    )


def _decode_body(version: int, kind: int, items: list[Any], doc_id: str | None) -> Message:
    if kind == MessageKind.UPDATE:
        if len(items) != 10:
            raise ValueError("an update has 10 fields")
        nonce, ciphertext, signature = _sealed(items[7:])
        return Update(
            nonce,
            ciphertext,
            signature,
            version,
            public_data=UpdatePublicData(
                doc_id=_doc_id(items[2], doc_id),
                pub_key=_bytes(items[3], PUBLIC_KEY_BYTES, "pubKey"),
                ref_snapshot_id=_bytes(items[4], ID_BYTES, "refSnapshotId"),
                clock=_uint(items[5], "clock"),
                extra=_extra(items[6], UPDATE_FIELDS),
            ),
        )
    if kind == MessageKind.SNAPSHOT:
        if len(items) != 12:
            raise ValueError("a snapshot has 12 fields")
        nonce, ciphertext, signature = _sealed(items[9:])
        parent_id = _bytes(items[5], None, "parentSnapshotId")
        if len(parent_id) not in (0, ID_BYTES):
            raise ValueError("parentSnapshotId must be empty or 24 bytes")
        return Snapshot(
            nonce,
            ciphertext,
            signature,
            version,
            public_data=SnapshotPublicData(
                doc_id=_doc_id(items[2], doc_id),
                pub_key=_bytes(items[3], PUBLIC_KEY_BYTES, "pubKey"),
                snapshot_id=_bytes(items[4], ID_BYTES, "snapshotId"),
                parent_snapshot_id=parent_id,
                parent_snapshot_proof=_bytes(items[6], HASH_BYTES, "parentSnapshotProof"),
                parent_snapshot_update_clocks=_clocks(items[7]),
                extra=_extra(items[8], SNAPSHOT_FIELDS, MAX_SNAPSHOT_EXTRA_BYTES),
            ),
        )
    if len(items) != 8:
        raise ValueError("an ephemeral message has 8 fields")
    nonce, ciphertext, signature = _sealed(items[5:])
    return EphemeralMessage(
        nonce,
        ciphertext,
        signature,
        version,
        public_data=EphemeralPublicData(
            doc_id=_doc_id(items[2], doc_id),
            pub_key=_bytes(items[3], PUBLIC_KEY_BYTES, "pubKey"),
            extra=_extra(items[4], EPHEMERAL_FIELDS),
        ),
    )


# --- secsync JSON form ------------------------------------------------------------------------


def to_json_dict(message: Message) -> dict[str, JsonValue]:
    """secsync's JSON message object: ``{nonce, ciphertext, signature, publicData}``."""
    return {
        "nonce": b64encode(message.nonce),
        "ciphertext": b64encode(message.ciphertext),
        "signature": b64encode(message.signature),
        "publicData": message.public_data.to_json(),
    }


def to_json(message: Message) -> str:
    return json.dumps(to_json_dict(message), separators=(",", ":"), ensure_ascii=False)


def _b64(value: object, size: int | None, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a base64url string")
    raw = b64decode(value)
    if size is not None and len(raw) != size:
        raise ValueError(f"{what} must encode {size} bytes")
    return raw


def kind_of_json(obj: Mapping[str, Any]) -> MessageKind:
    """Route a secsync JSON message by its public fields, as the reference server does."""
    public = obj.get("publicData")
    if isinstance(public, Mapping):
        if "snapshotId" in public:
            return MessageKind.SNAPSHOT
        if "refSnapshotId" in public:
            return MessageKind.UPDATE
    return MessageKind.EPHEMERAL


def from_json_dict(obj: object, *, kind: MessageKind | None = None) -> Message:
    """Parse secsync's JSON message object (extra public fields are kept, and signed over)."""
    if not isinstance(obj, Mapping):
        raise MalformedMessageError("message must be a JSON object")
    kind = kind_of_json(obj) if kind is None else kind
    error = _PARSE_ERRORS[kind]
    try:
        return _from_json(obj, kind)
    except (ValueError, TypeError, KeyError, EncodingError) as exc:
        text = exc.message if isinstance(exc, SecsyncError) else str(exc)
        raise error(text or "malformed JSON message") from None


def _from_json(obj: Mapping[str, Any], kind: MessageKind) -> Message:
    # "type" comes with server broadcasts, "additionalServerData" (unsigned) with client sends.
    unknown = set(obj) - {
        "nonce",
        "ciphertext",
        "signature",
        "publicData",
        "type",
        "additionalServerData",
    }
    if unknown:
        raise ValueError(f"unknown message fields: {sorted(unknown)}")
    nonce = _b64(obj["nonce"], NONCE_BYTES, "nonce")
    ciphertext = _b64(obj["ciphertext"], None, "ciphertext")
    if len(ciphertext) < CIPHERTEXT_OVERHEAD:
        raise ValueError("ciphertext too short")
    signature = _b64(obj["signature"], SIGNATURE_BYTES, "signature")
    public = obj["publicData"]
    if not isinstance(public, Mapping):
        raise ValueError("publicData must be an object")
    doc_id = public["docId"]
    if not isinstance(doc_id, str) or len(doc_id) > MAX_DOC_ID_LENGTH:
        raise ValueError("docId must be a string of bounded length")
    pub_key = _b64(public["pubKey"], PUBLIC_KEY_BYTES, "pubKey")
    if kind == MessageKind.SNAPSHOT:
        extra = _extra(
            {k: v for k, v in public.items() if k not in SNAPSHOT_FIELDS},
            frozenset(),
            MAX_SNAPSHOT_EXTRA_BYTES,
        )
        clocks_obj = public["parentSnapshotUpdateClocks"]
        if not isinstance(clocks_obj, Mapping) or len(clocks_obj) > MAX_CLOCK_ENTRIES:
            raise ValueError("parentSnapshotUpdateClocks must be an object")
        parent_id = _b64(public["parentSnapshotId"], None, "parentSnapshotId")
        if len(parent_id) not in (0, ID_BYTES):
            raise ValueError("parentSnapshotId must be empty or encode 24 bytes")
        return Snapshot(
            nonce,
            ciphertext,
            signature,
            public_data=SnapshotPublicData(
                doc_id=doc_id,
                pub_key=pub_key,
                snapshot_id=_b64(public["snapshotId"], ID_BYTES, "snapshotId"),
                parent_snapshot_id=parent_id,
                parent_snapshot_proof=_b64(
                    public["parentSnapshotProof"], HASH_BYTES, "parentSnapshotProof"
                ),
                parent_snapshot_update_clocks={
                    _b64(k, PUBLIC_KEY_BYTES, "clock key"): _uint(v, "clock")
                    for k, v in clocks_obj.items()
                },
                extra=extra,
            ),
        )
    if kind == MessageKind.UPDATE:
        extra = _extra({k: v for k, v in public.items() if k not in UPDATE_FIELDS}, frozenset())
        return Update(
            nonce,
            ciphertext,
            signature,
            public_data=UpdatePublicData(
                doc_id=doc_id,
                pub_key=pub_key,
                ref_snapshot_id=_b64(public["refSnapshotId"], ID_BYTES, "refSnapshotId"),
                clock=_uint(public["clock"], "clock"),
                extra=extra,
            ),
        )
    extra = _extra({k: v for k, v in public.items() if k not in EPHEMERAL_FIELDS}, frozenset())
    return EphemeralMessage(
        nonce,
        ciphertext,
        signature,
        public_data=EphemeralPublicData(doc_id=doc_id, pub_key=pub_key, extra=extra),
    )


def from_json(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Parse a secsync JSON message from text."""
    if len(text) > max_bytes:
        raise MessageTooLargeError(f"message of {len(text)} bytes exceeds {max_bytes}")
    try:
        obj = json.loads(text, parse_float=_reject_float, parse_constant=_reject_float)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessageError("not a JSON message") from exc
    return from_json_dict(obj)


def _reject_float(value: str) -> Any:
    raise ValueError("floats are not allowed")
