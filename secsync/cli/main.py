"""The ``secsync`` command line: keys, sealing and opening messages, share links, the broker and
the demo.

Parsing the command line imports nothing heavy: each subcommand imports what it needs, so that
``secsync --help`` and ``secsync keygen`` do not load nats, asyncio or the CRDT libraries.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from secsync.errors import SecsyncError
from secsync.servers.options import add_broker_arguments

if TYPE_CHECKING:
    from secsync.protocol.crypto import SigningKeyPair
    from secsync.protocol.messages import Message

EXIT_ERROR = 1
EXIT_USAGE = 2

STDIN = "-"
DEFAULT_URL = "nats://127.0.0.1:4222"
ENV_KEY = "SECSYNC_KEY"
ENV_SIGNING_KEY = "SECSYNC_SIGNING_KEY"
ENV_PASSPHRASE = "SECSYNC_PASSPHRASE"  # noqa: S105 - a variable name
ENV_LINK = "SECSYNC_LINK"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The fields of a secsync JSON message, as ``message open`` reads it.
_MESSAGE_FIELDS = ("nonce", "ciphertext", "signature", "publicData")
_MARKUP = re.compile(r":[a-z]+:`~?([^`]*)`|``([^`]*)``|`([^`]*)`")
_KEY_ERROR_TEXT = re.compile(r"^'([^']+)'$")


class UsageError(Exception):
    """A command line that cannot work (reported like argparse's own errors)."""


# --- logging ------------------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """One line per record on whatever ``sys.stderr`` is when it is written (stdout carries the
    command's output)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a log line must never end the command
            self.handleError(record)


def configure_logging(verbose: bool = False) -> None:
    """Logs to stderr, one line each: warnings and worse, or from INFO on with ``verbose``.

    Calling it again replaces the handler it installed (the demo's processes and tests do)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


# --- inputs -------------------------------------------------------------------------------------


class Inputs:
    """Reads the files, keys and secrets of one command; ``-`` is stdin, which one input at most
    can use."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self._stdin_for: str | None = None

    def read(self, path: str, what: str) -> bytes:
        if path == STDIN:
            if self._stdin_for is not None:
                raise UsageError(f"{what} and {self._stdin_for} cannot both come from stdin")
            self._stdin_for = what
            return sys.stdin.buffer.read()
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None

    def text(self, path: str, what: str) -> str:
        try:
            return self.read(path, what).decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{what} {path} is not UTF-8 text") from None

    def secret(
        self, value: str | None, file: str | None, env: str | None, *, what: str
    ) -> str | None:
        """The value of ``--X``, else the content of ``--X-file`` (stripped), else ``$env``."""
        if value is not None:
            return value
        if file is not None:
            return self.text(file, what).strip()
        found = self.environ.get(env) if env else None
        return found or None

    def required_secret(
        self, value: str | None, file: str | None, env: str, *, what: str, option: str
    ) -> str:
        found = self.secret(value, file, env, what=what)
        if not found:
            raise UsageError(f"{what} needed: {option}=VALUE, {option}-file PATH or ${env}")
        return found

    def passphrase(self, args: argparse.Namespace) -> str | None:
        if args.passphrase is not None:
            return str(args.passphrase)
        if getattr(args, "ask_passphrase", False):
            import getpass

            # read from the terminal, not echoed, kept out of argv and the shell's history
            return getpass.getpass("passphrase: ")
        if args.passphrase_file is not None:
            # Only the line end goes: spaces may belong to the passphrase.
            return self.text(args.passphrase_file, "passphrase file").rstrip("\r\n")
        env = args.passphrase_env or ENV_PASSPHRASE
        found = self.environ.get(env)
        if args.passphrase_env and found is None:
            raise UsageError(f"--passphrase-env: ${args.passphrase_env} is not set")
        return found or None


def split_urls(text: str) -> list[str]:
    """Broker URLs from ``--url``: one, or a comma-separated list (as ``secsync broker`` prints
    a cluster's)."""
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls:
        raise UsageError("--url names no broker")
    return urls


def plain(text: str) -> str:
    """``text`` without reST markup (``literal``, :class:`Name`): messages are for people."""
    return _MARKUP.sub(lambda m: next(g for g in m.groups() if g is not None), text)


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


# --- commands -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def cmd_keygen(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.protocol.crypto import SigningKeyPair, generate_key
    from secsync.protocol.keys import encode_key

    pair = SigningKeyPair.generate()
    out = {
        "signingSecretKey": pair.to_b64(),  # libsodium's seed ‖ public key
        "signingPublicKey": _b64(pair.public_key),
        "documentKey": encode_key(generate_key()),
    }
    print(json.dumps(out, indent=2))
    return 0


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


def cmd_share(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.access.share import ShareLink

    print(ShareLink.create(args.doc_id))
    return 0


def cmd_join(args: argparse.Namespace, inputs: Inputs) -> int:
    import asyncio

    link = inputs.secret(args.link, args.link_file, ENV_LINK, what="the link file")
    if not link:
        raise UsageError(f"a share link needed: LINK, --link-file PATH or ${ENV_LINK}")
    passphrase = inputs.passphrase(args)
    urls = split_urls(args.url)
    return asyncio.run(_join(link, urls, passphrase, args.text, args.append, create=args.create))


async def _join(
    link: str,
    urls: list[str],
    passphrase: str | None,
    text_name: str,
    append: str | None,
    *,
    create: bool,
) -> int:
    import pycrdt

    import secsync
    from secsync.access.share import ShareLink, open_shared
    from secsync.errors import DocumentNotFoundError

    parsed = ShareLink.parse(link)
    signer = secsync.SigningKeyPair.generate()  # an anonymous participant
    ydoc: pycrdt.Doc[Any] = secsync.new_yjs_doc(signer)
    async with secsync.connect(urls) as client:
        document = await open_shared(
            client, parsed, crdt=ydoc, passphrase=passphrase, signing_key=signer
        )
        try:
            empty = document.session.active_snapshot is None and document.last_sequence == 0
            if empty and not create:
                raise DocumentNotFoundError(
                    f"the broker has no document {parsed.doc_id!r} "
                    "(to start it: --create --append TEXT)"
                )
            text = ydoc.get(text_name, type=pycrdt.Text)
            if append:
                text.insert(len(text), append)
                await document.flush(30)
            print(str(text))
        finally:
            await document.close()
    return 0


def cmd_broker(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.cli.broker import cmd_broker as run

    return run(args)


def cmd_demo(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.apps.demo import coordinator

    return coordinator(verbose=args.verbose)


# --- the parser ---------------------------------------------------------------------------------


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key", help=f"document key, base64url (32 bytes); or --key-file, or ${ENV_KEY}"
    )
    parser.add_argument("--key-file", metavar="PATH", help="read the document key from PATH")


def build_parser() -> argparse.ArgumentParser:
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log from INFO on (default: warnings and errors only), to stderr",
    )
    parser = argparse.ArgumentParser(
        prog="secsync",
        description="End-to-end encrypted CRDT documents over NATS JetStream.",
        epilog="Secrets (keys, links, passphrases) can come from files or the environment "
        "instead of the command line, which other local users can see. A file argument of '-' "
        "is stdin.",
        parents=[verbose],
    )
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser(
        "keygen", parents=[verbose], help="print a new signing key pair and document key"
    )
    keygen.set_defaults(func=cmd_keygen)

    broker = sub.add_parser(
        "broker", parents=[verbose], help="run the embedded NATS JetStream broker"
    )
    add_broker_arguments(broker)
    broker.set_defaults(func=cmd_broker)

    demo = sub.add_parser(
        "demo",
        parents=[verbose],
        help="three participants edit one encrypted document through an embedded broker",
    )
    demo.set_defaults(func=cmd_demo)

    share = sub.add_parser("share", parents=[verbose], help="print a new share link for a document")
    share.add_argument("doc_id", help="the document id")
    share.set_defaults(func=cmd_share)

    join = sub.add_parser(
        "join", parents=[verbose], help="open a document from a share link and print its text"
    )
    join.add_argument(
        "link", nargs="?", help=f"<document id>#<secret>; or --link-file, or ${ENV_LINK}"
    )
    join.add_argument("--link-file", metavar="PATH", help="read the share link from PATH")
    join.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the broker, or several comma-separated (as secsync broker prints them; "
        f"default {DEFAULT_URL})",
    )
    join.add_argument(
        "--passphrase", help=f"the passphrase, if the link has one; or ${ENV_PASSPHRASE}"
    )
    join.add_argument("--passphrase-file", metavar="PATH", help="read the passphrase from PATH")
    join.add_argument("--passphrase-env", metavar="VAR", help="read the passphrase from $VAR")
    join.add_argument(
        "--ask-passphrase",
        action="store_true",
        help="ask for the passphrase on the terminal (not echoed)",
    )
    join.add_argument("--text", default="text", help="name of the Yjs text to print")
    join.add_argument("--append", help="append this to the text before printing")
    join.add_argument(
        "--create",
        action="store_true",
        help="start the document if the broker has none (default: that is an error)",
    )
    join.set_defaults(func=cmd_join)

    message = sub.add_parser("message", parents=[verbose], help="seal or open a single message")
    msub = message.add_subparsers(dest="message_command", required=True)

    seal = msub.add_parser(
        "seal", parents=[verbose], help="encrypt and sign a plaintext; print secsync JSON"
    )
    seal.add_argument("file", nargs="?", default=STDIN, help="plaintext file (default: stdin)")
    seal.add_argument("--kind", choices=["snapshot", "update", "ephemeral"], required=True)
    _add_key_options(seal)
    seal.add_argument(
        "--signing-key",
        help=f"Ed25519 secret, base64url; or --signing-key-file, or ${ENV_SIGNING_KEY}",
    )
    seal.add_argument(
        "--signing-key-file", metavar="PATH", help="read the signing secret from PATH"
    )
    seal.add_argument(
        "--public-data", required=True, help="public data as secsync JSON (pubKey optional)"
    )
    seal.add_argument("--nonce", help="fixed nonce, base64url (for test vectors only)")
    seal.add_argument("--format", choices=["json", "msgpack"], default="json")
    seal.set_defaults(func=cmd_seal)

    open_ = msub.add_parser(
        "open", parents=[verbose], help="verify and decrypt a message (JSON or native)"
    )
    open_.add_argument("file", nargs="?", default=STDIN, help="message file (default: stdin)")
    _add_key_options(open_)
    open_.add_argument("--doc-id", help="document id for native messages that omit it")
    open_.add_argument("--raw", action="store_true", help="write only the plaintext bytes")
    open_.set_defaults(func=cmd_open)
    return parser


def _exclusive(args: argparse.Namespace) -> None:
    """A value and a file for the same secret: which one was meant?"""
    for value, file in (
        ("key", "key_file"),
        ("signing_key", "signing_key_file"),
        ("link", "link_file"),
        ("passphrase", "passphrase_file"),
    ):
        if getattr(args, value, None) is not None and getattr(args, file, None) is not None:
            option = "--" + value.replace("_", "-")
            shown = "LINK" if value == "link" else option
            raise UsageError(f"{shown} and {option}-file: give one of them")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # -v before or after the subcommand; the parsers share one SUPPRESS-default action for it
    args.verbose = getattr(args, "verbose", False)
    configure_logging(args.verbose)
    try:
        _exclusive(args)
        code: int = args.func(args, Inputs())
        return code
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"secsync: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SecsyncError as exc:
        print(
            f"secsync: error {exc.code} ({type(exc).__name__}): {plain(exc.message)}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"secsync: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
