"""The connection parameters of a secsync JS client: its URL path and query. Pure.

The client connects to ``{endpoint}/{docId}?sessionKey=K&mode=complete|delta`` and, when the
application passes ``loadDocumentParams``, ``&knownSnapshotId=ID&knownSnapshotUpdateClocks=``
with the URI-encoded plain JSON of the known clocks. Browsers percent-encode the raw doc id, so
it is URL-decoded here; a repeated key counts with its first value (as the reference server).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal
from urllib.parse import parse_qs, unquote

from secsync.errors import InvalidBase64Error
from secsync.protocol.crypto import ID_BYTES, PUBLIC_KEY_BYTES
from secsync.protocol.encoding import MAX_SAFE_INTEGER, b64decode
from secsync.protocol.wire import MAX_DOC_ID_LENGTH

Mode = Literal["complete", "delta"]


class SessionKey:
    """The application's credential from the query string: never shown in a repr or a log."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the access check and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "SessionKey(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ConnectionParams:
    """What the URL of a JS connection says."""

    document_id: str
    session_key: SessionKey
    mode: Mode = "complete"
    known_snapshot_id: bytes | None = None
    """Absent, or not a snapshot id: no snapshot is known."""
    known_clocks: Mapping[bytes, int] | None = field(default=None)
    """Absent or unparsable clocks: ``None``."""


@dataclass(frozen=True, slots=True)
class BadConnection:
    """The URL lacks a doc id or a session key: answer ``document-error`` and close."""

    reason: str


def _first(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _snapshot_id(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        raw = b64decode(value)
    except (InvalidBase64Error, ValueError):
        return None
    return raw if len(raw) == ID_BYTES else None


def _clocks(value: str | None) -> Mapping[bytes, int] | None:
    if value is None:
        return None
    try:
        obj = json.loads(value)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    clocks: dict[bytes, int] = {}
    for key, clock in obj.items():
        try:
            raw = b64decode(key)
        except (InvalidBase64Error, ValueError):
            return None
        if (
            len(raw) != PUBLIC_KEY_BYTES
            or type(clock) is not int
            or not 0 <= clock <= MAX_SAFE_INTEGER
        ):
            return None
        clocks[raw] = clock
    return MappingProxyType(clocks)


def parse_connection(target: str) -> ConnectionParams | BadConnection:
    """Parse the request target (``/{docId}?query``) of a JS client's WebSocket."""
    path, _, query_text = target.partition("?")
    raw_id = path[1:] if path.startswith("/") else path
    try:
        document_id = unquote(raw_id, errors="strict") if raw_id else ""
        query = parse_qs(query_text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return BadConnection("URL is not UTF-8")
    if not document_id:
        return BadConnection("no document id")
    if len(document_id) > MAX_DOC_ID_LENGTH:
        return BadConnection("document id too long")
    session_key = _first(query, "sessionKey")
    if not session_key:
        return BadConnection("no session key")
    mode: Mode = "delta" if _first(query, "mode") == "delta" else "complete"
    return ConnectionParams(
        document_id=document_id,
        session_key=SessionKey(session_key),
        mode=mode,
        known_snapshot_id=_snapshot_id(_first(query, "knownSnapshotId")),
        known_clocks=_clocks(_first(query, "knownSnapshotUpdateClocks")),
    )
