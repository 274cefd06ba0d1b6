"""``secsync message seal`` and ``secsync message open``: one message sealed or opened with
the receivers' own parser (for interoperability checks)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from secsync.cli.common import ENV_KEY, ENV_SIGNING_KEY, Inputs
from secsync.errors import SecsyncError

if TYPE_CHECKING:
    from secsync.protocol.crypto import SigningKeyPair
    from secsync.protocol.messages import Message

# The fields of a secsync JSON message, as ``message open`` reads it.
_MESSAGE_FIELDS = ("nonce", "ciphertext", "signature", "publicData")
_KEY_ERROR_TEXT = re.compile(r"^'([^']+)'$")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        from secsync.errors import MalformedMessageError

        raise MalformedMessageError(f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        from secsync.errors import MalformedMessageError

        raise MalformedMessageError(f"{what} must be a JSON object")
    return obj


def _naming_missing_field(parse: Callable[[], Message]) -> Message:
    """Run ``parse``; a field it looked up in vain is named in the error (not as ``'field'``)."""
    try:
        return parse()
    except SecsyncError as exc:
        missing = _KEY_ERROR_TEXT.match(exc.message)
        if missing is None:
            raise
        raise type(exc)(f"missing field {missing.group(1)} in publicData") from None


def _signer(text: str) -> SigningKeyPair:
    from secsync.protocol.crypto import SigningKeyPair

    return SigningKeyPair.from_b64(text)


def _key(text: str) -> bytes:
    from secsync.protocol import crypto
    from secsync.protocol.encoding import b64decode

    return crypto.check_key(b64decode(text.strip()))


def _public_data(kind: str, obj: dict[str, Any], signer: SigningKeyPair) -> Any:
    """Public data from secsync's JSON form; ``pubKey`` defaults to the signer's key."""
    from secsync.protocol import crypto, wire
    from secsync.protocol.encoding import b64encode
    from secsync.protocol.messages import (
        INITIAL_PARENT_PROOF,
        EphemeralPublicData,
        MessageKind,
        SnapshotPublicData,
        UpdatePublicData,
    )

    obj = dict(obj)
    obj.setdefault("pubKey", b64encode(signer.public_key))
    if kind == "snapshot":
        obj.setdefault("snapshotId", b64encode(crypto.generate_id()))
        obj.setdefault("parentSnapshotId", "")
        obj.setdefault("parentSnapshotProof", b64encode(INITIAL_PARENT_PROOF))
        obj.setdefault("parentSnapshotUpdateClocks", {})
    # Parse through the wire parser so that the CLI applies exactly the receivers' rules.
    dummy = b64encode(bytes(crypto.CIPHERTEXT_OVERHEAD))
    message = _naming_missing_field(
        lambda: wire.from_json_dict(
            {
                "nonce": b64encode(bytes(crypto.NONCE_BYTES)),
                "ciphertext": dummy,
                "signature": b64encode(bytes(crypto.SIGNATURE_BYTES)),
                "publicData": obj,
            },
            kind=MessageKind[kind.upper()],
        )
    )
    public = message.public_data
    assert isinstance(public, SnapshotPublicData | UpdatePublicData | EphemeralPublicData)
    return public


def cmd_seal(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.protocol import sealing, wire
    from secsync.protocol.encoding import b64decode

    signing_text = inputs.required_secret(
        args.signing_key,
        args.signing_key_file,
        ENV_SIGNING_KEY,
        what="a signing key",
        option="--signing-key",
    )
    key_text = inputs.required_secret(
        args.key, args.key_file, ENV_KEY, what="a document key", option="--key"
    )
    plaintext = inputs.read(args.file, "the plaintext")  # every input first, then the checks
    signer = _signer(signing_text)
    key = _key(key_text)
    obj = _json_object(args.public_data.encode("utf-8"), "--public-data")
    public = _public_data(args.kind, obj, signer)
    nonce = b64decode(args.nonce) if args.nonce else None
    message = sealing.seal(public, plaintext, key, signer, nonce=nonce)
    if args.format == "msgpack":
        sys.stdout.buffer.write(wire.encode(message))
    else:
        print(wire.to_json(message))
    return 0


def _load_message(data: bytes, doc_id: str | None) -> Message:
    from secsync.protocol import wire

    if data.lstrip()[:1] == b"{":
        obj = _json_object(data, "the message")
        missing = [name for name in _MESSAGE_FIELDS if name not in obj]
        if missing:
            from secsync.errors import MalformedMessageError

            raise MalformedMessageError(f"the message has no field {', '.join(missing)}")
        return _naming_missing_field(lambda: wire.from_json(data))
    return wire.decode(data, doc_id=doc_id)


def cmd_open(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.protocol import sealing
    from secsync.protocol.encoding import b64encode

    key_text = inputs.required_secret(
        args.key, args.key_file, ENV_KEY, what="a document key", option="--key"
    )
    data = inputs.read(args.file, "the message")  # every input first, then what they say
    key = _key(key_text)
    message = _load_message(data, args.doc_id)
    plaintext = sealing.open_message(message, key)
    if args.raw:
        sys.stdout.buffer.write(plaintext)
        return 0
    out: dict[str, Any] = {
        "kind": message.kind.name.lower(),
        "publicData": message.public_data.to_json(),
    }
    try:
        out["plaintext"] = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        out["plaintextBase64"] = b64encode(plaintext)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0
