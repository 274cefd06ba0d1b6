"""Shared pieces of the benchmark suite: sizes, timing, the editing trace, message builders."""

from __future__ import annotations

import gc
import gzip
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TRACE = REPO / "data" / "automerge-paper.json.gz"
DOC_ID = "benchmark-6e46c006-5541-11ec-bf63-0242ac130002"
EMPTY_YJS_STATE = b"\x00\x00"

clock = time.perf_counter


# --- sizes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much each section does; ``quick`` is a smoke run, ``full`` the published one."""

    name: str
    trace_points: tuple[int | None, ...]  # None: the whole trace
    trace_reps: int
    automerge_points: tuple[int, ...]
    micro_messages: int
    micro_reps: int
    parallel_messages: int
    parallel_reps: int
    snapshot_reps: int
    e2e_raw_sequential: int
    e2e_raw_pipelined: int
    e2e_raw_reps: int
    e2e_window: int
    e2e_one_per_edit: int
    e2e_saturated: int
    e2e_paced_seconds: float
    e2e_paced_rate: float
    e2e_burst: int
    e2e_burst_edits: int
    cold_counts: tuple[int, ...]
    cold_reps: int
    memory_point: int | None
    profile_messages: int


QUICK = Sizes(
    name="quick",
    trace_points=(2_000, 10_000),
    trace_reps=1,
    automerge_points=(2_000,),
    micro_messages=2_000,
    micro_reps=3,
    parallel_messages=2_000,
    parallel_reps=3,
    snapshot_reps=3,
    e2e_raw_sequential=300,
    e2e_raw_pipelined=3_000,
    e2e_raw_reps=1,
    e2e_window=256,
    e2e_one_per_edit=200,
    e2e_saturated=1_000,
    e2e_paced_seconds=1.0,
    e2e_paced_rate=100.0,
    e2e_burst=32,
    e2e_burst_edits=5_000,
    cold_counts=(0, 100, 1_000),
    cold_reps=2,
    memory_point=10_000,
    profile_messages=2_000,
)

FULL = Sizes(
    name="full",
    trace_points=(10_000, 50_000, None),
    trace_reps=3,
    automerge_points=(10_000, 50_000),
    micro_messages=10_000,
    micro_reps=5,
    parallel_messages=10_000,
    parallel_reps=5,
    snapshot_reps=7,
    e2e_raw_sequential=3_000,
    e2e_raw_pipelined=30_000,
    e2e_raw_reps=3,
    e2e_window=256,
    e2e_one_per_edit=2_000,
    e2e_saturated=5_000,
    e2e_paced_seconds=4.0,
    e2e_paced_rate=100.0,
    e2e_burst=32,
    e2e_burst_edits=50_000,
    cold_counts=(0, 1_000, 10_000, 100_000),
    cold_reps=5,
    memory_point=None,
    profile_messages=10_000,
)


# --- timing -------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def repeat(fn: Callable[[], Any], reps: int, *, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then ``reps`` timed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        gc.collect()
        start = clock()
        fn()
        times.append(clock() - start)
    return times


def per_item_us(fn: Callable[[], Any], items: int, reps: int, *, warmup: int = 1) -> float:
    """Median µs per item of ``fn``, which processes ``items`` items per call."""
    return median(repeat(fn, reps, warmup=warmup)) / items * 1e6


# --- the editing trace --------------------------------------------------------------------------


def load_trace() -> dict[str, Any]:
    with gzip.open(TRACE, "rt", encoding="utf-8") as f:
        trace: dict[str, Any] = json.load(f)
    return trace


def point_label(n: int | None, total: int) -> str:
    if n is None or n >= total:
        return f"full ({total:,})"
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}"


@dataclass
class YjsReplay:
    """The trace replayed into pycrdt, one Yjs update per transaction (the raw CRDT side)."""

    changes: list[bytes]
    texts: dict[int, str] = field(default_factory=dict)  # expected text after n transactions
    states: dict[int, bytes] = field(default_factory=dict)  # full state after n transactions
    elapsed: dict[int, float] = field(default_factory=dict)  # seconds to reach n transactions
    final_state: bytes = b""


def replay_yjs(
    txns: Sequence[dict[str, Any]], checkpoints: Sequence[int], state_points: Sequence[int] = ()
) -> YjsReplay:
    """Apply every transaction to a fresh ``pycrdt.Text``; collect the update of each one."""
    import pycrdt

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    changes: list[bytes] = []
    sub = doc.observe(lambda event: changes.append(event.update))
    result = YjsReplay(changes)
    wanted = set(checkpoints) | {len(txns)}
    states = set(state_points)
    gc.collect()
    paused = 0.0
    start = clock()
    for index, txn in enumerate(txns, start=1):
        with doc.transaction():
            for pos, delete, insert in txn["patches"]:
                if delete:
                    del text[pos : pos + delete]
                if insert:
                    text.insert(pos, insert)
        if index in wanted or index in states:
            pause = clock()
            if index in wanted:
                result.elapsed[index] = pause - start - paused
                result.texts[index] = str(text)
            if index in states:
                result.states[index] = doc.get_update()
            paused += clock() - pause
    doc.unobserve(sub)
    result.final_state = doc.get_update()
    if len(changes) != len(txns):
        raise RuntimeError(f"expected one update per transaction, got {len(changes)}")
    return result


def replay_automerge(txns: Sequence[dict[str, Any]]) -> tuple[list[bytes], str, float]:
    """The trace in Automerge: change bytes per transaction, final text, seconds."""
    from automerge import core

    doc = core.Document()
    heads: list[bytes] = []
    changes: list[bytes] = []
    obj = None
    gc.collect()
    start = clock()
    for txn in txns:
        with doc.transaction() as tx:
            if obj is None:
                obj = tx.put_object(core.ROOT, "text", core.ObjType.Text)
            for pos, delete, insert in txn["patches"]:
                for _ in range(delete):
                    tx.delete(obj, pos)
                for offset, char in enumerate(insert):
                    tx.insert(obj, pos + offset, core.ScalarType.Str, char)
        produced = doc.get_changes(heads)
        heads = doc.get_heads()
        changes.extend(change.bytes for change in produced)
    elapsed = clock() - start
    assert obj is not None
    return changes, doc.text(obj), elapsed


# --- secsync builders ---------------------------------------------------------------------------


class FeedAdapter:
    """A ``CrdtAdapter`` that hands the session precomputed changes.

    It is the sender's side without the CRDT: the cost measured is the session's (serialize,
    seal, bookkeeping), and the CRDT's own cost of producing the change is reported apart.
    """

    def __init__(self, state: bytes = EMPTY_YJS_STATE) -> None:
        self.local: list[bytes] = []
        self.state = state

    def take_local_changes(self) -> list[bytes]:
        changes, self.local = self.local, []
        return changes

    def apply_changes(self, changes: Sequence[bytes]) -> None:
        pass

    def apply_snapshot(self, state: bytes) -> None:
        pass

    def encode_state(self) -> bytes:
        return self.state

    def missing_from(self, state: bytes) -> list[bytes]:
        return []

    def close(self) -> None:
        pass


def no_auto_snapshots() -> Any:
    from secsync.config import SecsyncConfig

    return SecsyncConfig(snapshot_after_updates=0, snapshot_after_bytes=0)


@dataclass
class Stream:
    """What one author's session sent: the initial snapshot and one update per change."""

    key: bytes
    doc_id: str
    author: Any  # SigningKeyPair
    snapshot: bytes  # native wire form, docId left out (as the transport stores it)
    updates: list[bytes]
    create_elapsed: dict[int, float]  # seconds of data_to_send + encode, cumulative
    ack_elapsed: float
    messages: list[Any] = field(default_factory=list)


def build_stream(
    changes: Sequence[bytes],
    *,
    state: bytes = EMPTY_YJS_STATE,
    checkpoints: Sequence[int] = (),
    key: bytes | None = None,
    doc_id: str = DOC_ID,
    keep_messages: bool = False,
) -> Stream:
    """Run the sender's real session path: one update per change, timed per update.

    Create = ``session.data_to_send()`` (serialize, seal: encrypt + sign) + ``wire.encode``;
    the acknowledgement bookkeeping (``update_stored``) is timed apart.
    """
    from secsync.protocol import crypto, wire
    from secsync.protocol.session import DocumentSession

    key = key or crypto.generate_key()
    author = crypto.SigningKeyPair.generate()
    adapter = FeedAdapter(state)
    session = DocumentSession(doc_id, author, key, adapter, config=no_auto_snapshots())
    session.load(None, now=0.0)
    snapshot = session.create_snapshot()
    session.snapshot_stored(snapshot.snapshot_id, now=0.0)
    snapshot_id = snapshot.snapshot_id
    encode = wire.encode
    wanted = set(checkpoints) | {len(changes)}
    create_elapsed: dict[int, float] = {}
    updates: list[bytes] = []
    messages: list[Any] = []
    total = 0.0
    acks = 0.0
    gc.collect()
    for index, change in enumerate(changes, start=1):
        adapter.local.append(change)
        start = clock()
        (message,) = session.data_to_send()
        payload = encode(message, include_doc_id=False)
        middle = clock()
        session.update_stored(snapshot_id, message.clock)
        acks += clock() - middle
        total += middle - start
        updates.append(payload)
        if keep_messages:
            messages.append(message)
        if index in wanted:
            create_elapsed[index] = total
    return Stream(
        key=key,
        doc_id=doc_id,
        author=author,
        snapshot=wire.encode(snapshot, include_doc_id=False),
        updates=updates,
        create_elapsed=create_elapsed,
        ack_elapsed=acks,
        messages=messages,
    )


# --- the machine and versions -------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine_info() -> dict[str, str]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    mhz = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "cpu MHz" in line),
        "",
    )
    meminfo = _read("/proc/meminfo")
    total_kib = next(
        (int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")),
        0,
    )
    info = {
        "cpu": model + (f" @ {float(mhz):.0f} MHz" if mhz else ""),
        "logical cores": str(os.cpu_count()),
        "usable cores": str(len(os.sched_getaffinity(0)))
        if hasattr(os, "sched_getaffinity")
        else "",
        "RAM": f"{total_kib / 1024 / 1024:.1f} GiB" if total_kib else "unknown",
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }
    return info


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def libsodium_version() -> str:
    """libsodium as PyNaCl bundles it (the wheel exports no version function)."""
    try:
        import ctypes

        import nacl._sodium as sodium

        lib = ctypes.CDLL(sodium.__file__)
        try:
            fn = lib.sodium_version_string
            fn.restype = ctypes.c_char_p
            return str(fn().decode())
        except AttributeError:
            pass
        features = []
        if hasattr(lib, "crypto_aead_aegis256_encrypt"):
            features.append("has AEGIS, so ≥ 1.0.19")
        bundled = {
            "1.6.2": "1.0.20-stable",
            "1.6.1": "1.0.20-stable",
            "1.6.0": "1.0.20-stable",
            "1.5.0": "1.0.18-stable",
        }.get(_dist_version("pynacl"))
        if bundled:
            features.append(f"{bundled} per the PyNaCl changelog")
        return "bundled in PyNaCl, version not exported" + (
            f" ({'; '.join(features)})" if features else ""
        )
    except Exception as exc:  # pragma: no cover - informational only
        return f"unknown ({type(exc).__name__})"


def nats_server_version() -> str:
    try:
        from secsync.servers.binary import find_nats_server

        out = subprocess.run(
            [str(find_nats_server()), "--version"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return (out.stdout or out.stderr).strip().removeprefix("nats-server: ")
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def versions() -> dict[str, str]:
    import secsync

    return {
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "secsync": getattr(secsync, "__version__", _dist_version("secsync")),
        "pynacl": _dist_version("pynacl"),
        "libsodium": libsodium_version(),
        "pycrdt": _dist_version("pycrdt"),
        "automerge": _dist_version("automerge"),
        "msgpack": _dist_version("msgpack"),
        "nats-py": _dist_version("nats-py"),
        "nats-server": nats_server_version(),
        "matplotlib": _dist_version("matplotlib"),
    }
