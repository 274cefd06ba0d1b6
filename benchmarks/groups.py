"""Closed groups at 10, 100 and 1,000 members: snapshot size, and the cost of founding,
joining and keeping up (membership chain verified from the founders).

    python -m benchmarks.groups

Join: a member's first snapshot of the group (open its sealed key among everyone's, decrypt
and verify the whole chain). Follow: the next snapshot of the same epoch (the chain is known).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # python benchmarks/groups.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pycrdt

from benchmarks.report.format import table
from secsync.access.group import Group
from secsync.access.membership import Role
from secsync.protocol import crypto, wire
from secsync.protocol.messages import Snapshot
from secsync.protocol.session import DocumentSession

DOC_ID = "benchmark-groups"


def _session(signer: crypto.SigningKeyPair, founders: dict[bytes, Role]) -> DocumentSession:
    group = Group(signer, founders)
    return DocumentSession(DOC_ID, signer, group, pycrdt.Doc(), policy=group)


def measure(size: int, reps: int = 5) -> dict[str, float]:
    admin = crypto.SigningKeyPair.generate()
    others = [crypto.SigningKeyPair.generate() for _ in range(size - 1)]
    founders: dict[bytes, Role] = {admin.public_key: "admin"}
    founders |= {o.public_key: "writer" for o in others}
    last = max(others, key=lambda o: o.public_key)  # its key is sealed last: the slowest join
    found, join, follow, sizes = [], [], [], []
    for _ in range(reps):
        founder = _session(admin, founders)
        founder.load(None, now=0.0)
        founder.crdt.doc.get("text", type=pycrdt.Text).insert(0, "x")  # type: ignore[attr-defined]
        start = time.perf_counter()
        (first,) = founder.data_to_send()
        found.append(time.perf_counter() - start)
        assert isinstance(first, Snapshot)
        founder.snapshot_stored(first.snapshot_id, now=0.0)
        founder.request_snapshot()
        (second,) = founder.data_to_send()
        assert isinstance(second, Snapshot)
        sizes.append(len(wire.encode(first)))
        member = _session(last, founders)
        start = time.perf_counter()
        member.load(first, now=0.0)
        join.append(time.perf_counter() - start)
        assert member.active_snapshot is not None
        start = time.perf_counter()
        member.receive(second, now=0.0)
        follow.append(time.perf_counter() - start)
        assert member.active_snapshot.snapshot_id == second.snapshot_id
    return {
        "members": size,
        "snapshot_bytes": statistics.median(sizes),
        "found_ms": statistics.median(found) * 1000,
        "join_ms": statistics.median(join) * 1000,
        "follow_ms": statistics.median(follow) * 1000,
    }


def main() -> int:
    rows = []
    for size in (10, 100, 1000):
        r = measure(size)
        rows.append(
            [
                f"{size:,}",
                f"{r['snapshot_bytes']:,.0f}",
                f"{r['found_ms']:.1f}",
                f"{r['join_ms']:.1f}",
                f"{r['follow_ms']:.1f}",
            ]
        )
    headers = ["members", "snapshot (bytes)", "found (ms)", "join (ms)", "next snapshot (ms)"]
    print("\n".join(table(headers, rows, "rrrrr")).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
