"""Yjs updates between format v1 (what pycrdt reads and writes) and format v2.

JavaScript apps built on ``secsync-react-yjs`` exchange v2 updates (``Y.encodeStateAsUpdateV2``,
``Y.applyUpdateV2``); pycrdt only speaks v1. Both formats carry the same structs and delete
set; v2 splits their fields into columns, each compressed on its own (see :mod:`secsync.crdt.lib0`),
in the order of Yjs's ``UpdateEncoderV2``:

* a var-uint feature flag (always 0; other values are refused here), then nine var-length
  columns: key clocks, clients, left clocks, right clocks, info bytes, strings, parent info,
  type refs, lengths;
* then the "rest", unframed: client sections (struct count, start clock; the client comes from
  the client column), skip lengths, binaries and ``Any`` values, then the delete set, whose
  clocks are differences from the end of the range before and whose lengths are stored minus 1.

Embeds and format values are JSON text in v1 and ``Any`` values in v2; they are converted as
``JSON.parse``/``JSON.stringify`` would, so a value JSON cannot hold (``undefined`` at the top,
a BigInt) is refused. Converting does not check what the structs mean (parents, clocks in
order): the v1 checks of :mod:`secsync.crdt.yjs_format` do that before pycrdt sees anything.

Every read is bounded by what is left of its column, every count by the bytes it needs or by
``STRUCTS_PER_BYTE``, and nesting by ``MAX_VALUE_DEPTH``, so hostile input fails fast with
:class:`YjsFormatError` (or, through :func:`v1_to_v2`/:func:`v2_to_v1`, the typed error asked
for), never loops for long or recurses deeply.
"""

from __future__ import annotations

from typing import Literal

from secsync.crdt.lib0 import (
    IntDiffOptRleDecoder,
    IntDiffOptRleEncoder,
    RleByteDecoder,
    RleByteEncoder,
    StringDecoder,
    StringEncoder,
    UintOptRleDecoder,
    UintOptRleEncoder,
    any_to_json,
    json_to_any,
    skip_any,
    write_var_uint,
)
from secsync.crdt.yjs_format import (
    ANY,
    BINARY,
    DELETED,
    DOC,
    EMBED,
    FORMAT,
    GC,
    JSON,
    KIND_MASK,
    MAX_CLIENT,
    MAX_CLOCK,
    MAX_STRUCTS,
    SKIP,
    STRING,
    TYPE,
    TYPE_XML_ELEMENT,
    TYPE_XML_HOOK,
    TYPE_XML_TEXT,
    Decoder,
    YjsFormatError,
    check_update,
)
from secsync.errors import SecsyncError, UpdateApplyError

ContentFormat = Literal["v1", "v2"]

EMPTY_V1 = b"\x00\x00"
EMPTY_V2 = b"\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
"""What ``Y.encodeStateAsUpdateV2`` writes for an empty document."""

STRUCTS_PER_BYTE = 256
"""Structs a v2 update may hold per byte (4,096 more are always allowed, and never more than
``MAX_STRUCTS``). Columns are run-length encoded, so a few bytes can declare millions of
structs; Yjs's own updates hold a few per byte at most (the full automerge-paper trace's
state: 10,971 structs in 159,935 bytes)."""

_ORIGIN = 0x80
_RIGHT_ORIGIN = 0x40
_PARENT_SUB = 0x20
_COLUMNS = 9


def v1_to_v2(update: bytes, *, error: type[SecsyncError] = UpdateApplyError) -> bytes:
    """A Yjs v1 update in format v2; raises ``error`` if ``update`` is not a v1 update."""
    try:
        return encode_v2(update)
    except YjsFormatError as exc:
        raise error(f"not a Yjs v1 update: {exc}") from None


def v2_to_v1(update: bytes, *, error: type[SecsyncError] = UpdateApplyError) -> bytes:
    """A Yjs v2 update in format v1; raises ``error`` if ``update`` is not a v2 update."""
    try:
        return decode_v2(update)
    except YjsFormatError as exc:
        raise error(f"not a Yjs v2 update: {exc}") from None


def as_v1(
    update: bytes, *, error: type[SecsyncError] = UpdateApplyError
) -> tuple[bytes, ContentFormat]:
    """``update`` in v1, whichever format it came in, and the format it was read as.

    A v2 update starts with its feature flag 0; a v1 update starts with its number of client
    sections, which is 0 only when it holds no structs (deletions only, or nothing). So bytes
    starting with anything else are v1 (returned as they are, for the v1 checks to judge);
    bytes starting with 0 are read as v2 and, if they are not v2 but a valid v1 update, as
    v1; if neither, ``error`` is raised. The one ambiguity: bytes that are both a v2 update
    and a v1 update without structs are read as v2, as a JavaScript peer in v2 reads them.
    ``b"\\x00\\x00"`` (the empty v1 update) is not a v2 update."""
    if update[:1] != b"\x00":
        return update, "v1"
    try:
        return decode_v2(update), "v2"
    except YjsFormatError as exc:
        try:
            check_update(update)
        except YjsFormatError:
            raise error(f"not a Yjs update in v2 or v1: {exc}") from None
        return update, "v1"


class _Columns:
    """The nine columns of a v2 update being written, in their order."""

    __slots__ = (
        "client",
        "info",
        "key_clock",
        "left",
        "lens",
        "parent",
        "right",
        "strings",
        "type_ref",
    )

    def __init__(self) -> None:
        self.key_clock = IntDiffOptRleEncoder()
        self.client = UintOptRleEncoder()
        self.left = IntDiffOptRleEncoder()
        self.right = IntDiffOptRleEncoder()
        self.info = RleByteEncoder()
        self.strings = StringEncoder()
        self.parent = RleByteEncoder()
        self.type_ref = UintOptRleEncoder()
        self.lens = UintOptRleEncoder()

    def finish(self, rest: bytearray) -> bytes:
        out = bytearray(b"\x00")  # the feature flag
        for column in (
            self.key_clock.finish(),
            self.client.finish(),
            self.left.finish(),
            self.right.finish(),
            self.info.finish(),
            self.strings.finish(),
            self.parent.finish(),
            self.type_ref.finish(),
            self.lens.finish(),
        ):
            write_var_uint(out, len(column))
            out += column
        out += rest
        return bytes(out)


def encode_v2(data: bytes) -> bytes:
    """v1 → v2; raises :class:`YjsFormatError`."""
    d = Decoder(bytes(data))
    read_uint = d.read_var_uint
    read_bytes = d.read_var_bytes
    c = _Columns()
    rest = bytearray()
    keys = 0
    sections = d.read_count(3, "client sections")
    write_var_uint(rest, sections)
    for _ in range(sections):
        structs = d.read_count(2, "structs")
        write_var_uint(rest, structs)
        c.client.write(read_uint(MAX_CLIENT))
        write_var_uint(rest, read_uint(MAX_CLOCK))
        for _ in range(structs):
            info = d.read_uint8()
            c.info.write(info)
            kind = info & KIND_MASK
            if kind == GC:
                c.lens.write(read_uint(MAX_CLOCK))
                continue
            if kind == SKIP:
                write_var_uint(rest, read_uint(MAX_CLOCK))
                continue
            if info & _ORIGIN:
                c.client.write(read_uint(MAX_CLIENT))
                c.left.write(read_uint(MAX_CLOCK))
            if info & _RIGHT_ORIGIN:
                c.client.write(read_uint(MAX_CLIENT))
                c.right.write(read_uint(MAX_CLOCK))
            if not info & (_ORIGIN | _RIGHT_ORIGIN):
                named = read_uint()
                if named == 1:
                    c.parent.write(1)
                    c.strings.write(read_bytes())
                elif named == 0:
                    c.parent.write(0)
                    c.client.write(read_uint(MAX_CLIENT))
                    c.left.write(read_uint(MAX_CLOCK))
                else:
                    raise d.fail(f"parent info {named}")
                if info & _PARENT_SUB:
                    c.strings.write(read_bytes())
            if kind == STRING:
                c.strings.write(read_bytes())
            elif kind == DELETED:
                c.lens.write(read_uint(MAX_CLOCK))
            elif kind == ANY:
                count = d.read_count(1, "values")
                c.lens.write(count)
                start = d.pos
                for _ in range(count):
                    skip_any(d)
                rest += d.data[start : d.pos]
            elif kind == FORMAT:
                c.key_clock.write(keys)
                keys += 1
                c.strings.write(read_bytes())
                _json_to_any(d, rest)
            elif kind == TYPE:
                type_ref = read_uint()
                if type_ref > TYPE_XML_TEXT:
                    raise d.fail(f"shared type {type_ref}")
                c.type_ref.write(type_ref)
                if type_ref in (TYPE_XML_ELEMENT, TYPE_XML_HOOK):
                    c.key_clock.write(keys)
                    keys += 1
                    c.strings.write(read_bytes())
            elif kind == EMBED:
                _json_to_any(d, rest)
            elif kind == BINARY:
                raw = read_bytes()
                write_var_uint(rest, len(raw))
                rest += raw
            elif kind == DOC:
                c.strings.write(read_bytes())
                start = d.pos
                skip_any(d)
                rest += d.data[start : d.pos]
            elif kind == JSON:
                count = d.read_count(1, "JSON values")
                c.lens.write(count)
                for _ in range(count):
                    c.strings.write(read_bytes())
            else:
                raise d.fail(f"content kind {kind}")
    _encode_delete_set(d, rest)
    if d.remaining:
        raise d.fail(f"{d.remaining} bytes after the delete set")
    try:
        return c.finish(rest)
    except YjsFormatError as exc:  # a string that is not UTF-8, found when measured
        raise YjsFormatError(exc.reason, d.pos) from None


def _json_to_any(d: Decoder, rest: bytearray) -> None:
    start = d.pos
    try:
        json_to_any(d.read_var_bytes(), rest)
    except YjsFormatError as exc:
        raise YjsFormatError(exc.reason, start) from None


def _encode_delete_set(d: Decoder, rest: bytearray) -> None:
    clients = d.read_count(2, "delete set clients")
    write_var_uint(rest, clients)
    for _ in range(clients):
        write_var_uint(rest, d.read_var_uint(MAX_CLIENT))
        ranges = d.read_count(2, "deleted ranges")
        write_var_uint(rest, ranges)
        end = 0
        for _ in range(ranges):
            clock = d.read_var_uint(MAX_CLOCK)
            length = d.read_var_uint(MAX_CLOCK)
            if length == 0:
                raise d.fail("a deleted range of length 0")
            if clock < end:
                # v2 stores each range's distance from the one before: they must be in order
                raise d.fail("deleted ranges out of order")
            write_var_uint(rest, clock - end)
            write_var_uint(rest, length - 1)
            end = clock + length


def _var_bytes(out: bytearray, raw: bytes) -> None:
    write_var_uint(out, len(raw))
    out += raw


def decode_v2(data: bytes) -> bytes:
    """v2 → v1; raises :class:`YjsFormatError`."""
    data = bytes(data)
    d = Decoder(data)
    flag = d.read_var_uint()
    if flag != 0:
        raise d.fail(f"feature flag {flag}")
    columns: list[bytes] = []
    pos, size = d.pos, len(data)
    for _ in range(_COLUMNS):
        if pos < size and data[pos] < 0x80:  # the usual one-byte length, read inline
            end = pos + 1 + data[pos]
            if end > size:
                raise YjsFormatError("a column longer than the update", pos)
            columns.append(data[pos + 1 : end])
            pos = end
        else:
            d.pos = pos
            columns.append(d.read_var_bytes())
            pos = d.pos
    d.pos = pos
    # empty columns (most of them, in a small update) share one reader that has nothing
    key_clock = IntDiffOptRleDecoder(columns[0]) if columns[0] else _NOTHING
    clients = UintOptRleDecoder(columns[1]) if columns[1] else _NOTHING
    left = IntDiffOptRleDecoder(columns[2]) if columns[2] else _NOTHING
    right = IntDiffOptRleDecoder(columns[3]) if columns[3] else _NOTHING
    infos = RleByteDecoder(columns[4]) if columns[4] else _NOTHING
    strings = StringDecoder(columns[5]) if columns[5] != b"\x00" else _NO_STRINGS
    parents = RleByteDecoder(columns[6]) if columns[6] else _NOTHING
    type_refs = UintOptRleDecoder(columns[7]) if columns[7] else _NOTHING
    lens = UintOptRleDecoder(columns[8]) if columns[8] else _NOTHING
    keys: list[bytes] = []
    out = bytearray()
    read_uint = d.read_var_uint

    def client() -> int:
        value = clients.read()
        if value > MAX_CLIENT:
            raise clients.d.fail(f"client {value} above {MAX_CLIENT}")
        write_var_uint(out, value)
        return value

    def clock(column: IntDiffOptRleDecoder) -> None:
        value = column.read()
        if value > MAX_CLOCK:
            raise column.d.fail(f"clock {value} above {MAX_CLOCK}")
        write_var_uint(out, value)

    def length() -> int:
        value = lens.read()
        if value > MAX_CLOCK:
            raise lens.d.fail(f"length {value} above {MAX_CLOCK}")
        write_var_uint(out, value)
        return value

    def key() -> None:
        index = key_clock.read()
        if index < len(keys):
            _var_bytes(out, keys[index])
        else:
            raw = strings.read()
            keys.append(raw)
            _var_bytes(out, raw)

    sections = d.read_count(2, "client sections")
    write_var_uint(out, sections)
    budget = min(MAX_STRUCTS, STRUCTS_PER_BYTE * len(data) + 4096)
    total = 0
    for _ in range(sections):
        structs = read_uint()
        total += structs
        if total > budget:
            raise d.fail(f"more than {budget} structs in {len(data)} bytes")
        write_var_uint(out, structs)
        client()
        write_var_uint(out, read_uint(MAX_CLOCK))
        for _ in range(structs):
            info = infos.read()
            out.append(info)
            kind = info & KIND_MASK
            if kind == GC:
                length()
                continue
            if kind == SKIP:
                write_var_uint(out, read_uint(MAX_CLOCK))
                continue
            if info & _ORIGIN:
                client()
                clock(left)
            if info & _RIGHT_ORIGIN:
                client()
                clock(right)
            if not info & (_ORIGIN | _RIGHT_ORIGIN):
                named = parents.read()
                if named == 1:
                    out.append(1)
                    _var_bytes(out, strings.read())
                elif named == 0:
                    out.append(0)
                    client()
                    clock(left)
                else:
                    raise parents.d.fail(f"parent info {named}")
                if info & _PARENT_SUB:
                    _var_bytes(out, strings.read())
            if kind == STRING:
                _var_bytes(out, strings.read())
            elif kind == DELETED:
                length()
            elif kind == ANY:
                count = length()
                if count > d.remaining:  # each value takes a byte at least
                    raise d.fail(f"{count} values declared, {d.remaining} bytes left")
                start = d.pos
                for _ in range(count):
                    skip_any(d)
                out += d.data[start : d.pos]
            elif kind == FORMAT:
                key()
                _var_bytes(out, any_to_json(d))
            elif kind == TYPE:
                type_ref = type_refs.read()
                if type_ref > TYPE_XML_TEXT:
                    raise type_refs.d.fail(f"shared type {type_ref}")
                out.append(type_ref)
                if type_ref in (TYPE_XML_ELEMENT, TYPE_XML_HOOK):
                    key()
            elif kind == EMBED:
                _var_bytes(out, any_to_json(d))
            elif kind == BINARY:
                _var_bytes(out, d.read_var_bytes())
            elif kind == DOC:
                _var_bytes(out, strings.read())
                start = d.pos
                skip_any(d)
                out += d.data[start : d.pos]
            elif kind == JSON:
                count = length()
                if count > len(strings.raw):  # JSON texts are never empty
                    raise d.fail(f"{count} JSON values declared")
                for _ in range(count):
                    _var_bytes(out, strings.read())
            else:
                raise d.fail(f"content kind {kind}")
    _decode_delete_set(d, out)
    if d.remaining:
        raise d.fail(f"{d.remaining} bytes after the delete set")
    if not all(
        column.done()
        for column in (key_clock, clients, left, right, infos, strings, parents, type_refs, lens)
    ):
        raise d.fail("a column holds more than the structs read")
    return bytes(out)


class _Nothing(IntDiffOptRleDecoder):
    """An empty column: reading from it fails, and it is always done."""

    def read(self) -> int:
        raise YjsFormatError("a column ends before the structs do", 0)

    def done(self) -> bool:
        return True


_NOTHING = _Nothing(b"")
_NO_STRINGS = StringDecoder(b"\x00")


def _decode_delete_set(d: Decoder, out: bytearray) -> None:
    clients = d.read_count(2, "delete set clients")
    write_var_uint(out, clients)
    for _ in range(clients):
        write_var_uint(out, d.read_var_uint(MAX_CLIENT))
        ranges = d.read_count(2, "deleted ranges")
        write_var_uint(out, ranges)
        end = 0
        for _ in range(ranges):
            clock = end + d.read_var_uint(MAX_CLOCK)
            end = clock + d.read_var_uint(MAX_CLOCK) + 1
            if end > MAX_CLOCK:
                raise d.fail(f"clock {end} beyond 32 bits")
            write_var_uint(out, clock)
            write_var_uint(out, end - clock)


__all__ = ["EMPTY_V1", "EMPTY_V2", "ContentFormat", "as_v1", "v1_to_v2", "v2_to_v1"]
