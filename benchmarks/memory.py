"""Peak RSS of loading the trace, each measurement in its own fresh process.

``ru_maxrss`` is a process's high-water mark, so every mode runs in a new interpreter that
imports the same modules (secsync and pycrdt) and reads its input from a file first; the report
gives the peak and the peak minus the RSS after reading the input.

    python -m benchmarks.memory MODE INPUT   # prints one JSON object
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO

MODES = ("idle", "raw", "secsync", "secsync-batches")

# Linux carries the RSS high-water mark of the address space a process replaces with execve
# into the new program's ru_maxrss, and a child spawned from this (large) process starts from
# a copy of it. A small launcher in between makes the grandchild start from the launcher's
# few megabytes instead, so its ru_maxrss is its own.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _hwm_kib() -> int:
    """VmHWM: the high-water mark of this address space (a cross-check of ru_maxrss)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _rss_kib() -> int:
    """Current resident set size (for the "after input" mark)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _write_frames(path: Path, frames: Sequence[bytes]) -> int:
    """Length-prefixed frames, read back one by one so that reading peaks at the data's size."""
    with open(path, "wb") as f:
        for frame in frames:
            f.write(len(frame).to_bytes(4, "little"))
            f.write(frame)
        return f.tell()


def _read_frames(path: str) -> list[bytes]:
    frames = []
    with open(path, "rb") as f:
        while header := f.read(4):
            frames.append(f.read(int.from_bytes(header, "little")))
    return frames


def _child(mode: str, path: str) -> dict[str, Any]:
    import pycrdt

    import secsync  # noqa: F401 - the same imports in every mode
    from benchmarks.e2e import quiet_logs
    from secsync.protocol import crypto, wire
    from secsync.protocol.events import UpdateApplied
    from secsync.protocol.session import DocumentSession

    quiet_logs()
    frames = _read_frames(path)
    meta = json.loads(frames[0])
    snapshot, items = frames[1], frames[2:]
    del frames
    after_input = _rss_kib()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    start = time.perf_counter()
    applied = 0
    if mode == "raw":
        for change in items:
            doc.apply_update(change)
        applied = len(items)
    elif mode.startswith("secsync"):
        doc_id = meta["doc_id"]
        session = DocumentSession(
            doc_id, crypto.SigningKeyPair.generate(), bytes.fromhex(meta["key"]), doc
        )
        session.load(wire.decode(snapshot, doc_id=doc_id), now=0.0)
        if mode == "secsync":
            events = session.receive_many(items, now=0.0)
            applied = sum(isinstance(e, UpdateApplied) for e in events)
        else:  # pages of 256, events dropped, as a consumer of the events would
            for first in range(0, len(items), 256):
                page = session.receive_many(items[first : first + 256], now=0.0)
                applied += sum(isinstance(e, UpdateApplied) for e in page)
    elapsed = time.perf_counter() - start
    return {
        "mode": mode,
        "applied": applied,
        "chars": len(text),
        "seconds": elapsed,
        "rss_after_input_kib": after_input,
        "peak_before_kib": peak_before,
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vm_hwm_kib": _hwm_kib(),
    }


def measure(stream: Any, changes: Sequence[bytes]) -> dict[str, Any]:
    """Run every mode in a fresh process on the same input; returns mode -> result."""
    results: dict[str, Any] = {}
    meta = json.dumps({"doc_id": stream.doc_id, "key": stream.key.hex()}).encode()
    with tempfile.TemporaryDirectory(prefix="secsync-bench-memory-") as tmp:
        sizes = {}
        for mode in MODES:
            path = Path(tmp) / f"{mode}.frames"
            items = changes if mode == "raw" else stream.updates
            sizes[mode] = _write_frames(path, [meta, stream.snapshot, *items])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    LAUNCHER,
                    sys.executable,
                    "-m",
                    "benchmarks.memory",
                    mode,
                    str(path),
                ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if out.returncode != 0:
                raise RuntimeError(f"memory child {mode} failed: {out.stderr[-2000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["input_bytes"] = sizes[mode]
            results[mode] = result
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in MODES:
        print(f"usage: python -m benchmarks.memory {{{','.join(MODES)}}} INPUT", file=sys.stderr)
        return 2
    print(json.dumps(_child(args[0], args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
