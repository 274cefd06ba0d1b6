"""Strict base64url and canonical JSON, byte-exact with libsodium and npm ``canonicalize``."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from secsync.errors import CanonicalJsonError, InvalidBase64Error

JsonValue: TypeAlias = "bool | int | str | Sequence[JsonValue] | Mapping[str, JsonValue] | None"

# Integers outside this range cannot round-trip through a JavaScript number.
MAX_SAFE_INTEGER = 2**53 - 1

_B64URL_CHARS = re.compile(rb"[A-Za-z0-9_-]*")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64encode_ascii(data: bytes) -> bytes:
    """Unpadded base64url as ASCII bytes (``base64.urlsafe_b64encode`` without its wrappers)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def b64encode(data: bytes) -> str:
    """Unpadded base64url, as libsodium's ``to_base64`` default."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def b64decode(text: str | bytes) -> bytes:
    """Decode strict unpadded base64url; reject padding, ``+``, ``/`` and non-canonical tails.

    libsodium's decoder also rejects non-zero trailing bits, so an encoding that does not
    round-trip is refused here as well.
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if _B64URL_CHARS.fullmatch(raw) is None or len(raw) % 4 == 1:
        raise InvalidBase64Error("not strict unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64Error("not strict unpadded base64url") from exc
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise InvalidBase64Error("base64url has non-zero trailing bits")
    return data


def _utf16_sort_key(key: str) -> bytes:
    # JavaScript sorts object keys by UTF-16 code units, not by code points.
    return key.encode("utf-16-be", "surrogatepass")


def _dump(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJsonError("integer outside the JSON-safe range")
        out.append(str(int(value)))
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        # JSON.stringify escapes lone surrogates (which UTF-8 cannot carry) as lowercase \uXXXX.
        out.append(_LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))
    elif isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJsonError("object keys must be strings")
            items.append((key, item))
        items.sort(key=lambda kv: _utf16_sort_key(kv[0]))
        out.append("{")
        for index, (key, item) in enumerate(items):
            if index:
                out.append(",")
            _dump(key, out)
            out.append(":")
            _dump(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _dump(item, out)
        out.append("]")
    elif isinstance(value, float):
        raise CanonicalJsonError("floats are not allowed in canonical JSON")
    else:
        raise CanonicalJsonError(f"cannot encode {type(value).__name__} as canonical JSON")


def canonical_json(value: object) -> str:
    """Canonical JSON (RFC 8785 as npm ``canonicalize@2`` produces it) for integer-only data."""
    out: list[str] = []
    _dump(value, out)
    return "".join(out)


def check_json_value(value: object, *, depth: int = 0, max_depth: int = 16) -> JsonValue:
    """Validate that ``value`` is a JSON value public data may carry (no floats, bounded depth)."""
    if depth > max_depth:
        raise CanonicalJsonError("JSON value nested too deeply")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJsonError("integer outside the JSON-safe range")
        return value
    if isinstance(value, list | tuple):
        return [check_json_value(v, depth=depth + 1, max_depth=max_depth) for v in value]
    if isinstance(value, Mapping):
        result: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJsonError("object keys must be strings")
            result[key] = check_json_value(item, depth=depth + 1, max_depth=max_depth)
        return result
    raise CanonicalJsonError(f"{type(value).__name__} is not a JSON value")


# msgpack type byte -> (bytes of a length field, fixed payload bytes) for non-container types
_LENGTH_PREFIXED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
_EXT_PREFIXED = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_FIXED = {
    0xC0: 0,
    0xC2: 0,
    0xC3: 0,
    0xCA: 4,
    0xCB: 8,
    0xCC: 1,
    0xCD: 2,
    0xCE: 4,
    0xCF: 8,
    0xD0: 1,
    0xD1: 2,
    0xD2: 4,
    0xD3: 8,
    0xD4: 2,
    0xD5: 3,
    0xD6: 5,
    0xD7: 9,
    0xD8: 17,
}
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def check_msgpack_structure(data: bytes, *, max_depth: int = 32) -> None:
    """Refuse msgpack whose declared container sizes could not fit in ``data``.

    msgpack allocates a container as large as its header claims before reading its items, at
    every nesting level, so a few kilobytes of nested headers could claim gigabytes. Here every
    declared item must still have at least one byte of input left to be made of, and nesting
    is bounded; only then is the input handed to the decoder. Raises ``ValueError``.
    """
    size = len(data)
    pos = 0
    pending = 1  # items declared but not read yet, over all open containers
    stack = [1]  # items left at each open level
    while stack:
        if stack[-1] == 0:
            stack.pop()
            continue
        if pos >= size:
            raise ValueError("msgpack input ends early")
        stack[-1] -= 1
        pending -= 1
        b = data[pos]
        pos += 1
        count = 0
        if b <= 0x7F or b >= 0xE0:
            continue
        if 0x80 <= b <= 0x8F:
            count = 2 * (b & 0x0F)
        elif 0x90 <= b <= 0x9F:
            count = b & 0x0F
        elif 0xA0 <= b <= 0xBF:
            pos += b & 0x1F
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _LENGTH_PREFIXED:
            width = _LENGTH_PREFIXED[b]
            pos += width + int.from_bytes(data[pos : pos + width], "big")
        elif b in _EXT_PREFIXED:
            width = _EXT_PREFIXED[b]
            pos += width + 1 + int.from_bytes(data[pos : pos + width], "big")
        elif b in _CONTAINERS:
            width, per_item = _CONTAINERS[b]
            count = per_item * int.from_bytes(data[pos : pos + width], "big")
            pos += width
        else:
            raise ValueError("invalid msgpack type byte")
        if count:
            pending += count
            if pending > size - pos:
                raise ValueError("msgpack containers claim more items than the input holds")
            if len(stack) >= max_depth:
                raise ValueError("msgpack nested too deeply")
            stack.append(count)
    if pos > size:
        raise ValueError("msgpack input ends early")
