"""Serialization of an update's changes (the plaintext of an update).

``native``: a msgpack array of ``bin`` values. ``secsync-json``: a JSON array of base64url
strings, as secsync JS's ``serializeUint8ArrayUpdates``. A JSON array starts with ``[``
(0x5b), which as msgpack would be the integer 91 and never a change list, so receivers tell
the two apart without being told.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgpack

from secsync.config import ChangeEncoding
from secsync.errors import UpdateDeserializeError
from secsync.protocol.encoding import b64decode, b64encode, check_msgpack_structure


def serialize_changes(changes: Sequence[bytes], encoding: ChangeEncoding = "native") -> bytes:
    if encoding == "secsync-json":
        return json.dumps([b64encode(c) for c in changes], separators=(",", ":")).encode()
    packed: bytes = msgpack.packb(list(changes), use_bin_type=True)
    return packed


def _native_list(data: bytes, max_changes: int) -> list[bytes] | None:
    """The common native form, read straight from the bytes: a fixarray (at most 15 items) of
    ``bin`` values that ends the input. ``None`` for anything else, which the general path
    below then decodes or refuses. For the inputs this accepts, the general path (structure
    check, then ``msgpack.unpackb`` with its limits) returns the same list: the structure is
    sound, the array holds fewer items than the input has bytes and no more than
    ``max_changes``, no ``bin`` is longer than the input, and nothing trails."""
    first = data[0]
    if not 0x90 <= first <= 0x9F or first - 0x90 > max_changes:
        return None
    size = len(data)
    pos = 1
    changes = []
    try:
        for _ in range(first - 0x90):
            head = data[pos]
            if head == 0xC4:
                length, pos = data[pos + 1], pos + 2
            elif head == 0xC5:
                length, pos = int.from_bytes(data[pos + 1 : pos + 3], "big"), pos + 3
            elif head == 0xC6:
                length, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
            else:
                return None
            end = pos + length
            if end > size:
                return None
            changes.append(data[pos:end])
            pos = end
    except IndexError:
        return None
    return changes if pos == size else None


def deserialize_changes(data: bytes, *, max_changes: int = 1_000_000) -> list[bytes]:
    """Decode either encoding; raise :class:`UpdateDeserializeError` on anything else."""
    if type(data) is bytes and data:
        changes = _native_list(data, max_changes)
        if changes is not None:
            return changes
    try:
        if data[:1] == b"[":
            items = json.loads(data)
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError("not a list of strings")
            changes = [b64decode(i) for i in items]
        else:
            check_msgpack_structure(data, max_depth=2)
            changes = msgpack.unpackb(
                data,
                raw=False,
                max_array_len=min(max_changes, len(data)),
                max_map_len=0,
                max_ext_len=0,
                max_str_len=0,
                max_bin_len=len(data),
            )
            if not isinstance(changes, list) or not all(isinstance(c, bytes) for c in changes):
                raise ValueError("not a list of binary changes")
    except Exception as exc:
        raise UpdateDeserializeError("update content is not a change list") from exc
    if len(changes) > max_changes:
        raise UpdateDeserializeError("too many changes in one update")
    return changes
