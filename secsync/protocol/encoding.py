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


def b64encode(data: bytes) -> str:
    """Unpadded base64url, as libsodium's ``to_base64`` default."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


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
