"""The Yjs v1 <-> v2 codec against the real Yjs: byte for byte on what Yjs writes, the same
content and state vector once pycrdt applies it, and Yjs reading what pycrdt writes.

With Node.js, fresh random documents come from ``tests/js/yjs/yjs_cases.mjs`` on every run
(``YJS_V2_SEED`` picks the seed; a failure names it); the committed fixture
(``tests/crdt/fixtures/yjs_v2/cases.json.gz``, made by ``node yjs_cases.mjs fixtures PATH``) runs
the same checks where Node is missing, without the step that needs Yjs to read our output.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secsync.crdt import lib0
from secsync.crdt.yjs_format import YjsFormatError, check_update, decode_state_vector
from secsync.crdt.yjs_v2 import (
    EMPTY_V1,
    EMPTY_V2,
    as_v1,
    decode_v2,
    encode_v2,
    v1_to_v2,
    v2_to_v1,
)
from secsync.errors import SnapshotApplyError, UpdateApplyError
from tests.crdt.yjs_build import var_string, var_uint
from tests.factories import plain_yjs_doc

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js" / "yjs"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "yjs_v2" / "cases.json.gz"
TRACE = ROOT / "data" / "automerge-paper.json.gz"
ROOTS = {
    "text": pycrdt.Text,
    "map": pycrdt.Map,
    "array": pycrdt.Array,
    "xml": pycrdt.XmlFragment,
}


# --- canonical content, as tests/js/yjs/yjs_cases.mjs writes it ------------------------------


def canon(value: Any) -> Any:
    """A pycrdt value in the JSON form ``canon`` of yjs_cases.mjs gives the same Yjs value."""
    if isinstance(value, pycrdt.Text | pycrdt.XmlText):
        return {"$text": [[canon(ins), canon(attrs or {})] for ins, attrs in value.diff()]}
    if isinstance(value, pycrdt.XmlElement):
        return {
            "$xml": value.tag,
            "attrs": canon(dict(value.attributes)),
            "children": [canon(c) for c in value.children],
        }
    if isinstance(value, pycrdt.XmlFragment):
        return {"$frag": [canon(c) for c in value.children]}
    if isinstance(value, pycrdt.Map):
        return {"$map": {k: canon(v) for k, v in sorted(value.items())}}
    if isinstance(value, pycrdt.Array):
        return {"$array": [canon(v) for v in value]}
    if isinstance(value, pycrdt.Doc):
        return {"$doc": value.guid}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).hex()}
    return _numbers(value)


def _numbers(value: Any) -> Any:
    """JSON from JavaScript: every number a float (yrs reads integers as floats too)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [canon(v) for v in value]
    return {k: canon(v) for k, v in sorted(value.items())}


def content(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    return {name: canon(doc.get(name, type=kind)) for name, kind in ROOTS.items()}


def state_vector(doc: pycrdt.Doc[Any]) -> dict[str, int]:
    return {str(c): k for c, k in decode_state_vector(doc.get_state()).items()}


def applied(*updates: bytes) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = plain_yjs_doc()
    for name, kind in ROOTS.items():
        doc.get(name, type=kind)
    for update in updates:
        doc.apply_update(update)
    return doc


# --- the checks, on cases from Yjs ------------------------------------------------------------


def check_case(case: dict[str, Any]) -> bytes | None:
    """Every check that needs no JavaScript; returns pycrdt's own state of the document (for
    Yjs to read back), or None when pycrdt cannot hold it (XML hooks, which yrs misreads)."""
    seed = case["seed"]
    pairs = [(case["v1"], case["v2"]), tuple(case["merged"]), tuple(case["diff"])]
    pairs += [tuple(u) for u in case["updates"]]
    for v1_hex, v2_hex in pairs:
        v1, v2 = bytes.fromhex(v1_hex), bytes.fromhex(v2_hex)
        assert decode_v2(v2) == v1, f"seed {seed}: v2 -> v1 differs from Yjs's v1"
        assert encode_v2(v1) == v2, f"seed {seed}: v1 -> v2 differs from Yjs's v2"
        assert as_v1(v2) == (v1, "v2"), f"seed {seed}: v2 not detected"
        assert as_v1(v1)[0] == v1, f"seed {seed}: v1 misread"
    if case["hooks"]:
        return None
    state = v2_to_v1(bytes.fromhex(case["v2"]))
    check_update(state)
    doc = applied(state)
    assert content(doc) == _numbers(case["content"]), f"seed {seed}: content differs"
    assert state_vector(doc) == case["stateVector"], f"seed {seed}: state vector differs"
    # Update by update, only the clocks are compared: where an edit splits a surrogate pair,
    # yrs and Yjs repair the halves differently (with Yjs's own v1 updates alike).
    stepwise = applied(*(v2_to_v1(bytes.fromhex(v2)) for _, v2 in case["updates"]))
    assert state_vector(stepwise) == case["stateVector"], f"seed {seed}: updates one by one"
    return doc.get_update()


def _load_fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(FIXTURE.read_bytes()))
    return data


def test_the_committed_cases_convert_exactly_and_apply_to_the_same_content() -> None:
    data = _load_fixture()
    assert len(data["cases"]) >= 100
    kinds: set[str] = set()
    for case in data["cases"]:
        check_case(case)
        for v1_hex in (case["v1"], case["merged"][0]):
            try:
                kinds.update(check_update(bytes.fromhex(v1_hex)).kinds)
            except YjsFormatError:
                assert case["hooks"]
    # every struct and content kind Yjs writes is among them
    assert kinds >= {"GC", "Skip", "Deleted", "Binary", "String", "Embed", "Format", "Type"}
    assert kinds >= {"Any", "Doc"}


# --- live, against Yjs in Node ----------------------------------------------------------------


def _unavailable(reason: str) -> None:
    """Skip, except in CI, which installs Node.js to run these (a skip there would hide them)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs the tests against the real Yjs)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` executable, with tests/js/yjs's packages installed (``npm ci``)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable(
            "Node.js and npm are not installed: the v2 codec is checked on the committed "
            "fixture only, not against a live Yjs"
        )
    assert node is not None and npm is not None
    if not (JS_DIR / "node_modules" / "yjs").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode:
            _unavailable(f"npm ci failed in tests/js/yjs: {done.stderr.strip()[-500:]}")
    return node


def run_node(node: str, *args: str, stdin: str | None = None) -> Any:
    done = subprocess.run(
        [node, "yjs_cases.mjs", *args],
        cwd=JS_DIR,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout)


def yjs_reads(node: str, items: list[tuple[bytes, str]]) -> list[dict[str, Any]]:
    """What Yjs in Node reads from each (update, format)."""
    payload = json.dumps([{"update": u.hex(), "format": f} for u, f in items])
    result: list[dict[str, Any]] = run_node(node, "apply", stdin=payload)
    return result


def test_random_documents_from_yjs_convert_both_ways(node: str) -> None:
    seed = int(os.environ.get("YJS_V2_SEED") or random.randrange(1, 2**31))
    count = int(os.environ.get("YJS_V2_CASES") or 300)
    data = run_node(node, "generate", str(seed), str(count))
    back: list[tuple[dict[str, Any], bytes]] = []
    for case in data["cases"]:
        try:
            state = check_case(case)
        except AssertionError as exc:
            raise AssertionError(f"YJS_V2_SEED={seed}: {exc}") from None
        if state is not None:
            back.append((case, state))
    # pycrdt's own state, through our v2, read by Yjs
    reads = yjs_reads(node, [(v1_to_v2(state), "v2") for _, state in back])
    for (case, _), read in zip(back, reads, strict=True):
        where = f"YJS_V2_SEED={seed} (case seed {case['seed']})"
        assert "error" not in read, f"{where}: Yjs refused our v2: {read.get('error')}"
        assert _numbers(read["content"]) == _numbers(case["content"]), f"{where}: content"
        assert read["stateVector"] == case["stateVector"], f"{where}: state vector"
    assert len(back) >= count // 2


def test_yjs_reads_the_empty_update_and_pycrdt_updates_we_convert(node: str) -> None:
    doc = applied()
    changes: list[bytes] = []
    doc.observe(lambda event: changes.append(event.update))
    text = doc.get("text", type=pycrdt.Text)
    text.insert(0, "a😀b", {"bold": True})
    text.insert(1, "𝄞")
    del text[0:1]
    doc.get("map", type=pycrdt.Map)["k"] = {"n": [1, 2.5, None, "x"]}
    element = pycrdt.XmlElement("p", {"class": "c"})
    doc.get("xml", type=pycrdt.XmlFragment).children.append(element)
    element.children.append(pycrdt.XmlText("hi"))
    items = [(EMPTY_V2, "v2"), (v1_to_v2(EMPTY_V1), "v2")]
    items += [(v1_to_v2(doc.get_update()), "v2")]
    reads = yjs_reads(node, items)
    assert all("error" not in r for r in reads), reads
    assert reads[0]["stateVector"] == {} and reads[1] == reads[0]
    expected = content(doc)
    assert _numbers(reads[2]["content"]) == expected
    # each transaction alone, in order (Yjs keeps what it cannot integrate yet)
    merged = yjs_reads(node, [(v1_to_v2(pycrdt.merge_updates(*changes)), "v2")])[0]
    assert _numbers(merged["content"]) == expected


# --- properties on pycrdt's updates -----------------------------------------------------------

_pieces = st.sampled_from(["a", "xyz", "é", "中", "😀", "𝄞", "\n", '"', "\\"])
_texts = st.lists(_pieces, min_size=1, max_size=4).map("".join)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=6,
)
# embeds are JSON in v1: no bytes
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40).map(lambda n: n / 4) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=6,
)
_edits = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.integers(0, 50), _texts, st.booleans()),
        st.tuples(st.just("delete"), st.integers(0, 50), st.integers(1, 3)),
        st.tuples(st.just("format"), st.integers(0, 50), st.integers(1, 5)),
        st.tuples(st.just("embed"), st.integers(0, 50), _json),
        st.tuples(st.just("set"), st.sampled_from(["a", "b", "😀"]), _values),
        st.tuples(st.just("push"), _values),
        st.tuples(st.just("xml"), _texts),
        st.tuples(st.just("nested"), _texts),
    ),
    min_size=1,
    max_size=12,
)


def pycrdt_updates(
    edits: list[tuple[Any, ...]], client: int = 77
) -> tuple[pycrdt.Doc[Any], list[bytes]]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
    changes: list[bytes] = []
    doc.observe(lambda event: changes.append(event.update))
    text = doc.get("text", type=pycrdt.Text)
    map_ = doc.get("map", type=pycrdt.Map)
    array = doc.get("array", type=pycrdt.Array)
    xml = doc.get("xml", type=pycrdt.XmlFragment)
    for edit in edits:
        # pycrdt counts text positions in UTF-8 bytes: only character boundaries are used
        bounds = [0]
        for char in str(text):
            bounds.append(bounds[-1] + len(char.encode()))
        size = len(bounds) - 1
        kind = edit[0]
        if kind == "insert":
            text.insert(bounds[min(edit[1], size)], edit[2], {"bold": True} if edit[3] else None)
        elif kind == "delete" and size:
            start = min(edit[1], size - 1)
            del text[bounds[start] : bounds[min(size, start + edit[2])]]
        elif kind == "format" and size:
            start = min(edit[1], size - 1)
            end = bounds[min(size, start + edit[2])]
            text.format(bounds[start], end, {"color": "red", "n": 1.5})
        elif kind == "embed":
            rich = pycrdt.Text("ab")
            array.append(rich)
            rich.insert_embed(1, {"v": edit[2]})
        elif kind == "set":
            map_[edit[1]] = edit[2]
        elif kind == "push":
            array.append(edit[1])
        elif kind == "xml":
            element = pycrdt.XmlElement("p", {"class": edit[1]})
            xml.children.append(element)
            element.children.append(pycrdt.XmlText(edit[1]))
        elif kind == "nested":
            inner = pycrdt.Map({"t": pycrdt.Text(edit[1]), "a": pycrdt.Array([1, edit[1]])})
            array.append(inner)
    return doc, changes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_edits)
def test_pycrdt_updates_survive_v2_and_back(edits: list[tuple[Any, ...]]) -> None:
    doc, changes = pycrdt_updates(edits)
    for update in [doc.get_update(), *changes]:
        v2 = v1_to_v2(update)
        assert v2_to_v1(v2) == update
        assert as_v1(v2) == (update, "v2")
    assert content(applied(v2_to_v1(v1_to_v2(doc.get_update())))) == content(doc)
    stepwise = applied(*(v2_to_v1(v1_to_v2(change)) for change in changes))
    assert content(stepwise) == content(doc)


def _honest_v2() -> list[bytes]:
    doc, changes = pycrdt_updates(
        [
            ("insert", 0, "hello 😀 world", True),
            ("format", 2, 4),
            ("embed", 1, {"k": [1, 2.5]}),
            ("set", "a", {"x": b"\x01"}),
            ("push", [1, "two"]),
            ("xml", "c"),
            ("nested", "t"),
            ("delete", 3, 2),
        ]
    )
    return [v1_to_v2(doc.get_update()), *(v1_to_v2(c) for c in changes[-3:])]


HONEST_V2 = _honest_v2()


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(HONEST_V2),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "cut", "insert", "drop"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_v2_only_ever_raises_the_typed_error(
    update: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    data = bytearray(update)
    for kind, where, byte in mutations:
        at = where % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= byte or 1
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data.insert(at, byte)
        elif kind == "drop" and at < len(data):
            del data[at]
    try:
        v1 = v2_to_v1(bytes(data))
    except UpdateApplyError:
        return
    # what converts is a v1 update the v1 checks then judge, and converts back
    try:
        check_update(v1)
    except YjsFormatError:
        return
    assert decode_v2(encode_v2(v1)) == v1


def test_truncated_v2_raises_the_typed_error_at_every_length() -> None:
    update = HONEST_V2[0]
    for end in range(len(update)):
        with pytest.raises(UpdateApplyError):
            v2_to_v1(update[:end])
    with pytest.raises(SnapshotApplyError, match="not a Yjs v2 update"):
        v2_to_v1(update[:5], error=SnapshotApplyError)


def _v2(rest: bytes, columns: list[bytes] | None = None) -> bytes:
    columns = columns or [b""] * 5 + [b"\x00"] + [b""] * 3
    return b"\x00" + b"".join(var_uint(len(c)) + c for c in columns) + rest


def _forever_gc_columns(count: int) -> list[bytes]:
    """An info column of GC forever and a length column of ``count`` ones, in a few bytes."""
    lens = bytearray()
    lib0.write_var_int(lens, 1, True)
    lib0.write_var_uint(lens, count - 2)
    return [b"", b"\x05", b"", b"", b"\x00", b"\x00", b"", b"", bytes(lens)]


def _nested_any(depth: int) -> bytes:
    """One Any item in the root "a" holding arrays nested ``depth`` deep."""
    values = bytes([lib0.ANY_ARRAY, 1]) * (depth - 1) + bytes([lib0.ANY_ARRAY, 0])
    columns = [b"", b"\x05", b"", b"", b"\x08", b"\x01a\x01", b"\x01", b"", b"\x01"]
    return _v2(b"\x01\x01\x00" + values + b"\x00", columns)


def test_nesting_is_bounded_where_v1_bounds_it() -> None:
    check_update(v2_to_v1(_nested_any(127)))
    with pytest.raises(UpdateApplyError, match="nested deeper than 127"):
        v2_to_v1(_nested_any(128))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty bytes"),
        pytest.param(EMPTY_V1, id="the empty v1 update"),
        pytest.param(bytes.fromhex("01010500") + b"\x00", id="v1 bytes"),
        pytest.param(b"\x01" + EMPTY_V2[1:], id="feature flag 1"),
        pytest.param(b"\x00" + var_uint(2**40), id="a column longer than the input"),
        pytest.param(_v2(var_uint(2**60)), id="2**60 client sections"),
        pytest.param(_v2(b"\x01" + var_uint(2**40) + b"\x00\x00"), id="2**40 structs"),
        pytest.param(
            _v2(b"\x01" + var_uint(10**6) + b"\x00\x00", _forever_gc_columns(10**6)),
            id="a million GC structs in 20 bytes",
        ),
        pytest.param(_v2(b"\x00\x01\x05" + var_uint(2**40)), id="2**40 deleted ranges"),
        pytest.param(_v2(b"\x00\x01\x05\x01\x00" + var_uint(2**33)), id="a huge deleted range"),
        pytest.param(EMPTY_V2 + b"\x00", id="a byte after the delete set"),
        pytest.param(_nested_any(200), id="Any nested 200 deep"),
        pytest.param(
            _v2(b"\x00\x00", [b"", b"", b"", b"", b"", b"\x02\xff\xfe\x02", b"", b"", b""]),
            id="a string column that is not UTF-8",
        ),
    ],
)
def test_hostile_v2_raises_the_typed_error_fast(data: bytes) -> None:
    with pytest.raises(UpdateApplyError):
        v2_to_v1(data)


def test_v1_that_v2_cannot_hold_raises_the_typed_error() -> None:
    deletes = var_uint(1) + var_uint(5) + var_uint(2) + b"\x04\x01\x00\x01"  # 4-5 then 0-1
    for bad in [b"", b"\x01", EMPTY_V1 + b"\x00", b"\x00" + deletes, b"\x00\x01\x05\x01\x00\x00"]:
        with pytest.raises(UpdateApplyError):
            v1_to_v2(bad)
    embed = bytes([lib0.ANY_UNDEFINED])  # JSON has no undefined
    v1 = b"\x01\x01\x05\x00\x05\x01\x01t" + var_string("[1]") + b"\x00"
    assert decode_v2(encode_v2(v1)) == v1
    with pytest.raises(UpdateApplyError, match="undefined"):
        v2_to_v1(encode_v2(v1).replace(bytes([lib0.ANY_ARRAY, 1, lib0.ANY_INTEGER, 1]), embed))


def test_legacy_json_content_and_xml_hooks_convert_both_ways() -> None:
    # kind 2 (JSON strings, which no current encoder writes) and the XML hook type
    json_item = b"\x02\x01\x01a" + var_uint(2) + var_string('{"a":1}') + var_string("undefined")
    hook_item = b"\x07\x01\x01h\x05" + var_string("hook")
    v1 = b"\x01\x02\x09\x00" + json_item + hook_item + b"\x00"
    assert decode_v2(encode_v2(v1)) == v1


def test_js_numbers_are_written_as_javascript_writes_them() -> None:
    cases = {
        1.5: "1.5",
        1e21: "1e+21",
        1e-7: "1e-7",
        1e16: "10000000000000000",
        0.000001: "0.000001",
        -2.5e-10: "-2.5e-10",
        123456789012.5: "123456789012.5",
        2**53 + 2.0: "9007199254740994",
        float("inf"): "null",
    }
    for number, text in cases.items():
        assert lib0.js_number(number) == text


# --- the automerge-paper trace ----------------------------------------------------------------


def _trace_text(transactions: list[dict[str, Any]]) -> tuple[pycrdt.Doc[Any], list[bytes]]:
    doc: pycrdt.Doc[Any] = plain_yjs_doc()
    text = doc.get("text", type=pycrdt.Text)
    changes: list[bytes] = []
    doc.observe(lambda event: changes.append(event.update))
    for txn in transactions:
        with doc.transaction():
            for pos, delete, insert in txn["patches"]:
                if delete:
                    del text[pos : pos + delete]
                if insert:
                    text.insert(pos, insert)
    return doc, changes


@pytest.fixture(scope="module")
def trace() -> Iterator[list[dict[str, Any]]]:
    with gzip.open(TRACE, "rt", encoding="utf-8") as file:
        yield json.load(file)["txns"]


def test_a_trace_slice_goes_through_v2_update_by_update_and_as_a_state(
    trace: list[dict[str, Any]],
) -> None:
    doc, changes = _trace_text(trace[:3000])
    mirror = applied()
    for change in changes:
        v2 = v1_to_v2(change)
        assert v2_to_v1(v2) == change
        mirror.apply_update(v2_to_v1(v2))
    state = doc.get_update()
    back = applied(v2_to_v1(v1_to_v2(state)))
    assert str(back.get("text", type=pycrdt.Text)) == str(doc.get("text", type=pycrdt.Text))
    assert str(mirror.get("text", type=pycrdt.Text)) == str(doc.get("text", type=pycrdt.Text))


@pytest.mark.slow
def test_the_full_trace_state_goes_through_v2_and_back(trace: list[dict[str, Any]]) -> None:
    doc, _ = _trace_text(trace)
    state = doc.get_update()
    v2 = v1_to_v2(state)
    assert len(v2) < len(state)
    assert v2_to_v1(v2) == state
    back = applied(v2_to_v1(v2))
    assert str(back.get("text", type=pycrdt.Text)) == str(doc.get("text", type=pycrdt.Text))
