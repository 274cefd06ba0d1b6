"""cProfile of the load and create hot paths (deterministic profiler from the standard library).

cProfile adds a fixed cost to every Python call, so absolute times are inflated (the report
gives the inflation); the ranking and the call counts per update are what matter.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import DOC_ID, FeedAdapter, Stream, clock, no_auto_snapshots


def _name(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func  # a built-in, e.g. "<built-in method _sodium.crypto_sign_open>"
    path = Path(filename)
    parts = path.parts
    for anchor in ("site-packages", "secsync", "benchmarks"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            start = index + 1 if anchor == "site-packages" else index
            return f"{'/'.join(parts[start:])}:{line} {func}"
    # the standard library: "json/__init__.py" rather than "__init__.py"
    shown = f"{parts[-2]}/{path.name}" if path.name == "__init__.py" else path.name
    return f"{shown}:{line} {func}"


def profile_load(stream: Stream, top: int = 18) -> dict[str, Any]:
    """``DocumentSession.receive_many`` over real trace updates, after the snapshot."""
    import pycrdt

    from secsync.protocol import crypto, wire
    from secsync.protocol.session import DocumentSession

    def prepare() -> Callable[[], Any]:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.get("text", type=pycrdt.Text)
        session = DocumentSession(stream.doc_id, crypto.SigningKeyPair.generate(), stream.key, doc)
        session.load(wire.decode(stream.snapshot, doc_id=stream.doc_id), now=0.0)

        def work() -> None:
            session.receive_many(stream.updates, now=0.0)

        return work

    return _profile_pair(prepare, len(stream.updates), top)


def profile_create(changes: Sequence[bytes], top: int = 18) -> dict[str, Any]:
    """The sender: ``data_to_send`` + ``wire.encode`` + the acknowledgement, per update."""
    from secsync.protocol import crypto, wire
    from secsync.protocol.session import DocumentSession

    def prepare() -> Callable[[], Any]:
        adapter = FeedAdapter()
        session = DocumentSession(
            DOC_ID,
            crypto.SigningKeyPair.generate(),
            crypto.generate_key(),
            adapter,
            config=no_auto_snapshots(),
        )
        session.load(None, now=0.0)
        snapshot = session.create_snapshot()
        session.snapshot_stored(snapshot.snapshot_id, now=0.0)
        ref = snapshot.snapshot_id

        def work() -> None:
            for change in changes:
                adapter.local.append(change)
                (message,) = session.data_to_send()
                wire.encode(message, include_doc_id=False)
                session.update_stored(ref, message.clock)

        return work

    return _profile_pair(prepare, len(changes), top)


def _profile_pair(prepare: Callable[[], Callable[[], Any]], items: int, top: int) -> dict[str, Any]:
    """Time ``prepare()()`` plainly, then profile a fresh ``prepare()()``."""
    plain_work = prepare()
    gc.collect()
    start = clock()
    plain_work()
    plain = clock() - start
    work = prepare()
    profiler = cProfile.Profile()
    gc.collect()
    start = clock()
    profiler.enable()
    work()
    profiler.disable()
    profiled = clock() - start
    stats = pstats.Stats(profiler)
    rows = []
    for key, (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = _name(key)
        if name.startswith("benchmarks/") or "of '_lsprof.Profiler'" in name:
            continue
        rows.append(
            {
                "function": name,
                "calls_per_update": nc / items,
                "tottime_us": tt / items * 1e6,
                "cumtime_us": ct / items * 1e6,
            }
        )
    return {
        "items": items,
        "plain_us": plain / items * 1e6,
        "profiled_us": profiled / items * 1e6,
        "by_cumulative": sorted(rows, key=lambda r: -r["cumtime_us"])[:top],
        "by_self": sorted(rows, key=lambda r: -r["tottime_us"])[:top],
        "all": rows,
    }
