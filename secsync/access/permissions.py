"""Broker-side access control: NATS permissions for secsync documents, from a membership table.

:func:`accounts_config` turns ``{user public nkey: [document id, ...]}`` and the privileged
user's nkey into the ``accounts { ... }`` block that ``broker-config/secure.conf`` includes. A
member may store, load and follow only its own documents, using the exact subjects of
:class:`~secsync.transport.subjects.DocumentSubjects`; no member may purge, delete or change the
stream; the privileged user (provisioning, compaction, :func:`sweep_consumers`) has credentials
of its own. ``broker-config/secure.conf`` explains the layout; ``docs/broker-permissions.md``
explains the roles and the limits.

A member connects with::

    async with secsync.connect(
        url, config=SecsyncConfig(provision_stream=False), **client_options(seed)
    ) as client: ...

Command line (``python -m secsync.access.permissions --help``): ``keygen`` prints a new user
seed and its public key; ``write --members members.json --privileged U... --out DIR`` writes
``DIR/secure.conf`` and ``DIR/secure-accounts.conf``.

Size: a little over 500 lines: the permission lists, the accounts file that carries them, the
consumer sweep and the command line all follow one membership table and one subject layout.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]

from secsync.config import SecsyncConfig
from secsync.errors import (
    BrokerRequestError,
    BrokerUnavailableError,
    ConfigurationError,
    SecsyncError,
    TransportError,
)
from secsync.transport.subjects import SNAPSHOT, UPDATE, DocumentSubjects

__all__ = [
    "ACCOUNT",
    "ACCOUNTS_FILE",
    "DEFAULT_MAX_FILE",
    "DEFAULT_MAX_MEMORY",
    "SECURE_CONF",
    "Permissions",
    "accounts_config",
    "check_user_key",
    "client_options",
    "inbox_prefix",
    "member_permissions",
    "new_user_seed",
    "privileged_permissions",
    "public_key",
    "sweep_consumers",
    "write_config",
]

ACCOUNT = "SECSYNC"
"""The account that holds the stream and every user."""
ACCOUNTS_FILE = "secure-accounts.conf"
"""The generated file; ``secure.conf`` includes it by this name."""
SECURE_CONF = "secure.conf"

_API = "$JS.API"
DEFAULT_MAX_FILE = 10 * 1024**3
"""Account JetStream quota on file storage written by :func:`accounts_config` (10 GiB)."""
DEFAULT_MAX_MEMORY = 64 * 1024**2
"""Account JetStream quota on memory storage (64 MiB): secsync stores nothing in memory."""
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_PUBLIC_KEY_BYTES = 35  # prefix byte, ed25519 public key, CRC-16


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one user may publish and subscribe to (NATS subjects, wildcards allowed)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()


# --- keys -----------------------------------------------------------------------------------------


def new_user_seed() -> str:
    """A new nkey user seed (``SU...``). Keep it secret; the broker needs :func:`public_key`."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    """The public nkey (``U...``) of a user seed."""
    try:
        pair = nkeys.from_seed(bytearray(seed.strip().encode()))
    except (nkeys.ErrInvalidSeed, nkeys.ErrInvalidPrefixByte, UnicodeEncodeError):
        raise ConfigurationError("not an nkey seed") from None
    try:
        key: bytes = pair.public_key
        return check_user_key(key.decode())
    finally:
        pair.wipe()


def check_user_key(key: str) -> str:
    """``key`` if it is a user public nkey (``U...``, checksum intact), else ConfigurationError."""
    raw = b""
    if isinstance(key, str) and key.isascii() and key.isupper():
        try:
            raw = base64.b32decode(key + "=" * (-len(key) % 8))
        except (binascii.Error, ValueError):
            raw = b""
    if (
        len(raw) != _PUBLIC_KEY_BYTES
        or raw[0] != nkeys.PREFIX_BYTE_USER
        or int.from_bytes(raw[-2:], "little") != nkeys.crc16(raw[:-2])
    ):
        raise ConfigurationError(_not_a_user_key(key))
    return key


def _not_a_user_key(key: object) -> str:
    """The error text for ``key``; it never repeats a secret passed by mistake."""
    if not isinstance(key, str):
        return f"not a user public nkey: a {type(key).__name__}"
    text = key.strip()
    if text[:1] in ("S", "s"):
        return (
            "not a user public nkey: this looks like an nkey seed, which is secret; give the "
            "public key (U...) printed next to it by `python -m secsync.access.permissions keygen`"
        )
    # nothing of the value itself: a mangled seed (a character lost, case changed) is secret too
    return f"not a user public nkey (U..., 56 characters): got {len(text)} characters"


def inbox_prefix(public_key: str) -> str:
    """The reply-subject prefix of a user: only that user may subscribe below it."""
    return f"_INBOX_{check_user_key(public_key)}"


def client_options(seed: str) -> dict[str, str]:
    """Keyword arguments for ``secsync.connect`` (and ``nats.connect``): the credentials and the
    user's own inbox prefix, without which its replies would be refused."""
    return {"nkeys_seed_str": seed, "inbox_prefix": inbox_prefix(public_key(seed))}


# --- permissions ----------------------------------------------------------------------------------


def _layout(config: SecsyncConfig | None) -> SecsyncConfig:
    config = config or SecsyncConfig()
    if not _NAME.fullmatch(config.stream_name):
        raise ConfigurationError(f"stream name {config.stream_name!r} is not one plain token")
    if not all(_NAME.fullmatch(token) for token in config.subject_root.split(".")):
        raise ConfigurationError(f"subject root {config.subject_root!r} is not plain tokens")
    return config


def member_permissions(
    public_key: str,
    doc_ids: Iterable[str],
    *,
    config: SecsyncConfig | None = None,
    batch_direct_get: bool = False,
) -> Permissions:
    """A member's rights: store, load and follow ``doc_ids``, and nothing on the stream itself.

    ``batch_direct_get`` grants ``$JS.API.DIRECT.GET.<stream>``. secsync clients do not need it
    (they load through consumers filtered on the document); its subject names no document, so it
    would open every stored message (ciphertext and headers) to every member.
    """
    config = _layout(config)
    stream = config.stream_name
    # No $JS.API.INFO: secsync clients never ask for it, and its answer (the account's
    # storage, stream and consumer counts) shows every member's activity in the account.
    publish = [
        f"{_API}.CONSUMER.INFO.{stream}.*",
        f"{_API}.CONSUMER.DELETE.{stream}.*",
        # pages of the short-lived pull consumers that load a document; only consumers the
        # member could create (filtered on its documents) or learn the random name of
        f"{_API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.FC.{stream}.>",  # flow control replies of the ordered push consumer
    ]
    if batch_direct_get:
        publish.append(f"{_API}.DIRECT.GET.{stream}")
    subscribe = [f"{inbox_prefix(public_key)}.>"]
    for doc_id in dict.fromkeys(doc_ids):
        subjects = DocumentSubjects.of(doc_id, config.subject_root)
        publish += [
            subjects.snapshot,
            subjects.update,
            subjects.ephemeral,
            f"{_API}.DIRECT.GET.{stream}.{subjects.snapshot}",
            f"{_API}.CONSUMER.CREATE.{stream}.*.{subjects.stored}",
        ]
        subscribe.append(subjects.ephemeral)
    return Permissions(tuple(publish), tuple(subscribe), deny_publish=(f"{_API}.STREAM.>",))


def privileged_permissions(public_key: str, *, config: SecsyncConfig | None = None) -> Permissions:
    """The privileged user's rights: every JetStream API of the account but deleting streams."""
    _layout(config)
    return Permissions(
        publish=(f"{_API}.>",),
        subscribe=(f"{inbox_prefix(public_key)}.>",),
        deny_publish=(f"{_API}.STREAM.DELETE.>",),
    )


def _quoted(value: str) -> str:
    if not value.isascii() or any(ch in value for ch in '"\\ \t\r\n'):
        raise ConfigurationError(f"cannot write {value!r} into the broker config")
    return f'"{value}"'


def _array(values: Sequence[str], indent: str) -> str:
    items = ",\n".join(f"{indent}  {_quoted(v)}" for v in values)
    return f"[\n{items}\n{indent}]"


def _user(comment: str, key: str, permissions: Permissions) -> list[str]:
    pad = " " * 6
    lines = [
        f"{pad}# {comment}",
        f"{pad}{{",
        f"{pad}  nkey: {_quoted(key)}",
        f"{pad}  permissions: {{",
        f"{pad}    publish: {{",
        f"{pad}      allow: {_array(permissions.publish, pad + '      ')}",
    ]
    if permissions.deny_publish:
        lines.append(f"{pad}      deny: {_array(permissions.deny_publish, pad + '      ')}")
    lines += [
        f"{pad}    }}",
        f"{pad}    subscribe: {{",
        f"{pad}      allow: {_array(permissions.subscribe, pad + '      ')}",
        f"{pad}    }}",
        f"{pad}  }}",
        f"{pad}}}",
    ]
    return lines


def accounts_config(
    members: Mapping[str, Iterable[str]],
    privileged: str,
    *,
    config: SecsyncConfig | None = None,
    account: str = ACCOUNT,
    batch_direct_get: bool = False,
    max_file: int = DEFAULT_MAX_FILE,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> str:
    """The ``accounts { ... }`` block for ``secure.conf``: the privileged user and the members.

    ``members`` maps each user's public nkey to the ids of the documents it may use. The text
    names document tokens only, never document ids. Users appear sorted, so the same table
    gives the same text. ``max_file`` and ``max_memory`` (bytes) bound what the whole account
    stores in JetStream, so no member can fill the broker's disk; every stream of the account,
    and the stream's ``max_bytes`` (``SecsyncConfig.stream_max_bytes``), must fit in them.
    """
    for name, value in (("max_file", max_file), ("max_memory", max_memory)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1024 * 1024:
            raise ConfigurationError(f"{name} must be a number of bytes of at least 1 MiB")
    config = _layout(config)
    if not _NAME.fullmatch(account):
        raise ConfigurationError(f"account name {account!r} is not one plain token")
    check_user_key(privileged)
    if privileged in members:
        raise ConfigurationError("the privileged user needs credentials of its own, not a member's")
    lines = [
        "# Generated by secsync.access.permissions from the membership table: do not edit, "
        "regenerate.",
        f"# Stream {config.stream_name}, subject root {config.subject_root}; "
        f"{len(members)} member(s) and the privileged user.",
        "accounts {",
        f"  {account} {{",
        f"    # JetStream quotas of the whole account: {_size(max_file)} on disk,"
        f" {_size(max_memory)} in memory",
        f"    jetstream {{ max_file: {max_file}, max_memory: {max_memory} }}",
        "    users: [",
    ]
    lines += _user(
        "privileged: provisioning, compaction, sweeping consumers",
        privileged,
        privileged_permissions(privileged, config=config),
    )
    for key in sorted(members):
        doc_ids = list(dict.fromkeys(members[key]))
        permissions = member_permissions(
            key, doc_ids, config=config, batch_direct_get=batch_direct_get
        )
        lines += _user(f"member of {len(doc_ids)} document(s)", key, permissions)
    lines += ["    ]", "  }", "}", ""]
    return "\n".join(lines)


def _size(value: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2)):
        if value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes"


def default_template() -> Path:
    """``broker-config/secure.conf`` as shipped with secsync (package data, or the checkout)."""
    from secsync.servers.binary import config_file

    return config_file(SECURE_CONF)


def write_config(
    directory: str | os.PathLike[str],
    members: Mapping[str, Iterable[str]],
    privileged: str,
    *,
    template: str | os.PathLike[str] | None = None,
    config: SecsyncConfig | None = None,
    batch_direct_get: bool = False,
    max_file: int = DEFAULT_MAX_FILE,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Path:
    """Write ``secure.conf`` (a copy of ``template``) and the accounts file into ``directory``.

    Returns the path of ``secure.conf``, for ``Broker(config=...)`` or ``nats-server -c``. The
    accounts file is replaced atomically, so a reload never reads half of it.
    """
    text = accounts_config(
        members,
        privileged,
        config=config,
        batch_direct_get=batch_direct_get,
        max_file=max_file,
        max_memory=max_memory,
    )
    target_dir = Path(directory)
    target_dir.mkdir(parents=True, exist_ok=True)
    source = Path(template) if template is not None else default_template()
    target = target_dir / SECURE_CONF
    if not target.exists() or not target.samefile(source):
        shutil.copyfile(source, target)
    fd, temporary = tempfile.mkstemp(dir=target_dir, prefix=".accounts-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(text)
        os.replace(temporary, target_dir / ACCOUNTS_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


# --- enforcing membership on existing consumers ---------------------------------------------------


def _document_token(consumer_config: Any, pattern: re.Pattern[str]) -> str | None:
    """The token of the document a consumer follows, or ``None`` if it is not a document's."""
    filters = list(consumer_config.filter_subjects or ())
    if consumer_config.filter_subject:
        filters.append(consumer_config.filter_subject)
    matches = [pattern.fullmatch(f) for f in filters]
    tokens = {m.group(1) for m in matches if m is not None}
    if not filters or None in matches or len(tokens) != 1:
        return None
    return tokens.pop()


async def sweep_consumers(
    nc: Any, members: Mapping[str, Iterable[str]], *, config: SecsyncConfig | None = None
) -> list[str]:
    """Delete the document consumers that the membership table does not justify; their names.

    Run it as the privileged user after every membership change (and from time to time). A
    consumer outlives the permission that created it: after a member is removed, its consumers
    keep delivering to it until deleted. A consumer filtered on a document is kept only if it
    is not durable and delivers into the inbox of a current member of that document; that also
    removes durable consumers and consumers pointed at other subjects, which members can create
    (the consumer configuration travels in the request body, which permissions cannot see).
    Consumers not filtered on a single document (the privileged user's own) are left alone.
    """
    config = _layout(config)
    stream = config.stream_name
    root = re.escape(config.subject_root)
    pattern = re.compile(rf"{root}\.s\.[0-9a-f]\.([0-9a-f]{{40}})\.(?:\*|>|{SNAPSHOT}|{UPDATE})")
    owners: dict[str, set[str]] = {}
    for key, doc_ids in members.items():
        inbox = inbox_prefix(key) + "."
        for doc_id in doc_ids:
            owners.setdefault(DocumentSubjects.of(doc_id, config.subject_root).token, set()).add(
                inbox
            )
    js = nc.jetstream(timeout=config.request_timeout)
    stale: list[str] = []
    try:
        offset = 0
        while page := await js.consumers_info(stream, offset=offset):
            offset += len(page)
            for info in page:
                token = _document_token(info.config, pattern)
                if token is None:
                    continue
                deliver = info.config.deliver_subject or ""
                justified = any(deliver.startswith(inbox) for inbox in owners.get(token, ()))
                if info.config.durable_name or not justified:
                    stale.append(info.name)
        deleted = []
        for name in stale:
            try:
                await js.delete_consumer(stream, name)
            except Exception as exc:
                if getattr(exc, "err_code", None) != 10014:  # consumer not found: gone already
                    raise
            else:
                deleted.append(name)
    except SecsyncError:
        raise
    except TimeoutError:
        raise BrokerUnavailableError(
            f"no answer from the broker in time (stream {stream})"
        ) from None
    except Exception as exc:
        err_code = getattr(exc, "err_code", None)
        if err_code is not None:
            raise BrokerRequestError(f"sweep of {stream}: {exc}", err_code=err_code) from None
        raise TransportError(f"sweep of {stream}: {type(exc).__name__}: {exc}") from None
    return deleted


# --- command line ---------------------------------------------------------------------------------


def _read_members(path: str) -> dict[str, list[str]]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(
        isinstance(docs, list) and all(isinstance(d, str) for d in docs) for docs in data.values()
    ):
        raise ConfigurationError(f"{path}: expected {{user public nkey: [document id, ...]}}")
    return {str(key): list(docs) for key, docs in data.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m secsync.access.permissions",
        description="Per-document NATS permissions for secsync (broker-config/secure.conf).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("keygen", help="print a new user seed and its public nkey")
    write = commands.add_parser("write", help="write secure.conf and secure-accounts.conf")
    write.add_argument("--members", required=True, help="JSON: {user public nkey: [doc id, ...]}")
    write.add_argument("--privileged", required=True, help="public nkey of the privileged user")
    write.add_argument("--out", required=True, help="directory to write the two files into")
    defaults = SecsyncConfig()
    write.add_argument("--stream", default=defaults.stream_name)
    write.add_argument("--subject-root", default=defaults.subject_root)
    write.add_argument(
        "--batch-direct-get",
        action="store_true",
        help="grant the unfiltered batch direct get (opens every stored message to members; "
        "secsync clients do not need it)",
    )
    write.add_argument(
        "--max-file",
        type=int,
        default=DEFAULT_MAX_FILE,
        metavar="BYTES",
        help="the account's JetStream quota on disk (default: 10 GiB)",
    )
    write.add_argument(
        "--max-memory",
        type=int,
        default=DEFAULT_MAX_MEMORY,
        metavar="BYTES",
        help="the account's JetStream quota in memory (default: 64 MiB)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            seed = new_user_seed()
            print(f"seed:       {seed}\npublic key: {public_key(seed)}")
            return 0
        path = write_config(
            args.out,
            _read_members(args.members),
            args.privileged,
            config=SecsyncConfig(stream_name=args.stream, subject_root=args.subject_root),
            batch_direct_get=args.batch_direct_get,
            max_file=args.max_file,
            max_memory=args.max_memory,
        )
    except (SecsyncError, OSError, ValueError) as exc:
        print(f"secsync.access.permissions: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} and {path.parent / ACCOUNTS_FILE}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
