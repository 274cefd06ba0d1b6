"""One batch of CRDT adapter fuzzing, run in its own process by test_crdt_content.py.

A crash of the native library (stack overflow, abort) kills only this process, which the test
sees. Usage: ``python -m tests.fuzz.crdt_worker BATCH SEED COUNT``; prints one JSON line of
outcomes: ``applied``, ``rejected <code>``, or what else happened (which fails the test).
"""

from __future__ import annotations

import json
import random
import sys
import zlib
from collections import Counter
from collections.abc import Callable
from functools import cache

import pycrdt
from automerge import core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secsync.crdt import yjs_format as f
from secsync.crdt.automerge import AutomergeAdapter
from secsync.crdt.yjs import YjsAdapter
from secsync.errors import SnapshotApplyError, UpdateApplyError
from tests.crdt import yjs_build as b
from tests.factories import plain_yjs_doc

OUTCOMES: Counter[str] = Counter()


def yjs_corpus() -> tuple[list[bytes], bytes]:
    """Honest updates of a small document (text, formats, embeds, nested types, deletes)."""
    doc: pycrdt.Doc = pycrdt.Doc(client_id=1_234_567_890)  # a fixed id: a seed replays a run
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("t", type=pycrdt.Text)
    text.insert(0, "hello world")
    del text[2:4]
    text.insert(3, "xy", {"b": True})
    text.insert_embed(1, {"img": [1, 2]})
    array = doc.get("a", type=pycrdt.Array)
    array.append(1)
    array.append([1, {"x": 2}])
    array.append(pycrdt.Map({"k": "v"}))
    values = doc.get("m", type=pycrdt.Map)
    values["z"] = pycrdt.Text("abc")
    values["q"] = b"bin"
    del array[0]
    xml = doc.get("x", type=pycrdt.XmlFragment)
    xml.children.append(pycrdt.XmlElement("p", {"c": "1"}, [pycrdt.XmlText("hi")]))
    return updates, doc.get_update()


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out.append(rng.randrange(256))
            continue
        at = rng.randrange(len(out))
        op = rng.randrange(6)
        if op == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            del out[at:]
        elif op == 2:
            out.insert(at, rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)]))
        elif op == 3:
            out[at] = rng.randrange(256)
        elif op == 4:
            other = rng.choice(pool)
            start = rng.randrange(len(other))
            out[at:at] = other[start : start + rng.randint(1, 24)]
        else:
            del out[at]
    return bytes(out)


def feed_yjs(doc: pycrdt.Doc, changes: list[bytes], *, snapshot: bool = False) -> None:
    adapter = YjsAdapter(doc)
    before = (doc.get_state(), doc.get_update())
    try:
        if snapshot:
            adapter.apply_snapshot(changes[0])
        else:
            adapter.apply_changes(changes)
        OUTCOMES["applied"] += 1
    except (UpdateApplyError, SnapshotApplyError) as exc:
        after = (doc.get_state(), doc.get_update())
        OUTCOMES[f"rejected {exc.code}" if after == before else "rejected, document changed"] += 1
    finally:
        adapter.close()


def yjs_mutated(seed: int, count: int) -> None:
    rng = random.Random(seed)
    updates, state = yjs_corpus()
    pool = [*updates, state]
    for _ in range(count):
        data = mutate(rng, rng.choice(pool), pool)
        doc: pycrdt.Doc = plain_yjs_doc()
        if rng.random() < 0.5:
            doc.apply_update(updates[0])
        how = rng.randrange(3)
        if how == 1:
            feed_yjs(doc, [rng.choice(updates), data])
        else:
            feed_yjs(doc, [data], snapshot=how == 2)


def _hostile_content() -> st.SearchStrategy[bytes]:
    huge = st.integers(2**20, 2**64 - 1)
    deep = st.integers(f.MAX_VALUE_DEPTH - 2, 40_000)
    return st.one_of(
        deep.map(b.deep_any_update),
        deep.map(b.deep_embed_update),
        st.integers(f.MAX_TYPE_DEPTH - 2, f.MAX_TYPE_DEPTH + 40).map(b.type_chain_update),
        huge.map(lambda n: b.update(b.root_item(f.ANY, b.var_uint(1) + b"\x75" + b.var_uint(n)))),
        huge.map(lambda n: b.update(b.root_item(f.ANY, b.var_uint(1) + b"\x76" + b.var_uint(n)))),
        huge.map(lambda n: b.update(b.root_item(f.ANY, b.var_uint(n)))),
        huge.map(lambda n: b.update(b.root_item(f.STRING, b.var_uint(n) + b"abc"))),
        huge.map(lambda n: b.update(b.root_item(f.DELETED, b.var_uint(n)))),
        huge.map(lambda n: b.var_uint(1) + b.var_uint(n) + b.var_uint(b.CLIENT) + b"\x00"),
        huge.map(lambda n: b.update(b"\x00\x01", delete_set=b"\x01\x01" + b.var_uint(n))),
        st.tuples(st.integers(0, 2**33), st.integers(0, 2**33)).map(
            lambda cl: (
                b.update(b.root_item(f.STRING, b.var_string("x")), clock=cl[0]) + b.var_uint(cl[1])
            )
        ),
        st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(
            lambda ib: b.update(bytes([ib[0]]) + ib[1])
        ),
    )


def yjs_hostile(seed: int, count: int) -> None:
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=_hostile_content(), snapshot=st.booleans())
    def run(data: bytes, snapshot: bool) -> None:
        doc: pycrdt.Doc = plain_yjs_doc()
        doc.get("t", type=pycrdt.Text).insert(0, "kept")
        feed_yjs(doc, [data], snapshot=snapshot)

    run()


def automerge_corpus() -> tuple[list[bytes], bytes]:
    doc = core.Document()
    with doc.transaction() as tx:
        text = tx.put_object(core.ROOT, "text", core.ObjType.Text)
        tx.insert(text, 0, core.ScalarType.Str, "h")
        values = tx.put_object(core.ROOT, "m", core.ObjType.Map)
        tx.put(values, "x", core.ScalarType.Int, 5)
    with doc.transaction() as tx:
        tx.insert(text, 1, core.ScalarType.Str, "i")
        items = tx.put_object(values, "l", core.ObjType.List)
        tx.insert(items, 0, core.ScalarType.F64, 1.5)
        tx.delete(text, 0)
    return [change.bytes for change in doc.get_changes([])], doc.save()


def automerge_mutated(seed: int, count: int) -> None:
    rng = random.Random(seed)
    changes, saved = automerge_corpus()
    pool = [*changes, saved]
    for _ in range(count):
        data = mutate(rng, rng.choice(pool), pool)
        doc = core.Document()
        adapter = AutomergeAdapter(doc)
        if rng.random() < 0.5:
            adapter.apply_changes(changes[:1])
        before = (doc.get_heads(), doc.save())
        try:
            if rng.random() < 0.5:
                adapter.apply_changes([data])
            else:
                adapter.apply_snapshot(data)
            OUTCOMES["applied"] += 1
        except (UpdateApplyError, SnapshotApplyError) as exc:
            unchanged = (doc.get_heads(), doc.save()) == before
            OUTCOMES[f"rejected {exc.code}" if unchanged else "rejected, document changed"] += 1


def _uleb(value: int) -> bytes:
    return b.var_uint(value)


def _sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _chunk(chunk_type: int, body: bytes, length: int | None = None) -> bytes:
    declared = len(body) if length is None else length
    return b"\x85\x6f\x4a\x83" + bytes(4) + bytes([chunk_type]) + _uleb(declared) + body


def _change_body(columns: list[tuple[int, bytes]]) -> bytes:
    head = b"\x00" + _uleb(16) + bytes(range(16)) + b"\x01\x01\x00\x00\x00"
    specs = b"".join(_uleb(spec) + _uleb(len(data)) for spec, data in columns)
    return head + _uleb(len(columns)) + specs + b"".join(data for _, data in columns)


@cache
def _deflate_bomb() -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(bytes(80 * 1024 * 1024)) + packer.flush()


def _hostile_automerge() -> st.SearchStrategy[tuple[bytes, bool]]:
    runs = st.integers(1, 2**40)
    action = runs.map(lambda n: _sleb(n) + b"\x01")
    nulls = runs.map(lambda n: b"\x00" + _uleb(n))
    column = st.one_of(action, nulls, st.binary(max_size=12))
    spec = st.sampled_from([66, 66 | 0x08, 1, 2, 52, 86, 87, 112])
    change = st.lists(st.tuples(spec, column), max_size=4).map(_change_body)
    lying = st.tuples(st.sampled_from([0, 1, 2, 3, 7]), change, st.integers(0, 2**40)).map(
        lambda t: _chunk(t[0], t[1], t[2])
    )
    honest_type = st.tuples(st.sampled_from([1, 2]), change).map(lambda t: _chunk(*t))
    bomb = st.just(b"").map(lambda _: _chunk(2, _deflate_bomb()))
    tail = st.tuples(honest_type, st.binary(max_size=16)).map(lambda t: t[0] + t[1])
    return st.tuples(st.one_of(honest_type, lying, bomb, tail), st.booleans())


def automerge_hostile(seed: int, count: int) -> None:
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_hostile_automerge())
    def run(case: tuple[bytes, bool]) -> None:
        data, snapshot = case
        doc = core.Document()
        adapter = AutomergeAdapter(doc)
        before = doc.get_heads()
        try:
            if snapshot:
                adapter.apply_snapshot(data)
            else:
                adapter.apply_changes([data])
            OUTCOMES["applied"] += 1
        except (UpdateApplyError, SnapshotApplyError) as exc:
            unchanged = doc.get_heads() == before
            OUTCOMES[f"rejected {exc.code}" if unchanged else "rejected, document changed"] += 1

    run()


BATCHES: dict[str, Callable[[int, int], None]] = {
    "yjs-mutated": yjs_mutated,
    "yjs-hostile": yjs_hostile,
    "automerge-mutated": automerge_mutated,
    "automerge-hostile": automerge_hostile,
}


def main(argv: list[str]) -> None:
    batch, seed, count = argv[0], int(argv[1]), int(argv[2])
    try:
        BATCHES[batch](seed, count)
    except BaseException as exc:  # reported, not raised: the test reads the outcome
        OUTCOMES[f"escaped {type(exc).__name__}: {exc}"[:200]] += 1
    print(json.dumps(dict(OUTCOMES)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
