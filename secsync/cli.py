"""The ``secsync`` command line: keys, sealing and opening messages (for people and interop)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import structlog

from secsync.errors import SecsyncError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.encoding import b64decode, b64encode
from secsync.protocol.messages import (
    INITIAL_PARENT_PROOF,
    EphemeralPublicData,
    Message,
    MessageKind,
    SnapshotPublicData,
    UpdatePublicData,
)

EXIT_ERROR = 1


def _read_stdin_bytes() -> bytes:
    return sys.stdin.buffer.read()


def _signer(text: str) -> crypto.SigningKeyPair:
    return crypto.SigningKeyPair.from_b64(text)


def _key(text: str) -> bytes:
    return crypto.check_key(b64decode(text.strip()))


def cmd_keygen(args: argparse.Namespace) -> int:
    pair = crypto.SigningKeyPair.generate()
    out = {
        "signingSecretKey": b64encode(pair.secret_key),
        "signingPublicKey": b64encode(pair.public_key),
        "documentKey": b64encode(crypto.generate_key()),
    }
    print(json.dumps(out, indent=2))
    return 0


def _public_data(kind: str, obj: dict[str, Any], signer: crypto.SigningKeyPair) -> Any:
    """Public data from secsync's JSON form; ``pubKey`` defaults to the signer's key."""
    obj = dict(obj)
    obj.setdefault("pubKey", b64encode(signer.public_key))
    if kind == "snapshot":
        obj.setdefault("snapshotId", b64encode(crypto.generate_id()))
        obj.setdefault("parentSnapshotId", "")
        obj.setdefault("parentSnapshotProof", b64encode(INITIAL_PARENT_PROOF))
        obj.setdefault("parentSnapshotUpdateClocks", {})
    # Parse through the wire parser so that the CLI applies exactly the receivers' rules.
    dummy = b64encode(bytes(crypto.CIPHERTEXT_OVERHEAD))
    message = wire.from_json_dict(
        {
            "nonce": b64encode(bytes(crypto.NONCE_BYTES)),
            "ciphertext": dummy,
            "signature": b64encode(bytes(crypto.SIGNATURE_BYTES)),
            "publicData": obj,
        },
        kind=MessageKind[kind.upper()],
    )
    public = message.public_data
    assert isinstance(public, SnapshotPublicData | UpdatePublicData | EphemeralPublicData)
    return public


def cmd_seal(args: argparse.Namespace) -> int:
    signer = _signer(args.signing_key)
    key = _key(args.key)
    try:
        obj = json.loads(args.public_data)
    except json.JSONDecodeError as exc:
        raise SecsyncError(f"--public-data is not JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise SecsyncError("--public-data must be a JSON object")
    public = _public_data(args.kind, obj, signer)
    nonce = b64decode(args.nonce) if args.nonce else None
    message = sealing.seal(public, _read_stdin_bytes(), key, signer, nonce=nonce)
    if args.format == "msgpack":
        sys.stdout.buffer.write(wire.encode(message))
    else:
        print(wire.to_json(message))
    return 0


def _load_message(data: bytes, doc_id: str | None) -> Message:
    if data.lstrip()[:1] == b"{":
        return wire.from_json(data)
    return wire.decode(data, doc_id=doc_id)


def cmd_open(args: argparse.Namespace) -> int:
    data = open(args.file, "rb").read() if args.file else _read_stdin_bytes()  # noqa: SIM115
    message = _load_message(data, args.doc_id)
    plaintext = sealing.open_message(message, _key(args.key))
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


def cmd_share(args: argparse.Namespace) -> int:
    from secsync.share import ShareLink

    print(ShareLink.create(args.doc_id))
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    import asyncio
    import os

    passphrase = os.environ.get(args.passphrase_env) if args.passphrase_env else args.passphrase
    return asyncio.run(_join(args.link, args.url, passphrase, args.text, args.append))


async def _join(
    link: str, url: str, passphrase: str | None, text_name: str, append: str | None
) -> int:
    import pycrdt

    import secsync
    from secsync.share import open_shared

    ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
    async with secsync.connect(url) as client:
        document = await open_shared(client, link, crdt=ydoc, passphrase=passphrase)
        text = ydoc.get(text_name, type=pycrdt.Text)
        if append:
            text.insert(len(text), append)
            await document.flush(30)
        print(str(text))
        await document.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secsync", description="End-to-end encrypted CRDT documents over NATS JetStream."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser("keygen", help="print a new signing key pair and document key")
    keygen.set_defaults(func=cmd_keygen)

    from secsync.broker import add_broker_arguments, cmd_broker

    broker = sub.add_parser("broker", help="run the embedded NATS JetStream broker")
    add_broker_arguments(broker)
    broker.set_defaults(func=cmd_broker)

    share = sub.add_parser("share", help="print a new share link for a document")
    share.add_argument("doc_id", help="the document id")
    share.set_defaults(func=cmd_share)

    join = sub.add_parser("join", help="open a document from a share link and print its text")
    join.add_argument("link", help="<document id>#<secret>")
    join.add_argument("--url", default="nats://127.0.0.1:4222", help="the broker")
    join.add_argument("--passphrase", help="the passphrase, if the link has one")
    join.add_argument("--passphrase-env", help="read the passphrase from this variable")
    join.add_argument("--text", default="text", help="name of the Yjs text to print")
    join.add_argument("--append", help="append this to the text before printing")
    join.set_defaults(func=cmd_join)

    message = sub.add_parser("message", help="seal or open a single message")
    msub = message.add_subparsers(dest="message_command", required=True)

    seal = msub.add_parser("seal", help="encrypt and sign stdin; print secsync JSON")
    seal.add_argument("--kind", choices=["snapshot", "update", "ephemeral"], required=True)
    seal.add_argument("--key", required=True, help="document key, base64url (32 bytes)")
    seal.add_argument("--signing-key", required=True, help="Ed25519 secret, base64url")
    seal.add_argument(
        "--public-data", required=True, help="public data as secsync JSON (pubKey optional)"
    )
    seal.add_argument("--nonce", help="fixed nonce, base64url (for test vectors only)")
    seal.add_argument("--format", choices=["json", "msgpack"], default="json")
    seal.set_defaults(func=cmd_seal)

    open_ = msub.add_parser("open", help="verify and decrypt a message (JSON or native)")
    open_.add_argument("file", nargs="?", help="message file (default: stdin)")
    open_.add_argument("--key", required=True, help="document key, base64url (32 bytes)")
    open_.add_argument("--doc-id", help="document id for native messages that omit it")
    open_.add_argument("--raw", action="store_true", help="write only the plaintext bytes")
    open_.set_defaults(func=cmd_open)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Logs go to stderr (stdout carries the command's output), warnings and worse only.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except SecsyncError as exc:
        print(f"secsync: error {exc.code} ({type(exc).__name__}): {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"secsync: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
