"""The automerge-paper editing trace, split between two authors, converges."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pycrdt
import pytest

from secsync.config import SecsyncConfig
from secsync.protocol.messages import Snapshot
from tests.factories import AMPeer, MemoryBroker, Participant, YPeer

TRACE = Path(__file__).resolve().parents[2] / "data" / "automerge-paper.json.gz"


def load_trace() -> dict:
    with gzip.open(TRACE, "rt", encoding="utf-8") as f:
        return json.load(f)


def expected_text(txns: list[dict]) -> str:
    text = ""
    for txn in txns:
        for pos, delete, insert in txn["patches"]:
            text = text[:pos] + insert + text[pos + delete :]
    return text


def apply_yjs(peer: YPeer, txn: dict) -> None:
    text: pycrdt.Text = peer.text
    with peer.doc.transaction():
        for pos, delete, insert in txn["patches"]:
            if delete:
                del text[pos : pos + delete]
            if insert:
                text.insert(pos, insert)


def apply_automerge(peer: AMPeer, txn: dict) -> None:
    from automerge import core

    with peer.doc.transaction() as tx:
        found = peer.doc.get(core.ROOT, "text")
        obj = found[1] if found else tx.put_object(core.ROOT, "text", core.ObjType.Text)
        for pos, delete, insert in txn["patches"]:
            for _ in range(delete):
                tx.delete(obj, pos)
            for offset, char in enumerate(insert):
                tx.insert(obj, pos + offset, core.ScalarType.Str, char)


@pytest.mark.parametrize(("kind", "count"), [("yjs", 20_000), ("automerge", 5_000)])
def test_trace_split_between_two_authors_converges(kind: str, count: int) -> None:
    trace = load_trace()
    txns = trace["txns"][:count]
    expected = expected_text(txns)
    broker = MemoryBroker()
    cls, apply = (YPeer, apply_yjs) if kind == "yjs" else (AMPeer, apply_automerge)
    peers = [cls(config=SecsyncConfig(snapshot_after_updates=100)) for _ in range(2)]
    parts = [Participant(p.session, broker) for p in peers]
    block = 500
    for start in range(0, len(txns), block):
        author = (start // block) % 2
        parts[author].pull()  # see the other author's last block before editing after it
        for i, txn in enumerate(txns[start : start + block]):
            apply(peers[author], txn)  # type: ignore[operator]
            if i % 25 == 24:
                parts[author].push()
        parts[author].push()
    for part in parts:
        part.sync()
    assert peers[0].content == peers[1].content == expected
    snapshots = sum(isinstance(m, Snapshot) for m in broker.log)
    assert snapshots > 1  # the run went through several snapshot epochs
    assert len(broker.log) > count // 25 // 2


def test_trace_reader_reproduces_the_recorded_end() -> None:
    trace = load_trace()
    assert len(trace["txns"]) == 259_778
    assert expected_text(trace["txns"]) == trace["endContent"]
