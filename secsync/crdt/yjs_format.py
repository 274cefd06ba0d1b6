"""The Yjs update format v1, decoded without recursion and checked against structural bounds.

Yjs content comes from members, who can write anything their key lets them sign. The Yjs
library decodes it recursively and trusts the lengths it declares, so a small update can
overflow the native stack (an ``Any`` array nested 28,000 deep) or make it reserve memory it
cannot have. :func:`check_update` walks the whole update first, with explicit stacks, and
raises :class:`YjsFormatError` unless it is well formed and within the bounds below.

Layout (lib0 encoding, as Yjs's ``UpdateDecoderV1`` reads it): a var-uint count of client
sections, each ``structs, client, clock`` then the structs; then the delete set, a count of
clients each with ``client, count`` and ``clock, length`` ranges. A struct starts with an info
byte: its low five bits are the content kind (0 GC and 10 Skip stand alone, with a length);
bit 8 announces a left origin ID, bit 7 a right origin ID; with neither, the parent follows
(``1`` and a root type name, or ``0`` and an ID) and, if bit 6 is set, a key in the parent map.
IDs are ``client, clock`` var-uints, strings a var-uint byte length and UTF-8.

Where Yjs and yrs (behind pycrdt) would read the same bytes differently, the decoder refuses
them rather than pick one reading: the legacy JSON content (yrs reads one string more than Yjs
writes), the XML hook type (yrs reads no name), and info bits that only one of them ignores.
No current encoder writes any of these.

Size: one decoder of one format (update, structs, contents, delete set), read as a whole.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_VALUE_DEPTH = 127
"""Containers enclosing a value (``Any`` arrays and maps, JSON in embeds and formats).

yrs reads ``Any`` values recursively (10,000 levels pass, 28,000 overflow an 8 MB stack) and
parses JSON with serde_json, which refuses 128 levels or more: the same bound for both."""

MAX_TYPE_DEPTH = 512
"""Shared types nested in shared types, as far as one update shows the chain.

Applying deep chains works, but reading them (``str()``, ``to_py()``) recurses in yrs: 8,000
levels read, 28,000 overflow an 8 MB stack (threads may have less). Documents nest XML or maps a
few dozen deep."""

MAX_STRUCTS = 4_000_000
"""Structs (items, GC and skip ranges) in one update.

yrs keeps about 150 bytes per item; a 64 MB message of 5-byte items would otherwise become
several gigabytes. The automerge-paper trace's whole state is about 12,000 structs."""

MAX_VALUES = 8_000_000
"""``Any`` values in one update, nested ones included (each costs yrs about 40 bytes)."""

MAX_DELETE_RANGES = 4_000_000
"""Ranges in one update's delete set (the 259,778-edit trace ends with about 100,000)."""

MAX_MERGE_WORK = 4_000_000
"""Sum over runs of adjacent mergeable items (same client, each the continuation of the one
before) of the run length squared.

yrs merges such a run one item at a time when the transaction ends, copying what it holds so
far each time and keeping the copies until the end: 20,000 one-value ``Any`` items (143 KB)
made it hold 9.6 GB, 30,000 one-character strings 553 MB. Encoders write these runs merged
already, so honest updates have runs of one; the bound still allows one run of 2,000."""

MAX_CLOCK = 2**32 - 1
"""yrs counts clocks in 32 bits: an item ending beyond would wrap around."""

MAX_CLIENT = 2**53 - 1
"""Yjs reads client ids as JavaScript numbers (exact to 53 bits); yrs and pycrdt stay within."""

# Content kinds (the low five bits of the info byte).
GC = 0
DELETED = 1
JSON = 2
BINARY = 3
STRING = 4
EMBED = 5
FORMAT = 6
TYPE = 7
ANY = 8
DOC = 9
SKIP = 10

KIND_NAMES = {
    GC: "GC",
    DELETED: "Deleted",
    JSON: "JSON",
    BINARY: "Binary",
    STRING: "String",
    EMBED: "Embed",
    FORMAT: "Format",
    TYPE: "Type",
    ANY: "Any",
    DOC: "Doc",
    SKIP: "Skip",
}

# Info bits.
HAS_ORIGIN = 0x80
HAS_RIGHT_ORIGIN = 0x40
HAS_PARENT_SUB = 0x20
KIND_MASK = 0x1F

# Shared types of a Type content.
TYPE_ARRAY = 0
TYPE_MAP = 1
TYPE_TEXT = 2
TYPE_XML_ELEMENT = 3
TYPE_XML_FRAGMENT = 4
TYPE_XML_HOOK = 5
TYPE_XML_TEXT = 6

# Tags of lib0's ``writeAny``.
ANY_UNDEFINED = 127
ANY_NULL = 126
ANY_INTEGER = 125
ANY_FLOAT32 = 124
ANY_FLOAT64 = 123
ANY_BIGINT = 122
ANY_FALSE = 121
ANY_TRUE = 120
ANY_STRING = 119
ANY_MAP = 118
ANY_ARRAY = 117
ANY_BYTES = 116

_FIXED_ANY = {
    ANY_UNDEFINED: 0,
    ANY_NULL: 0,
    ANY_FALSE: 0,
    ANY_TRUE: 0,
    ANY_FLOAT32: 4,
    ANY_FLOAT64: 8,
    ANY_BIGINT: 8,
}


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python's parser takes NaN and Infinity, serde not


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in the JSON text ``text``, counted without parsing it
    (so that the parser is only run on texts whose depth is bounded)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


class YjsFormatError(ValueError):
    """The bytes are not a Yjs v1 update within the bounds; ``offset`` is where reading failed."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.reason = message
        self.offset = offset


class Decoder:
    """lib0's decoding primitives over a byte string; every read checks what is left."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, message: str) -> YjsFormatError:
        return YjsFormatError(message, self.pos)

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def read_uint8(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def read_var_uint(self, limit: int = 2**64 - 1) -> int:
        """An unsigned LEB128 integer (7 bits a byte, low first), at most ``limit``."""
        data, pos = self.data, self.pos
        end = len(data)
        if pos >= end:
            raise YjsFormatError("unexpected end in a var-uint", pos)
        value = data[pos]
        pos += 1
        if value >= 0x80:
            value &= 0x7F
            shift = 7
            while True:
                if pos >= end:
                    raise YjsFormatError("unexpected end in a var-uint", pos)
                byte = data[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise YjsFormatError("var-uint longer than 64 bits", pos)
        if value > limit:
            raise self.fail(f"var-uint {value} above {limit}")
        self.pos = pos
        return value

    def read_var_int(self) -> int:
        """lib0's signed var-int: a sign bit and six value bits first, then seven a byte."""
        first = self.read_uint8()
        value, shift = first & 0x3F, 6
        byte = first
        while byte & 0x80:
            byte = self.read_uint8()
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 70:
                raise self.fail("var-int longer than 64 bits")
        return -value if first & 0x40 else value

    def read_count(self, min_bytes_each: int, what: str) -> int:
        """A declared number of elements; each takes at least ``min_bytes_each`` bytes, so a
        count the rest of the input cannot hold is a lie, refused before anything reserves it."""
        count = self.read_var_uint()
        if count * min_bytes_each > self.remaining:
            raise self.fail(f"{count} {what} declared, {self.remaining} bytes left")
        return count

    def read_bytes(self, length: int) -> bytes:
        if length > self.remaining:
            raise self.fail(f"{length} bytes declared, {self.remaining} left")
        start = self.pos
        self.pos += length
        return self.data[start : self.pos]

    def skip(self, length: int) -> None:
        if length > self.remaining:
            raise self.fail(f"{length} bytes declared, {self.remaining} left")
        self.pos += length

    def read_var_bytes(self) -> bytes:
        return self.read_bytes(self.read_var_uint())

    def read_var_string(self) -> str:
        start = self.pos
        raw = self.read_var_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise YjsFormatError("string is not UTF-8", start) from None


@dataclass
class UpdateSummary:
    """What an update holds, counted while checking it."""

    clients: int = 0
    structs: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    values: int = 0
    """``Any`` values, nested ones included."""
    payload_bytes: int = 0
    """Bytes of strings, binaries and keys (what the document will keep)."""
    value_depth: int = 0
    type_depth: int = 0
    delete_ranges: int = 0
    client_ids: list[int] = field(default_factory=list)
    """The client of each section with structs, in update order: whose content the update
    carries (the delete set, which may delete anyone's items, is not counted)."""
    structs_by_client: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    """With ``track``: per client, the clock ranges ``[start, end)`` the structs cover (skips
    left out), in order."""
    deleted_by_client: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    """With ``track``: per client, the ranges of the delete set."""
    references: list[tuple[int, int]] = field(default_factory=list)
    """With ``track``: the IDs the items name (origins, parents) that the update itself does
    not hold: what they need the document to have before they can be integrated."""


def check_update(data: bytes, *, track: bool = False) -> UpdateSummary:
    """Decode a whole Yjs v1 update; raise :class:`YjsFormatError` unless valid and in bounds.

    With ``track``, the summary also holds the ranges of structs and deletes and the IDs the
    update depends on (see :class:`UpdateSummary`)."""
    return check_updates([data], track=track)[0]


def check_updates(updates: Sequence[bytes], *, track: bool = False) -> list[UpdateSummary]:
    """Check updates applied together: each alone, and parents named across them."""
    checkers = [_Checker(bytes(data), track) for data in updates]
    for phase in range(2):
        for index, checker in enumerate(checkers):
            try:
                if phase == 0:
                    checker.run()
                else:
                    checker.check_parents(checkers)
                    checker.summary.type_depth = checker.type_depth()
            except YjsFormatError as exc:
                if len(checkers) == 1:
                    raise
                raise YjsFormatError(f"change {index}: {exc.reason}", exc.offset) from None
    return [checker.summary for checker in checkers]


# An item's parent as the update states it: a root name, a type's ID, or "as my origin's".
_ROOT = 0
_PARENT_ID = 1
_LIKE_ORIGIN = 2


class _Items:
    """One client's items in clock order, in flat arrays (a few bytes each, not objects)."""

    __slots__ = ("deleted", "ends", "how", "is_type", "parent_client", "parent_clock", "starts")

    def __init__(self) -> None:
        self.starts = array("q")
        self.ends = array("q")
        self.how = array("b")
        self.parent_client = array("q")
        self.parent_clock = array("q")
        self.is_type = array("b")
        self.deleted = array("b")

    def add(
        self, start: int, end: int, parent: tuple[int, int, int], is_type: bool, deleted: bool
    ) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.how.append(parent[0])
        self.parent_client.append(parent[1])
        self.parent_clock.append(parent[2])
        self.is_type.append(is_type)
        self.deleted.append(deleted)


class _Checker:
    def __init__(self, data: bytes, track: bool = False) -> None:
        self.track = track
        self.skipped = False  # the struct just read was a Skip
        self.section_start = 0  # with track: the first clock of the client section being read
        self.named: list[tuple[int, int]] = []  # with track: IDs the items name
        self.d = Decoder(data)
        self.summary = UpdateSummary()
        self.items: dict[int, _Items] = {}
        # The run of adjacent mergeable items being read: where it ends, the info byte and
        # right origin all its items share, its length; and the merge work counted so far.
        self.run_end = -1
        self.run_info = 0
        self.run_right = (-1, -1)
        self.run_length = 0
        self.merge_work = 0

    def run(self) -> UpdateSummary:
        d = self.d
        summary = self.summary
        summary.clients = d.read_count(3, "client sections")
        seen: set[int] = set()
        for _ in range(summary.clients):
            structs = d.read_count(2, "structs")
            client = d.read_var_uint(MAX_CLIENT)
            if client in seen:
                raise d.fail(f"client {client} has two sections")
            seen.add(client)
            if structs:
                summary.client_ids.append(client)
            clock = d.read_var_uint(MAX_CLOCK)
            summary.structs += structs
            if summary.structs > MAX_STRUCTS:
                raise d.fail(f"more than {MAX_STRUCTS} structs")
            if not self.track:
                for _ in range(structs):
                    clock = self.struct(client, clock)
            else:
                covered: list[tuple[int, int]] = []
                start = self.section_start = clock
                for _ in range(structs):
                    before = clock
                    clock = self.struct(client, clock)
                    if self.skipped:
                        self.skipped = False
                        if before > start:
                            covered.append((start, before))
                        start = clock
                if clock > start:
                    covered.append((start, clock))
                if covered:
                    summary.structs_by_client[client] = covered
            self.end_run()
        self.delete_set()
        if d.remaining:
            raise d.fail(f"{d.remaining} bytes after the delete set")
        if self.track:
            own = summary.structs_by_client
            summary.references = [
                (client, clock)
                for client, clock in self.named
                if not covers(own.get(client, ()), clock, clock + 1)
            ]
            self.named = []
        return summary

    def end_run(self) -> None:
        self.run_end = -1

    def continue_run(
        self, client: int, clock: int, info: int, origin: tuple[int, int], right: tuple[int, int]
    ) -> None:
        """Count the merge work of an item that continues the one before it."""
        if (
            clock == self.run_end
            and origin == (client, clock - 1)
            and info == self.run_info
            and right == self.run_right
            and info & KIND_MASK in (STRING, ANY, DELETED)
        ):
            self.merge_work += 2 * self.run_length + 1  # (n + 1)^2 - n^2
            self.run_length += 1
            if self.merge_work > MAX_MERGE_WORK:
                raise self.d.fail(f"runs of unmerged items cost more than {MAX_MERGE_WORK}")
            return
        self.run_length = 1
        self.merge_work += 1

    def struct(self, client: int, clock: int) -> int:
        """Read one struct at ``clock``; return the clock after it."""
        d = self.d
        info = d.read_uint8()
        kind = info & KIND_MASK
        name = KIND_NAMES.get(kind)
        kinds = self.summary.kinds
        if name is not None:
            kinds[name] = kinds.get(name, 0) + 1
        if kind in (GC, SKIP):
            if info != kind:
                # Yjs ignores the flag bits on these, yrs reads an item: no common reading.
                raise d.fail(f"{name} with flag bits {info:#04x}")
            self.end_run()
            self.skipped = kind == SKIP
            return self.advance(clock, d.read_var_uint(MAX_CLOCK))
        if kind not in KIND_NAMES or kind == JSON:
            raise d.fail(f"content kind {kind} is not read alike by Yjs and yrs")
        parent = (_ROOT, 0, 0)
        origin = (-1, -1)
        right = (-1, -1)
        if info & HAS_ORIGIN:
            origin = (d.read_var_uint(MAX_CLIENT), d.read_var_uint(MAX_CLOCK))
            parent = (_LIKE_ORIGIN, *origin)
        if info & HAS_RIGHT_ORIGIN:
            right = (d.read_var_uint(MAX_CLIENT), d.read_var_uint(MAX_CLOCK))
            if not info & HAS_ORIGIN:
                parent = (_LIKE_ORIGIN, *right)
        if not info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):
            named = d.read_var_uint()
            if named == 1:
                self.summary.payload_bytes += len(d.read_var_string())
            elif named == 0:
                parent = (_PARENT_ID, d.read_var_uint(MAX_CLIENT), d.read_var_uint(MAX_CLOCK))
            else:
                raise d.fail(f"parent info {named}")
            if info & HAS_PARENT_SUB:
                self.summary.payload_bytes += len(d.read_var_string())
        if self.track:
            # an origin just before the item, in this section, is the common case: no need
            if origin[0] >= 0 and not (
                origin[0] == client and self.section_start <= origin[1] < clock
            ):
                self.named.append(origin)
            if right[0] >= 0:
                self.named.append(right)
            if parent[0] == _PARENT_ID:
                self.named.append((parent[1], parent[2]))
        length = self.content(kind)
        end = self.advance(clock, length)
        self.continue_run(client, clock, info, origin, right)
        self.run_end, self.run_info, self.run_right = end, info, right
        items = self.items.get(client)
        if items is None:
            items = self.items[client] = _Items()
        items.add(clock, end, parent, kind == TYPE, kind == DELETED)
        return end

    def advance(self, clock: int, length: int) -> int:
        if length == 0:
            raise self.d.fail("a struct of length 0")
        end = clock + length
        if end > MAX_CLOCK:
            raise self.d.fail(f"clock {end} beyond 32 bits")
        return end

    def content(self, kind: int) -> int:
        """Read the content of an item; return its length in clock units."""
        d = self.d
        summary = self.summary
        if kind == DELETED:
            return d.read_var_uint(MAX_CLOCK)
        if kind == BINARY:
            summary.payload_bytes += len(d.read_var_bytes())
            return 1
        if kind == STRING:
            text = d.read_var_string()
            summary.payload_bytes += len(text)
            # Yjs counts UTF-16 code units.
            return len(text.encode("utf-16-le")) // 2
        if kind == EMBED:
            self.json()
            return 1
        if kind == FORMAT:
            summary.payload_bytes += len(d.read_var_string())
            self.json()
            return 1
        if kind == TYPE:
            type_ref = d.read_uint8()
            if type_ref == TYPE_XML_ELEMENT:
                summary.payload_bytes += len(d.read_var_string())
            elif type_ref == TYPE_XML_HOOK or type_ref > TYPE_XML_TEXT:
                raise d.fail(f"shared type {type_ref}")
            return 1
        if kind == ANY:
            count = d.read_count(1, "values")
            for _ in range(count):
                self.any_value()
            return count
        # DOC: a guid and its options.
        summary.payload_bytes += len(d.read_var_string())
        self.any_value()
        return 1

    def any_value(self) -> None:
        """Read one lib0 ``Any`` value, with an explicit stack of open arrays and maps."""
        d = self.d
        summary = self.summary
        # Per open container: values still to read, and whether each is preceded by a key.
        stack: list[tuple[int, bool]] = []
        left, keyed = 1, False
        while True:
            while left == 0:
                if not stack:
                    return
                left, keyed = stack.pop()
            left -= 1
            summary.values += 1
            if summary.values > MAX_VALUES:
                raise d.fail(f"more than {MAX_VALUES} values")
            if keyed:
                summary.payload_bytes += len(d.read_var_string())
            tag = d.read_uint8()
            fixed = _FIXED_ANY.get(tag)
            if fixed is not None:
                d.skip(fixed)
            elif tag == ANY_INTEGER:
                d.read_var_int()
            elif tag == ANY_STRING:
                summary.payload_bytes += len(d.read_var_string())
            elif tag == ANY_BYTES:
                summary.payload_bytes += len(d.read_var_bytes())
            elif tag in (ANY_ARRAY, ANY_MAP):
                is_map = tag == ANY_MAP
                count = d.read_count(2 if is_map else 1, "entries")
                depth = len(stack) + 1
                if depth > MAX_VALUE_DEPTH:
                    raise d.fail(f"values nested deeper than {MAX_VALUE_DEPTH}")
                summary.value_depth = max(summary.value_depth, depth)
                if count:
                    stack.append((left, keyed))
                    left, keyed = count, is_map
            else:
                raise d.fail(f"value tag {tag}")

    def json(self) -> None:
        """A JSON text (embeds, format values), nested at most ``MAX_VALUE_DEPTH``."""
        start = self.d.pos
        text = self.d.read_var_string()
        self.summary.payload_bytes += len(text)
        deepest = json_depth(text)
        if deepest > MAX_VALUE_DEPTH:
            raise YjsFormatError(f"JSON nested deeper than {MAX_VALUE_DEPTH}", start)
        self.summary.value_depth = max(self.summary.value_depth, deepest)
        # Parsed too (the depth is bounded now), so that one change of several failing in yrs's
        # parser cannot leave the changes before it applied.
        try:
            json.loads(text, parse_constant=_no_constant)
        except ValueError:
            raise YjsFormatError("not JSON", start) from None

    def delete_set(self) -> None:
        d = self.d
        clients = d.read_count(2, "delete set clients")
        seen: set[int] = set()
        for _ in range(clients):
            client = d.read_var_uint(MAX_CLIENT)
            if client in seen:
                raise d.fail(f"client {client} twice in the delete set")
            seen.add(client)
            ranges = d.read_count(2, "deleted ranges")
            self.summary.delete_ranges += ranges
            if self.summary.delete_ranges > MAX_DELETE_RANGES:
                raise d.fail(f"more than {MAX_DELETE_RANGES} deleted ranges")
            deleted: list[tuple[int, int]] = []
            for _ in range(ranges):
                clock = d.read_var_uint(MAX_CLOCK)
                end = self.advance(clock, d.read_var_uint(MAX_CLOCK))
                if self.track:
                    deleted.append((clock, end))
            if deleted:
                self.summary.deleted_by_client[client] = deleted

    def find(self, client: int, clock: int) -> int | None:
        """Index of the item of this update that holds ``(client, clock)``, if any."""
        items = self.items.get(client)
        if items is None:
            return None
        index = bisect_right(items.starts, clock) - 1
        if index < 0 or clock >= items.ends[index]:
            return None
        return index

    def check_parents(self, checkers: Sequence[_Checker]) -> None:
        """Items placed in a parent that ``checkers`` show is no shared type are refused: yrs
        would integrate the items before them, then fail."""
        for items in self.items.values():
            for how, client, clock in zip(
                items.how, items.parent_client, items.parent_clock, strict=True
            ):
                if how == _PARENT_ID and not all(c.can_hold(client, clock) for c in checkers):
                    raise YjsFormatError(f"the parent {client}#{clock} is not a shared type", 0)

    def can_hold(self, client: int, clock: int) -> bool:
        """Whether ``(client, clock)`` may be a parent, as far as this update tells."""
        index = self.find(client, clock)
        if index is None:
            return True  # not in this update: the document decides
        items = self.items[client]
        return bool(items.is_type[index] or items.deleted[index])

    def type_depth(self) -> int:
        """The longest chain of shared types nested in each other within this update.

        An item's depth is that of its parent type plus one; an item placed by its origin
        shares the origin's parent. Parents may come after their children in the update, so
        each chain is followed with an explicit list and the depths are memoised."""
        if not self.summary.kinds.get("Type"):
            return 0
        memo = {
            client: array("q", [-1]) * len(items.starts) for client, items in self.items.items()
        }
        deepest = 0
        for client, items in self.items.items():
            for index in range(len(items.starts)):
                node = (client, index)
                chain: list[tuple[int, int, int]] = []  # (client, index, levels to the next)
                on_chain: set[tuple[int, int]] = set()
                value = 0
                while True:
                    known = memo[node[0]][node[1]]
                    if known >= 0:
                        value = known
                        break
                    if node in on_chain:
                        raise YjsFormatError("an item is its own ancestor", 0)
                    on_chain.add(node)
                    of = self.items[node[0]]
                    how, c, k = of.how[node[1]], of.parent_client[node[1]], of.parent_clock[node[1]]
                    found = None if how == _ROOT else self.find(c, k)
                    if found is None or (how == _PARENT_ID and not self.items[c].is_type[found]):
                        memo[node[0]][node[1]] = 0
                        break
                    chain.append((node[0], node[1], 1 if how == _PARENT_ID else 0))
                    node = (c, found)
                for c, i, step in reversed(chain):
                    value += step
                    memo[c][i] = value
                value += items.is_type[index]  # a type nests one level more than its parent
                if value > MAX_TYPE_DEPTH:
                    raise YjsFormatError(f"shared types nested deeper than {MAX_TYPE_DEPTH}", 0)
                deepest = max(deepest, value)
        return deepest


def merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` ranges sorted, with overlapping and adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def covers(ranges: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether the sorted, joined ``ranges`` (see :func:`merged`) hold all of ``[start, end)``."""
    index = bisect_right(ranges, (start, MAX_CLOCK + 1)) - 1
    return index >= 0 and ranges[index][0] <= start and end <= ranges[index][1]


def decode_state_vector(data: bytes) -> dict[int, int]:
    """A Yjs state vector (``Doc.get_state()``): the next clock of each client."""
    d = Decoder(data)
    count = d.read_count(2, "clients")
    vector = {}
    for _ in range(count):
        client = d.read_var_uint(MAX_CLIENT)
        vector[client] = d.read_var_uint(MAX_CLOCK)
    if d.remaining:
        raise d.fail(f"{d.remaining} bytes after the state vector")
    return vector
