"""How often to write a snapshot: what a fresh reader loads against what the writer pays.

A fresh reader of a document loads its latest snapshot and every update stored after it; with
automatic snapshots every K updates (``snapshot_after_updates``) it loads at most K - 1 of
them. For K in a range and two document sizes (the automerge-paper trace after its first
10,000 transactions, and after all but the last 5,000), measured in process on the real session
path:

* **worst-case load**: a fresh ``DocumentSession`` loads the snapshot, then ``receive_many`` of
  K real trace updates after it (what ``open`` does, without the network; section 4's cold-open
  table gives the open itself beside the same ``receive_many``);
* **writer cost**: ``DocumentSession.create_snapshot`` of that state (encode, encrypt, sign)
  divided by K, beside creating one update (``data_to_send``);
* **bytes stored**: the snapshot's bytes divided by K, beside one update's.

Run alone with ``python -m benchmarks.snapshot_interval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from benchmarks.common import clock, load_trace, median, replay_yjs

if TYPE_CHECKING:
    from benchmarks.sections import RunContext

INTERVALS = (100, 250, 500, 1_000, 2_000, 5_000)
QUICK_INTERVALS = (100, 500)


def _state_after(changes: Sequence[bytes]) -> bytes:
    import pycrdt

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("text", type=pycrdt.Text)
    for change in changes:
        doc.apply_update(change)
    return doc.get_update()


def measure(
    changes: Sequence[bytes], at: int, intervals: Sequence[int], reps: int
) -> dict[str, Any]:
    """The figures for the document after ``changes[:at]``, updates ``changes[at:]``."""
    from benchmarks.common import build_stream
    from secsync.config import SecsyncConfig
    from secsync.protocol import crypto, wire
    from secsync.protocol.session import DocumentSession

    state = _state_after(changes[:at])
    stream = build_stream(changes[at : at + max(intervals)], state=state, doc_id="bench")
    snapshot = wire.decode(stream.snapshot, doc_id="bench")
    config = SecsyncConfig(snapshot_after_updates=0, snapshot_after_bytes=0)

    def loaded(count: int) -> float:
        import pycrdt

        ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
        ydoc.get("text", type=pycrdt.Text)
        session = DocumentSession(
            "bench", crypto.SigningKeyPair.generate(), stream.key, ydoc, config=config
        )
        start = clock()
        session.load(snapshot, now=0.0)
        if count:
            session.receive_many(stream.updates[:count], now=0.0)
        return clock() - start

    def snapshot_created() -> float:
        import pycrdt

        ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
        ydoc.get("text", type=pycrdt.Text)
        ydoc.apply_update(state)
        session = DocumentSession(
            "bench", crypto.SigningKeyPair.generate(), stream.key, ydoc, config=config
        )
        session.load(None, now=0.0)
        start = clock()
        session.create_snapshot()
        return clock() - start

    create_ms = median([snapshot_created() for _ in range(reps)]) * 1e3
    load_ms = median([loaded(0) for _ in range(reps)]) * 1e3
    count = len(stream.updates)
    update_create_us = stream.create_elapsed[count] / count * 1e6
    rows = []
    for interval in intervals:
        worst_ms = median([loaded(interval - 1) for _ in range(reps)]) * 1e3
        rows.append(
            {
                "interval": interval,
                "worst_load_ms": worst_ms,
                "writer_us_per_update": create_ms * 1e3 / interval,
                "snapshot_bytes_per_update": len(stream.snapshot) / interval,
            }
        )
    return {
        "transactions": at,
        "snapshot_bytes": len(stream.snapshot),
        "snapshot_create_ms": create_ms,
        "snapshot_load_ms": load_ms,
        "update_bytes": sum(map(len, stream.updates)) / len(stream.updates),
        "update_create_us": update_create_us,
        "rows": rows,
    }


def run(*, quick: bool, context: RunContext | None = None) -> dict[str, Any]:
    if context is not None:
        changes = context.replay.changes
    else:
        changes = replay_yjs(load_trace()["txns"], []).changes
    intervals = QUICK_INTERVALS if quick else INTERVALS
    reps = 1 if quick else 3
    small = min(10_000, len(changes) // 4)
    large = len(changes) - max(intervals)
    return {
        "documents": [
            measure(changes, small, intervals, reps),
            measure(changes, large, intervals, reps),
        ]
    }


def render(numbers: dict[str, Any]) -> str:
    from benchmarks.report.format import f0, f1, table

    lines = [
        "## How often to write a snapshot",
        "",
        "What a fresh reader loads at worst with a snapshot every K updates (the snapshot, then "
        "K - 1 updates, in process: `load` + `receive_many` of real trace updates), against what "
        "the snapshots cost the writer (one `create_snapshot` of that state spread over K updates) "
        "and the stream (the snapshot's bytes spread over K). Median of 3. The default is "
        "`snapshot_after_updates=500` (or 4 MiB of update ciphertext, whichever comes first).",
        "",
    ]
    for document in numbers["documents"]:
        created, load = f1(document["snapshot_create_ms"]), f1(document["snapshot_load_ms"])
        update_bytes, update_us = f0(document["update_bytes"]), f1(document["update_create_us"])
        lines += [
            f"Document after {document['transactions']:,} transactions: snapshot "
            f"{document['snapshot_bytes']:,} B, created in {created} ms, loaded in {load} ms; "
            f"an update is {update_bytes} B, created in {update_us} µs.",
            "",
        ]
        rows = [
            [
                f"{row['interval']:,}",
                f1(row["worst_load_ms"]),
                f"{row['worst_load_ms'] / document['snapshot_load_ms']:.1f}x",
                f1(row["writer_us_per_update"]),
                f0(row["snapshot_bytes_per_update"]),
            ]
            for row in document["rows"]
        ]
        lines += table(
            [
                "snapshot every K updates",
                "worst-case load ms",
                "of the snapshot alone",
                "writer µs per update for snapshots",
                "snapshot B per update",
            ],
            rows,
        )
    lines += _reading(numbers["documents"])
    return "\n".join(lines)


def _reading(documents: Sequence[dict[str, Any]]) -> list[str]:
    """What the figures say about the default of 500, in this run's numbers."""
    from benchmarks.report.format import f1

    def row(document: dict[str, Any], interval: int) -> dict[str, Any] | None:
        return next((r for r in document["rows"] if r["interval"] == interval), None)

    small, large = documents[0], documents[-1]
    picks = [(d, row(d, 250), row(d, 500), row(d, 1_000)) for d in (small, large)]
    if any(None in p for p in picks):
        return []
    parts = []
    for document, fewer, chosen, more in picks:
        assert fewer is not None and chosen is not None and more is not None
        share = chosen["writer_us_per_update"] / document["update_create_us"] * 100
        parts.append(
            f"after {document['transactions']:,} transactions, every 500 updates a fresh "
            f"reader loads at worst {f1(chosen['worst_load_ms'])} ms "
            f"({chosen['worst_load_ms'] / document['snapshot_load_ms']:.1f}x the snapshot alone) "
            f"and the writer pays {f1(chosen['writer_us_per_update'])} µs per update "
            f"({share:.0f} % of creating one); every 1,000, {f1(more['worst_load_ms'])} ms for "
            f"{f1(more['writer_us_per_update'])} µs; every 250, {f1(fewer['worst_load_ms'])} ms "
            f"for {f1(fewer['writer_us_per_update'])} µs"
        )
    return [
        "Reading this run: " + "; ".join(parts) + ". The default stays 500 updates, chosen for "
        "the large document, where halving the interval doubles the writer's and the stream's "
        "share and doubling it multiplies the reader's worst case; for a small document the "
        "snapshots cost so little that a shorter interval would serve its readers better, so an "
        "interval that follows the document's size (not built) is the next step. The 4 MiB "
        "byte bound only matters for large updates.",
        "",
    ]


if __name__ == "__main__":
    print(render(run(quick=False)))
