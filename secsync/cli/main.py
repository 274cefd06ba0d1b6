"""The ``secsync`` command line: keys, sealing and opening messages, share links, the broker and
the demo. This module is the one parser; each subcommand lives in its own module of
:mod:`secsync.cli`.

Parsing the command line imports nothing heavy: each subcommand imports what it needs, so that
``secsync --help`` and ``secsync keygen`` do not load nats, asyncio or the CRDT libraries.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from secsync.cli.common import (
    DEFAULT_URL,
    ENV_KEY,
    ENV_LINK,
    ENV_PASSPHRASE,
    ENV_SIGNING_KEY,
    EXIT_ERROR,
    EXIT_USAGE,
    STDIN,
    Inputs,
    UsageError,
    configure_logging,
    plain,
)
from secsync.cli.demo import cmd_demo
from secsync.cli.keygen import cmd_keygen
from secsync.cli.message import cmd_open, cmd_seal
from secsync.cli.share import cmd_join, cmd_share
from secsync.errors import SecsyncError
from secsync.servers.options import add_broker_arguments


def cmd_broker(args: argparse.Namespace, inputs: Inputs) -> int:
    # imported here: the launchers load asyncio, which the other subcommands do without
    from secsync.cli.broker import cmd_broker as run

    return run(args)


def cmd_gateway(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.cli.gateway import cmd_gateway as run

    return run(args, inputs)


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

    gateway = sub.add_parser(
        "gateway",
        parents=[verbose],
        help="serve secsync JS clients over WebSocket (needs secsync[gateway])",
    )
    from secsync.cli.gateway import add_gateway_arguments

    add_gateway_arguments(gateway, DEFAULT_URL)
    gateway.set_defaults(func=cmd_gateway)

    demo = sub.add_parser(
        "demo",
        parents=[verbose],
        help="three participants edit one encrypted document through an embedded broker",
    )
    demo.add_argument(
        "--web",
        action="store_true",
        help="instead: serve a page where a browser edits one document with a Python backend",
    )
    demo.add_argument("--host", default="127.0.0.1", help="--web: the address to serve on")
    demo.add_argument("--port", type=int, default=8765, help="--web: the port to serve on")
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
    join.add_argument(
        "--progress",
        action="store_true",
        help="show the loading progress on stderr even when it is not a terminal",
    )
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
