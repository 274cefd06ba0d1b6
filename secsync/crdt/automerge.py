"""Automerge documents: updates are change bytes since the last heads, a snapshot is ``save()``.

automerge 1.0 for Python has no ``apply_changes``; received changes are wrapped in an
Automerge sync message (its published binary layout) with empty heads, needs and haves, which
makes the document apply them and hold back those whose dependencies have not arrived yet.

Automerge keeps objects in a flat operation set and decodes changes without recursion: documents
nested 300,000 deep made by a hostile peer apply, save and load, and mutated or truncated
change bytes are refused with an exception (checksums, column decoding). What the binding
raises, whatever its class, becomes the typed rejection of that one message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from automerge import core

from secsync.crdt import crdt_failure
from secsync.errors import SecsyncError, SnapshotApplyError, UpdateApplyError

T = TypeVar("T")


def _guarded(call: Callable[[], T], error: type[SecsyncError], what: str) -> T:
    try:
        return call()
    except BaseException as exc:
        if not crdt_failure(exc):
            raise
        raise error(f"automerge refused the {what}: {type(exc).__name__}") from None


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


MAGIC = b"\x85\x6f\x4a\x83"
"""Every Automerge chunk starts with these bytes, then a 4-byte checksum, a type, a length."""

CHUNK_DOCUMENT = 0
CHUNK_CHANGE = 1
CHUNK_COMPRESSED_CHANGE = 2

_DEPS_MISSING = "deps should already be in the document"


def check_chunks(data: bytes, types: frozenset[int]) -> int:
    """Walk Automerge's chunk headers; return the number of chunks.

    Each chunk must be of one of ``types`` and the declared lengths must tile ``data``
    exactly, so nothing past a lying length header reaches the library. Raises ``ValueError``.
    """
    pos = count = 0
    while pos < len(data) or count == 0:
        if data[pos : pos + 4] != MAGIC or len(data) < pos + 10:
            raise ValueError(f"no Automerge chunk at byte {pos}")
        chunk_type = data[pos + 8]
        if chunk_type not in types:
            raise ValueError(f"chunk of type {chunk_type} at byte {pos}")
        length, shift, pos = 0, 0, pos + 9
        while True:
            if pos >= len(data) or shift > 56:
                raise ValueError("bad chunk length")
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if length > len(data) - pos:
            raise ValueError(f"chunk of {length} bytes, {len(data) - pos} left")
        pos += length
        count += 1
    return count


def check_change(change: bytes) -> None:
    """One whole change, parsed by Automerge on a scratch document before the real one sees it.

    Received through a sync message into a document that already has content, a malformed
    change is dropped without an error; loading it alone parses it fully and fails, or only
    misses the dependencies it names."""
    if check_chunks(change, frozenset({CHUNK_CHANGE, CHUNK_COMPRESSED_CHANGE})) != 1:
        raise ValueError("more than one chunk in a change")
    try:
        core.Document.load(change)
    except Exception as exc:
        if _DEPS_MISSING not in str(exc):
            raise


def changes_sync_message(changes: Sequence[bytes]) -> bytes:
    """An Automerge sync message carrying only ``changes``."""
    parts = [b"\x42", b"\x00", b"\x00", b"\x00", _leb128(len(changes))]
    for change in changes:
        parts.append(_leb128(len(change)))
        parts.append(change)
    return b"".join(parts)


def _load(state: bytes) -> core.Document:
    _guarded(lambda: check_chunks(state, _SNAPSHOT_CHUNKS), SnapshotApplyError, "snapshot")
    return _guarded(lambda: core.Document.load(state), SnapshotApplyError, "snapshot")


_SNAPSHOT_CHUNKS = frozenset({CHUNK_DOCUMENT, CHUNK_CHANGE, CHUNK_COMPRESSED_CHANGE})


def core_document(document: object) -> core.Document | None:
    if isinstance(document, core.Document):
        return document
    inner = getattr(document, "_doc", None)  # automerge.document.Document wraps a core one
    return inner if isinstance(inner, core.Document) else None


class AutomergeAdapter:
    """Tracks the heads already accounted for; what lies beyond them is local change."""

    def __init__(self, doc: core.Document) -> None:
        self.doc = doc
        self._heads: list[bytes] = []
        self._held: list[bytes] = []

    def _collect(self) -> list[bytes]:
        changes = self.doc.get_changes(self._heads)
        self._heads = self.doc.get_heads()
        return [change.bytes for change in changes]

    def take_local_changes(self) -> list[bytes]:
        changes = self._held + self._collect()
        self._held = []
        return changes

    def apply_changes(self, changes: Sequence[bytes]) -> None:
        if not changes:
            return
        # Local changes made before this call must not be mistaken for remote ones.
        self._held.extend(self._collect())
        for change in changes:
            _guarded(lambda: check_change(change), UpdateApplyError, "change")  # noqa: B023
        message = _guarded(
            lambda: core.Message.decode(changes_sync_message(changes)), UpdateApplyError, "changes"
        )
        _guarded(
            lambda: self.doc.receive_sync_message(core.SyncState(), message),
            UpdateApplyError,
            "changes",
        )
        self._heads = self.doc.get_heads()

    def apply_snapshot(self, state: bytes) -> None:
        self._held.extend(self._collect())
        other = _load(state)
        _guarded(lambda: self.doc.merge(other), SnapshotApplyError, "snapshot")
        self._heads = self.doc.get_heads()

    def encode_state(self) -> bytes:
        return self.doc.save()

    def missing_from(self, state: bytes) -> list[bytes]:
        other = _load(state)
        heads = other.get_heads()
        return [change.bytes for change in self.doc.get_changes(heads)]

    def close(self) -> None:
        """Nothing to unsubscribe: changes are read from the document on demand."""
