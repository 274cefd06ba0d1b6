"""Opening a document whose snapshot subject holds many snapshots: before (the whole subject
read and weighed) and now (read back from the end until the choice is settled).

    python -m benchmarks.open_bound [--size 100000] [--counts 10,1000,3000]

Also section 10 of ``python -m benchmarks.run`` (``--only open_bound``).

A hostile member stores ``count`` validly signed snapshots of ``size`` bytes, each a child of
the one before, as fast as the broker takes them; then a fresh client opens the document. The
"before" path is the previous ``Document._fetch_latest``, kept here verbatim for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python benchmarks/open_bound.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pycrdt

import secsync
from benchmarks.report.format import table
from secsync.config import SecsyncConfig
from secsync.errors import AccessError, SecsyncError, WrongKeyError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.messages import INITIAL_PARENT_PROOF, Snapshot, SnapshotPublicData
from secsync.servers.broker import Broker
from secsync.transport import chunks
from secsync.transport.document import Document, _Latest
from secsync.transport.subjects import DocumentSubjects

KEY = crypto.generate_key()


async def _fetch_latest_whole(self: Any, passed_over: frozenset[bytes] = frozenset()) -> Any:
    """``Document._fetch_latest`` before bounded loading: the whole snapshot subject."""
    stored_snapshots = await self._read(self.subjects.snapshot, 1)
    self.load_search = None
    self.bench_bytes = sum(len(m.data) for m in stored_snapshots)
    assembler = chunks.Reassembler()
    seen: set[bytes] = set()
    candidates: list[Snapshot] = []
    sequences: list[int] = []
    for message in stored_snapshots:
        try:
            data = assembler.feed(message.sequence, message.data, message.headers)
        except SecsyncError:
            continue
        if data is None:
            continue
        decoded = self._decode(data)
        if not isinstance(decoded, Snapshot) or decoded.snapshot_id in seen:
            continue
        seen.add(decoded.snapshot_id)
        if decoded.snapshot_id in passed_over:
            continue
        candidates.append(decoded)
        sequences.append(message.sequence)
    judged = stored_snapshots[-1].sequence if stored_snapshots else 0
    choice = self.session.choose(candidates)
    if choice.index is None:
        if choice.unreadable:
            for rejection in choice.rejected:
                if isinstance(rejection.error, AccessError):
                    raise rejection.error
            raise WrongKeyError("no stored snapshot decrypts")
        return _Latest(None, 0, judged, await self._read(self.subjects.stored, 1))
    snapshot, sequence = candidates[choice.index], sequences[choice.index]
    rest = await self._read(self.subjects.stored, sequence + 1)
    rest = [m for m in rest if m.subject != self.subjects.snapshot or m.sequence > judged]
    return _Latest(snapshot, sequence, judged, rest)


def _snapshot(
    signer: crypto.SigningKeyPair, doc_id: str, size: int, parent: Snapshot | None
) -> Snapshot:
    ydoc = pycrdt.Doc()
    ydoc.get("text", type=pycrdt.Text).insert(0, crypto.generate_key().hex() * (size // 64))
    public = SnapshotPublicData(
        doc_id=doc_id,
        pub_key=signer.public_key,
        snapshot_id=crypto.generate_id(),
        parent_snapshot_id=parent.snapshot_id if parent else b"",
        parent_snapshot_proof=parent.info().child_proof() if parent else INITIAL_PARENT_PROOF,
        parent_snapshot_update_clocks={},
    )
    return sealing.seal(public, ydoc.get_update(), KEY, signer)


async def _fill(url: str, config: SecsyncConfig, doc_id: str, count: int, size: int) -> float:
    signer = crypto.SigningKeyPair.generate()
    previous: Snapshot | None = None
    payloads = []
    for _ in range(count):
        previous = _snapshot(signer, doc_id, size, previous)
        payloads.append(wire.encode(previous, include_doc_id=False))
    subject = DocumentSubjects.of(doc_id, config.subject_root).snapshot
    async with secsync.connect(url, config=config) as client:
        started = time.perf_counter()
        for start in range(0, count, 128):
            await asyncio.gather(
                *(client.js.publish(subject, p) for p in payloads[start : start + 128])
            )
        return time.perf_counter() - started


async def _open(url: str, config: SecsyncConfig, doc_id: str) -> tuple[float, int, str]:
    async with secsync.connect(url, config=config) as client:
        started = time.perf_counter()
        try:
            doc = await client.open(
                doc_id, key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=pycrdt.Doc()
            )
        except SecsyncError as exc:
            return time.perf_counter() - started, 0, f"failed: {exc}"
        elapsed = time.perf_counter() - started
        read = doc.load_search.bytes if doc.load_search else getattr(doc, "bench_bytes", 0)
        await doc.close()
        return elapsed, read, "ok"


async def measure(counts: list[int], size: int) -> list[dict[str, Any]]:
    """Open time and bytes read, before and now, for each count of stored snapshots."""
    config = SecsyncConfig()
    broker = Broker()
    await broker.astart()
    rows = []
    try:
        for count in counts:
            doc_id = f"open-bound-{count}"
            written = await _fill(broker.url, config, doc_id, count, size)
            now = await _open(broker.url, config, doc_id)
            bounded = Document._fetch_latest
            Document._fetch_latest = _fetch_latest_whole  # type: ignore[method-assign]
            try:
                before = await _open(broker.url, config, doc_id)
            finally:
                Document._fetch_latest = bounded  # type: ignore[method-assign]
            rows.append(
                {
                    "count": count,
                    "size": size,
                    "written_s": written,
                    "before": {"s": before[0], "bytes": before[1], "outcome": before[2]},
                    "now": {"s": now[0], "bytes": now[1], "outcome": now[2]},
                }
            )
            print(f"  open_bound: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        await broker.astop()
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    """The benchmark suite's section (``benchmarks.run``)."""
    counts, size = ([10, 300], 20_000) if quick else ([10, 1000, 3000], 100_000)
    return {"rows": asyncio.run(measure(counts, size))}


def _cell(side: dict[str, Any]) -> str:
    if side["outcome"] == "ok":
        return f"{side['s']:.3f} s"
    return f"{side['outcome']} after {side['s']:.1f} s"


def render(measured: dict[str, Any]) -> str:
    rows = measured.get("rows") or []
    out = [
        "## Opening with many stored snapshots",
        "",
        "A hostile member stores `count` validly signed snapshots, each a child of the one "
        "before, as fast as the broker takes them (written in); a fresh client then opens the "
        "document. *Before*: the whole snapshot subject read and weighed (the previous "
        "`Document._fetch_latest`, kept in `benchmarks/open_bound.py`); *now*: read back from "
        "the end until the choice is settled. Bytes are the snapshot messages read.",
        "",
    ]
    base = rows[0]["now"]["s"] if rows else 0.0
    out += table(
        [
            "snapshots",
            "size",
            "written in",
            "open before",
            "read before",
            "open now",
            "read now",
            "now vs 10",
        ],
        [
            [
                row["count"],
                f"{row['size'] / 1000:.0f} kB",
                f"{row['written_s']:.1f} s",
                _cell(row["before"]),
                f"{row['before']['bytes'] / 1e6:.1f} MB",
                _cell(row["now"]),
                f"{row['now']['bytes'] / 1e6:.2f} MB",
                f"{row['now']['s'] / base:.2f}x" if base else "-",
            ]
            for row in rows
        ],
        "rrrrrrrr",
    )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--counts", default="10,1000,3000")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    print(render({"rows": asyncio.run(measure(counts, args.size))}))


if __name__ == "__main__":
    main()
