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


def changes_sync_message(changes: Sequence[bytes]) -> bytes:
    """An Automerge sync message carrying only ``changes``."""
    parts = [b"\x42", b"\x00", b"\x00", b"\x00", _leb128(len(changes))]
    for change in changes:
        parts.append(_leb128(len(change)))
        parts.append(change)
    return b"".join(parts)


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
        other = _guarded(lambda: core.Document.load(state), SnapshotApplyError, "snapshot")
        _guarded(lambda: self.doc.merge(other), SnapshotApplyError, "snapshot")
        self._heads = self.doc.get_heads()

    def encode_state(self) -> bytes:
        return self.doc.save()

    def missing_from(self, state: bytes) -> list[bytes]:
        other = _guarded(lambda: core.Document.load(state), SnapshotApplyError, "snapshot")
        heads = other.get_heads()
        return [change.bytes for change in self.doc.get_changes(heads)]

    def close(self) -> None:
        """Nothing to unsubscribe: changes are read from the document on demand."""
