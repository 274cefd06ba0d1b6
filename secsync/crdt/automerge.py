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

import hashlib
import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

from automerge import core

from secsync.crdt.failures import crdt_failure
from secsync.errors import LocalIdentityError, SecsyncError, SnapshotApplyError, UpdateApplyError
from secsync.protocol import crdt_identity

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

MAX_CHANGE_OPS = 1_000_000
"""Operations in one change. Columns are run-length encoded: 104 bytes declaring a list of a
million nulls made Automerge hold 538 MB. A million covers pasting a million characters."""

MAX_SNAPSHOT_OPS = 10_000_000
"""Operations in one saved document (the 259,778-edit automerge-paper trace has about 260,000)."""

MAX_INFLATED_BYTES = 64 * 1024 * 1024
"""What a DEFLATE-compressed change or column may expand to (the largest message allowed)."""

_ACTION_COLUMN = 4 << 4 | 2  # column 4, unsigned LEB128 values: one entry per operation
_DEFLATED = 0x08
_DEPS_MISSING = "deps should already be in the document"


class _Reader:
    """LEB128 reads over a chunk body; ``ValueError`` at the end of the data."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uleb(self) -> int:
        value = shift = 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise ValueError(f"bad LEB128 at byte {self.pos}")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def sleb(self) -> int:
        start = self.pos
        value = self.uleb()
        bits = 7 * (self.pos - start)
        return value - (1 << bits) if value >> (bits - 1) & 1 else value

    def skip(self, length: int) -> None:
        if length > len(self.data) - self.pos:
            raise ValueError(f"{length} bytes declared at byte {self.pos}, fewer left")
        self.pos += length

    def skip_bytes(self) -> None:
        self.skip(self.uleb())

    def columns(self) -> list[tuple[int, int]]:
        count = self.uleb()
        if count * 2 > len(self.data) - self.pos:
            raise ValueError(f"{count} columns declared")
        return [(self.uleb(), self.uleb()) for _ in range(count)]


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise ValueError(f"bad DEFLATE data: {exc}") from None
    if len(out) > MAX_INFLATED_BYTES or not inflater.eof:
        raise ValueError(f"compressed data expands beyond {MAX_INFLATED_BYTES} bytes")
    return out


def _operations(columns: list[tuple[int, int]], data: bytes, start: int, limit: int) -> int:
    """The length of the action column, counted run by run, refused beyond ``limit``."""
    pos = start
    for spec, length in columns:
        if length > len(data) - pos:
            raise ValueError("columns longer than the chunk")
        if spec & ~_DEFLATED == _ACTION_COLUMN:
            raw = data[pos : pos + length]
            column = _Reader(_inflate(raw) if spec & _DEFLATED else raw)
            total = 0
            while column.pos < len(column.data):
                run = column.sleb()
                if run > 0:  # one value repeated
                    column.uleb()
                    total += run
                elif run == 0:  # a run of nulls
                    total += column.uleb()
                else:  # literal values
                    for _ in range(-run):
                        column.uleb()
                    total -= run
                if total > limit:
                    raise ValueError(f"more than {limit} operations")
            return total
        pos += length
    return 0


def _change_operations(body: bytes) -> int:
    reader = _Reader(body)
    reader.skip(32 * reader.uleb())  # dependencies
    reader.skip_bytes()  # actor
    reader.uleb()  # sequence number
    reader.uleb()  # first operation counter
    reader.sleb()  # time
    reader.skip_bytes()  # message
    for _ in range(reader.uleb()):  # other actors
        reader.skip_bytes()
    columns = reader.columns()
    return _operations(columns, body, reader.pos, MAX_CHANGE_OPS)


def _document_operations(body: bytes) -> int:
    reader = _Reader(body)
    for _ in range(reader.uleb()):  # actors
        reader.skip_bytes()
    reader.skip(32 * reader.uleb())  # heads
    change_columns = reader.columns()
    op_columns = reader.columns()
    start = reader.pos + sum(length for _, length in change_columns)
    return _operations(op_columns, body, start, MAX_SNAPSHOT_OPS)


def check_chunks(data: bytes, types: frozenset[int]) -> int:
    """Walk Automerge's chunks and count their operations; return the number of chunks.

    Each chunk must be of one of ``types``, the declared lengths must tile ``data`` exactly,
    compressed parts must stay within ``MAX_INFLATED_BYTES`` and the operations within
    ``MAX_CHANGE_OPS`` a change and ``MAX_SNAPSHOT_OPS`` in all. Raises ``ValueError``.
    """
    pos = count = operations = 0
    while pos < len(data) or count == 0:
        if data[pos : pos + 4] != MAGIC or len(data) < pos + 10:
            raise ValueError(f"no Automerge chunk at byte {pos}")
        chunk_type = data[pos + 8]
        if chunk_type not in types:
            raise ValueError(f"chunk of type {chunk_type} at byte {pos}")
        header = _Reader(data)
        header.pos = pos + 9
        length = header.uleb()
        if length > len(data) - header.pos:
            raise ValueError(f"chunk of {length} bytes, {len(data) - header.pos} left")
        body = data[header.pos : header.pos + length]
        if chunk_type == CHUNK_DOCUMENT:
            operations += _document_operations(body)
        else:
            compressed = chunk_type == CHUNK_COMPRESSED_CHANGE
            operations += _change_operations(_inflate(body) if compressed else body)
        if operations > MAX_SNAPSHOT_OPS:
            raise ValueError(f"more than {MAX_SNAPSHOT_OPS} operations")
        pos = header.pos + length
        count += 1
    return count


_ACTOR_PREFIX_BYTES = 64 * 1024
"""A compressed change is inflated this far first to read its actor (the header comes first)."""


def change_actor(change: bytes) -> bytes:
    """The actor of one change chunk, read from its header; ``ValueError`` if malformed."""
    if change[:4] != MAGIC or len(change) < 10:
        raise ValueError("no Automerge chunk")
    chunk_type = change[8]
    if chunk_type not in (CHUNK_CHANGE, CHUNK_COMPRESSED_CHANGE):
        raise ValueError(f"chunk of type {chunk_type}")
    header = _Reader(change)
    header.pos = 9
    length = header.uleb()
    if length > len(change) - header.pos:
        raise ValueError(f"chunk of {length} bytes, {len(change) - header.pos} left")
    body = change[header.pos : header.pos + length]
    if chunk_type == CHUNK_COMPRESSED_CHANGE:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            prefix = inflater.decompress(body, _ACTOR_PREFIX_BYTES)
        except zlib.error as exc:
            raise ValueError(f"bad DEFLATE data: {exc}") from None
        try:
            return _actor(prefix)
        except ValueError:
            if inflater.eof:
                raise
        body = _inflate(body)  # a header beyond the prefix: many dependencies
    return _actor(body)


def _actor(body: bytes) -> bytes:
    reader = _Reader(body)
    reader.skip(32 * reader.uleb())  # dependencies
    length = reader.uleb()
    start = reader.pos
    reader.skip(length)
    return body[start : start + length]


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


def change_hash(change: bytes) -> bytes | None:
    """The hash Automerge names a change by (SHA-256 of the uncompressed chunk after its
    checksum); ``None`` when ``change`` is not one whole change chunk."""
    if len(change) < 10 or change[:4] != MAGIC:
        return None
    header = _Reader(change)
    header.pos = 9
    try:
        length = header.uleb()
        body = change[header.pos : header.pos + length]
        if len(body) != length or header.pos + length != len(change):
            return None
        if change[8] == CHUNK_COMPRESSED_CHANGE:
            body = _inflate(body)
        elif change[8] != CHUNK_CHANGE:
            return None
    except ValueError:
        return None
    return hashlib.sha256(bytes([CHUNK_CHANGE]) + _leb128(len(body)) + body).digest()


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
        self._state: tuple[bytes, list[bytes]] | None = None  # the last snapshot, its heads
        # Actors whose changes this session must not send (see bind_identity).
        self._foreign: Callable[[bytes], bool] = lambda actor: False

    def bind_identity(self, user: bytes, *, legacy: bool = True) -> None:
        """The session's user: the document writes under a fresh actor bound to it, unless
        its actor already is one; an actor bound to another user raises
        :class:`LocalIdentityError`. Changes readers would refuse (under actors bound to
        other users, or unbound ones unless ``legacy``) are never sent."""
        actor = self.doc.get_actor()
        if crdt_identity.is_bound_actor(actor):
            if not crdt_identity.actor_bound_to(actor, user):
                raise LocalIdentityError(
                    f"this document writes under {crdt_identity.describe(actor)}, which is "
                    "bound to another identity"
                )
        else:
            self.doc.set_actor(crdt_identity.new_actor_id(user))
        self._foreign = lambda actor: bool(crdt_identity.refused_ids([actor], user, legacy=legacy))

    def _sendable(self, changes: Sequence[core.Change]) -> list[bytes]:
        return [change.bytes for change in changes if not self._foreign(change.actor_id)]

    def authors_of(self, changes: Sequence[bytes]) -> set[bytes]:
        """The actors of ``changes``, read from their headers. Raises ``UpdateApplyError``."""
        return {
            _guarded(lambda: change_actor(change), UpdateApplyError, "change")  # noqa: B023
            for change in changes
        }

    def _collect(self) -> list[bytes]:
        changes = self.doc.get_changes(self._heads)
        self._heads = self.doc.get_heads()
        return self._sendable(changes)

    def take_local_changes(self) -> list[bytes]:
        changes = self._held + self._collect()
        self._held = []
        return changes

    def untaken_changes(self) -> int:
        """Local changes made since the last take (nothing is taken by asking)."""
        if self.doc.get_heads() == self._heads:
            return len(self._held)
        return len(self._held) + len(self._sendable(self.doc.get_changes(self._heads)))

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
        self._state = (state, other.get_heads())

    def encode_state(self) -> bytes:
        return self.doc.save()

    def missing_from(self, state: bytes) -> list[bytes]:
        other = _load(state)
        heads = other.get_heads()
        return self._sendable(self.doc.get_changes(heads))

    def _lacking(self, state: bytes) -> set[bytes]:
        """Hashes of this document's changes that ``state`` does not hold."""
        cached = self._state
        if cached is not None and (cached[0] is state or cached[0] == state):
            heads = cached[1]
        else:
            heads = _load(state).get_heads()
            self._state = (state, heads)
        changes = _guarded(lambda: self.doc.get_changes(heads), SnapshotApplyError, "heads")
        return {change.hash for change in changes}

    def uncontained(self, state: bytes, changes: Sequence[bytes]) -> list[bytes]:
        """Those of ``changes`` that are not among the changes ``state`` holds (by hash)."""
        if not changes:
            return []
        lacking = self._lacking(state)
        return [change for change in changes if change_hash(change) in lacking]

    def lacks(self, state: bytes, extra: Sequence[bytes]) -> bool:
        """Whether this document has changes that neither ``state`` nor ``extra`` hold."""
        lacking = self._lacking(state)
        if not lacking:
            return False
        return bool(lacking - {change_hash(change) for change in extra})

    def close(self) -> None:
        """Nothing to unsubscribe: changes are read from the document on demand."""
