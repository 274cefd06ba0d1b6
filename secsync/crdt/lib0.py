"""lib0's column encoders and decoders, as Yjs's update format v2 uses them.

Each mirrors a class of lib0 (``encoding.js``/``decoding.js``, 0.2.x) byte for byte:
``RleEncoder`` over bytes, ``UintOptRleEncoder``, ``IntDiffOptRleEncoder`` and
``StringEncoder``, and their decoders. Where lib0 reads past the end of a column (it then
yields zeros forever), these raise :class:`YjsFormatError`; only the run-length byte decoder
may repeat its last value forever, as lib0's encoder leaves the last run's count out.

JSON values of v1 (embeds, format attributes) are ``Any`` values in v2: :func:`json_to_any`
and :func:`any_to_json` convert them the way ``JSON.parse``/``writeAny`` and
``readAny``/``JSON.stringify`` do in JavaScript.

Size: one mirror per lib0 class, and the JSON/``Any`` bridge, which read best side by side.
"""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal
from typing import Any

from secsync.crdt.yjs_format import (
    ANY_ARRAY,
    ANY_BIGINT,
    ANY_BYTES,
    ANY_FALSE,
    ANY_FLOAT32,
    ANY_FLOAT64,
    ANY_INTEGER,
    ANY_MAP,
    ANY_NULL,
    ANY_STRING,
    ANY_TRUE,
    ANY_UNDEFINED,
    MAX_VALUE_DEPTH,
    Decoder,
    YjsFormatError,
    json_depth,
)

_BITS31 = 2**31 - 1
_FLOAT32 = struct.Struct(">f")
_FLOAT64 = struct.Struct(">d")
_INT64 = struct.Struct(">q")


def write_var_uint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


def write_var_int(out: bytearray, magnitude: int, negative: bool) -> None:
    """lib0's signed var-int from a magnitude and a sign (which may be negative zero)."""
    out.append((0x80 if magnitude > 0x3F else 0) | (0x40 if negative else 0) | (magnitude & 0x3F))
    magnitude >>= 6
    while magnitude > 0:
        out.append((0x80 if magnitude > 0x7F else 0) | (magnitude & 0x7F))
        magnitude >>= 7


def read_var_int(d: Decoder) -> tuple[int, bool]:
    """A signed var-int as (magnitude, negative): lib0 gives meaning to negative zero."""
    first = d.read_uint8()
    value, shift, byte = first & 0x3F, 6, first
    while byte & 0x80:
        byte = d.read_uint8()
        value |= (byte & 0x7F) << shift
        shift += 7
        if shift > 62:
            raise d.fail("var-int longer than 53 bits")
    return value, bool(first & 0x40)


class RleByteEncoder:
    """``RleEncoder(writeUint8)``: each new value, then (once it changes) its count minus one."""

    __slots__ = ("count", "out", "value")

    def __init__(self) -> None:
        self.out = bytearray()
        self.value = -1
        self.count = 0

    def write(self, value: int) -> None:
        if value == self.value:
            self.count += 1
            return
        if self.count:
            write_var_uint(self.out, self.count - 1)
        self.count = 1
        self.out.append(value)
        self.value = value

    def finish(self) -> bytes:
        return bytes(self.out)  # the last count stays unwritten, as in lib0


class UintOptRleEncoder:
    """A value alone as a positive var-int; a run as its negated value and the count minus 2."""

    __slots__ = ("count", "out", "value")

    def __init__(self) -> None:
        self.out = bytearray()
        self.value = 0
        self.count = 0

    def write(self, value: int) -> None:
        if value == self.value:
            self.count += 1
            return
        self.flush()
        self.count = 1
        self.value = value

    def flush(self) -> None:
        if self.count:
            write_var_int(self.out, self.value, self.count > 1)
            if self.count > 1:
                write_var_uint(self.out, self.count - 2)

    def finish(self) -> bytes:
        self.flush()
        self.count = 0
        return bytes(self.out)


class IntDiffOptRleEncoder:
    """Runs of equal differences: ``diff * 2 + has_count``, then the count minus 2."""

    __slots__ = ("count", "diff", "out", "value")

    def __init__(self) -> None:
        self.out = bytearray()
        self.value = 0
        self.count = 0
        self.diff = 0

    def write(self, value: int) -> None:
        if value - self.value == self.diff:
            self.value = value
            self.count += 1
            return
        self.flush()
        self.count = 1
        self.diff = value - self.value
        self.value = value

    def flush(self) -> None:
        if self.count:
            encoded = self.diff * 2 + (self.count > 1)
            write_var_int(self.out, abs(encoded), encoded < 0)
            if self.count > 1:
                write_var_uint(self.out, self.count - 2)

    def finish(self) -> bytes:
        self.flush()
        self.count = 0
        return bytes(self.out)


class StringEncoder:
    """All strings as one UTF-8 string, then their UTF-16 lengths (``UintOptRleEncoder``).

    Takes the UTF-8 bytes of each string (as v1 holds them), so nothing is decoded twice."""

    __slots__ = ("lengths", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.lengths = UintOptRleEncoder()

    def write(self, raw: bytes) -> None:
        self.parts.append(raw)
        self.size += len(raw)
        self.lengths.write(len(raw) if raw.isascii() else utf16_length(raw))

    def finish(self) -> bytes:
        out = bytearray()
        write_var_uint(out, self.size)
        out += b"".join(self.parts)
        out += self.lengths.finish()
        return bytes(out)


def utf16_length(raw: bytes) -> int:
    """UTF-16 code units of UTF-8 text (what JavaScript's ``length`` counts)."""
    try:
        return len(raw.decode("utf-8").encode("utf-16-le")) // 2
    except UnicodeDecodeError:
        raise YjsFormatError("string is not UTF-8", 0) from None


class RleByteDecoder:
    """Reads :class:`RleByteEncoder`'s column; the last value repeats forever."""

    __slots__ = ("count", "d", "value")

    def __init__(self, data: bytes) -> None:
        self.d = Decoder(data)
        self.value = 0
        self.count = 0

    def read(self) -> int:
        if self.count == 0:
            d = self.d
            self.value = d.read_uint8()
            # 2**62 stands for "forever": no loop reading a column counts that far
            self.count = d.read_var_uint() + 1 if d.remaining else 2**62
        self.count -= 1
        return self.value

    def done(self) -> bool:
        return not self.d.remaining


class UintOptRleDecoder:
    __slots__ = ("count", "d", "value")

    def __init__(self, data: bytes) -> None:
        self.d = Decoder(data)
        self.value = 0
        self.count = 0

    def read(self) -> int:
        if self.count == 0:
            d = self.d
            self.value, run = read_var_int(d)
            self.count = d.read_var_uint() + 2 if run else 1
        self.count -= 1
        return self.value

    def done(self) -> bool:
        return not self.d.remaining and self.count == 0


class IntDiffOptRleDecoder:
    __slots__ = ("count", "d", "diff", "value")

    def __init__(self, data: bytes) -> None:
        self.d = Decoder(data)
        self.value = 0
        self.count = 0
        self.diff = 0

    def read(self) -> int:
        if self.count == 0:
            d = self.d
            magnitude, negative = read_var_int(d)
            encoded = -magnitude if negative else magnitude
            self.diff = encoded >> 1
            self.count = d.read_var_uint() + 2 if encoded & 1 else 1
        self.count -= 1
        self.value += self.diff
        if self.value < 0:
            raise self.d.fail("negative value in a column")
        return self.value

    def done(self) -> bool:
        return not self.d.remaining and self.count == 0


class StringDecoder:
    """Reads :class:`StringEncoder`'s column; :meth:`read` returns each string's UTF-8 bytes.

    lib0 slices the decoded string by UTF-16 code units; a slice that splits a surrogate pair
    holds a lone surrogate, which JavaScript's ``TextEncoder`` writes as U+FFFD, as here."""

    __slots__ = ("ascii", "bmp", "lengths", "pos", "raw", "text", "units")

    def __init__(self, data: bytes) -> None:
        d = Decoder(data)
        self.raw = d.read_var_bytes()
        self.lengths = UintOptRleDecoder(data[d.pos :])
        self.pos = 0
        self.ascii = self.raw.isascii()
        self.text = ""
        self.units = b""
        self.bmp = True
        if not self.ascii:
            try:
                self.text = self.raw.decode("utf-8")
            except UnicodeDecodeError:
                raise YjsFormatError("string column is not UTF-8", 0) from None
            self.units = self.text.encode("utf-16-le")
            self.bmp = len(self.units) == 2 * len(self.text)

    def read(self) -> bytes:
        length = self.lengths.read()
        start = self.pos
        end = start + length
        if self.ascii:
            if end > len(self.raw):
                raise YjsFormatError("string column too short", start)
            self.pos = end
            return self.raw[start:end]
        if self.bmp:
            if end > len(self.text):
                raise YjsFormatError("string column too short", start)
            self.pos = end
            return self.text[start:end].encode("utf-8")
        if 2 * end > len(self.units):
            raise YjsFormatError("string column too short", start)
        self.pos = end
        piece = self.units[2 * start : 2 * end].decode("utf-16-le", errors="replace")
        return piece.encode("utf-8")

    def done(self) -> bool:
        size = len(self.raw) if self.ascii else len(self.units) // 2
        return self.pos == size and self.lengths.done()


def skip_any(d: Decoder) -> None:
    """Move past one ``Any`` value, with an explicit stack, nested at most ``MAX_VALUE_DEPTH``."""
    stack: list[tuple[int, bool]] = []
    left, keyed = 1, False
    while True:
        while left == 0:
            if not stack:
                return
            left, keyed = stack.pop()
        left -= 1
        if keyed:
            d.skip(d.read_var_uint())
        tag = d.read_uint8()
        if tag in (ANY_UNDEFINED, ANY_NULL, ANY_TRUE, ANY_FALSE):
            continue
        if tag == ANY_INTEGER:
            read_var_int(d)
        elif tag == ANY_FLOAT32:
            d.skip(4)
        elif tag in (ANY_FLOAT64, ANY_BIGINT):
            d.skip(8)
        elif tag in (ANY_STRING, ANY_BYTES):
            d.skip(d.read_var_uint())
        elif tag in (ANY_ARRAY, ANY_MAP):
            count = d.read_count(2 if tag == ANY_MAP else 1, "entries")
            if len(stack) >= MAX_VALUE_DEPTH:
                raise d.fail(f"values nested deeper than {MAX_VALUE_DEPTH}")
            if count:
                stack.append((left, keyed))
                left, keyed = count, tag == ANY_MAP
        else:
            raise d.fail(f"value tag {tag}")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def json_to_any(raw: bytes, out: bytearray) -> None:
    """Write the JSON text ``raw`` as ``JSON.parse`` then lib0's ``writeAny`` would."""
    try:
        text = raw.decode("utf-8")
        if json_depth(text) > MAX_VALUE_DEPTH:
            raise YjsFormatError(f"JSON nested deeper than {MAX_VALUE_DEPTH}", 0)
        value = json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError):
        raise YjsFormatError("not JSON", 0) from None
    _write_any(value, out)


def _array_index(key: str) -> bool:
    return key.isdigit() and (key == "0" or key[0] != "0") and int(key) < 2**32 - 1


def _write_any(value: Any, out: bytearray) -> None:
    # Recursion is bounded: the JSON was checked to nest at most MAX_VALUE_DEPTH.
    if isinstance(value, str):
        out.append(ANY_STRING)
        raw = value.encode("utf-8", errors="surrogatepass")
        write_var_uint(out, len(raw))
        out += raw
    elif value is None:
        out.append(ANY_NULL)
    elif value is True or value is False:
        out.append(ANY_TRUE if value else ANY_FALSE)
    elif isinstance(value, int | float):
        number = float(value)  # a JavaScript number is a double
        if number.is_integer() and abs(number) <= _BITS31:
            out.append(ANY_INTEGER)
            write_var_int(out, abs(int(number)), math.copysign(1.0, number) < 0)
        elif _is_float32(number):
            out.append(ANY_FLOAT32)
            out += _FLOAT32.pack(number)
        else:
            out.append(ANY_FLOAT64)
            out += _FLOAT64.pack(number)
    elif isinstance(value, list):
        out.append(ANY_ARRAY)
        write_var_uint(out, len(value))
        for item in value:
            _write_any(item, out)
    else:
        out.append(ANY_MAP)
        # Object.keys lists array-index keys first, ascending, then the others in order
        keys = sorted((k for k in value if _array_index(k)), key=int)
        keys += [k for k in value if not _array_index(k)]
        write_var_uint(out, len(keys))
        for key in keys:
            raw = key.encode("utf-8", errors="surrogatepass")
            write_var_uint(out, len(raw))
            out += raw
            _write_any(value[key], out)


def _is_float32(number: float) -> bool:
    try:
        return bool(_FLOAT32.unpack(_FLOAT32.pack(number))[0] == number)
    except OverflowError:
        return False


def any_to_json(d: Decoder) -> bytes:
    """Read one ``Any`` value and return it as ``JSON.stringify`` writes it (UTF-8)."""
    start = d.pos
    skip_any(d)  # checks the depth and the lengths before anything recurses
    inner = Decoder(d.data[start : d.pos])
    parts: list[str] = []
    if not _any_json(inner, parts):
        raise YjsFormatError("an undefined value where JSON is written", start)
    return "".join(parts).encode("utf-8")


def js_number(number: float) -> str:
    """ECMAScript's ``Number::toString`` (non-finite numbers become ``null``, as in JSON)."""
    if not math.isfinite(number):
        return "null"
    if number == 0:
        return "0"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    sign = "-" if number < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(number))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    n = exponent + len("".join(map(str, digit_tuple)))  # the decimal point's position
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def _json_string(raw: bytes, start: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise YjsFormatError("string is not UTF-8", start) from None
    return json.dumps(text, ensure_ascii=False)


def _any_json(d: Decoder, parts: list[str]) -> bool:
    """Append one value's JSON; False for ``undefined`` (which JSON leaves out)."""
    tag = d.read_uint8()
    if tag == ANY_UNDEFINED:
        return False
    if tag == ANY_NULL:
        parts.append("null")
    elif tag in (ANY_TRUE, ANY_FALSE):
        parts.append("true" if tag == ANY_TRUE else "false")
    elif tag == ANY_INTEGER:
        magnitude, negative = read_var_int(d)
        parts.append(str(-magnitude if negative else magnitude))  # JSON writes -0 as 0
    elif tag == ANY_FLOAT32:
        parts.append(js_number(_FLOAT32.unpack(d.read_bytes(4))[0]))
    elif tag == ANY_FLOAT64:
        parts.append(js_number(_FLOAT64.unpack(d.read_bytes(8))[0]))
    elif tag == ANY_BIGINT:
        raise d.fail("a BigInt where JSON is written")  # JSON.stringify throws on these
    elif tag == ANY_STRING:
        start = d.pos
        parts.append(_json_string(d.read_var_bytes(), start))
    elif tag == ANY_BYTES:
        data = d.read_var_bytes()  # JSON.stringify writes a Uint8Array as an index map
        parts.append("{" + ",".join(f'"{i}":{b}' for i, b in enumerate(data)) + "}")
    elif tag == ANY_ARRAY:
        parts.append("[")
        for index in range(d.read_var_uint()):
            if index:
                parts.append(",")
            if not _any_json(d, parts):
                parts.append("null")
        parts.append("]")
    else:  # ANY_MAP (skip_any refused other tags)
        # A JavaScript object: a repeated key keeps its first place and its last value, and
        # JSON.stringify lists array-index keys first, ascending.
        entries: dict[str, str | None] = {}
        for _ in range(d.read_var_uint()):
            start = d.pos
            raw = d.read_var_bytes()
            inner: list[str] = []
            try:
                key = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise YjsFormatError("key is not UTF-8", start) from None
            entries[key] = "".join(inner) if _any_json(d, inner) else None
        keys = sorted((k for k in entries if _array_index(k)), key=int)
        keys += [k for k in entries if not _array_index(k)]
        fields = [
            json.dumps(k, ensure_ascii=False) + ":" + v
            for k in keys
            if (v := entries[k]) is not None
        ]
        parts.append("{" + ",".join(fields) + "}")
    return True
