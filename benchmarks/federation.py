"""Latency across a super-cluster: two regions of three nodes joined by gateways, on loopback.

A stream homed in region ``b`` (placed by tag, three replicas there). From a client of each
region: raw nats-py acknowledged publishes (sequential, one at a time) and secsync edits (one
update per edit, ``flush()`` after each) with their p50/p99, and the delay from an edit in one
region to its apply in the other. Gateways on loopback add no distance, so the difference
between the regions is the extra hops (client → region a → gateway → region b leader and back),
not the speed of light between real regions: add the real round trip between your regions.

    python -m benchmarks.federation [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import median, percentile

HOME, AWAY = "b", "a"
STREAM = "BENCH_FED"


def _stats(samples: Sequence[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in samples]
    return {
        "n": len(ms),
        "p50_ms": median(ms),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


async def _raw_publishes(url: str, subject: str, count: int) -> dict[str, float]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        payload = secrets.token_bytes(250)
        samples = []
        for _ in range(count + 20):
            started = time.perf_counter()
            await js.publish(subject, payload)
            samples.append(time.perf_counter() - started)
        return _stats(samples[20:])  # the first ones include connection warm-up
    finally:
        await nc.close()


async def _secsync_edits(supercluster: Any, writer_region: str, edits: int) -> dict[str, Any]:
    """Edits in ``writer_region`` (flush after each), read in the other region."""
    import pycrdt

    import secsync
    from secsync.config import SecsyncConfig
    from secsync.servers.region import region_tag

    config = SecsyncConfig(
        stream_name=STREAM,
        subject_root="benchfed",
        stream_replicas=3,
        stream_placement_tags=(region_tag(HOME),),
        batch_interval=0.0,
    )
    reader_region = AWAY if writer_region == HOME else HOME
    key = secsync.generate_key()
    doc_id = f"fed-{writer_region}-{secrets.token_hex(4)}"
    wdoc: pycrdt.Doc[Any] = pycrdt.Doc()
    rdoc: pycrdt.Doc[Any] = pycrdt.Doc()
    wtext = wdoc.get("text", type=pycrdt.Text)
    rtext = rdoc.get("text", type=pycrdt.Text)
    applied: dict[int, float] = {}
    rtext.observe(lambda _e: applied.setdefault(len(rtext), time.perf_counter()))
    async with (
        secsync.connect(supercluster.region_urls(writer_region), config=config) as wclient,
        secsync.connect(supercluster.region_urls(reader_region), config=config) as rclient,
    ):
        writer = await wclient.open(
            doc_id, key=key, signing_key=secsync.SigningKeyPair.generate(), crdt=wdoc
        )
        reader = await rclient.open(
            doc_id, key=key, signing_key=secsync.SigningKeyPair.generate(), crdt=rdoc
        )
        # The first edit after the reader opened: a live consumer created moments ago in
        # another region can lose its first delivery (the deliver subject's interest has not
        # crossed the gateway yet); nats-py's ordered consumer heals at the next heartbeat.
        opened = time.perf_counter()
        wtext.insert(0, "#")
        await writer.flush(timeout=30)
        while len(rtext) < 1:
            await reader.next_event(timeout=30)
        first_apply = time.perf_counter() - opened
        applied.clear()
        stored, sent = [], []
        for _ in range(edits):
            wtext.insert(len(wtext), "x")
            started = time.perf_counter()
            sent.append((started, len(wtext)))
            await writer.flush(timeout=30)
            stored.append(time.perf_counter() - started)
        deadline = time.monotonic() + 30
        while len(rtext) < edits + 1 and time.monotonic() < deadline:
            await reader.next_event(timeout=30)
        crossed = [applied[length] - at for at, length in sent if length in applied]
        await writer.close()
        await reader.close()
    if len(crossed) != edits:
        raise RuntimeError(f"the reader applied {len(crossed)} of {edits} edits")
    return {
        "stored": _stats(stored),
        "applied_other_region": _stats(crossed),
        "first_apply_ms": first_apply * 1e3,
    }


async def _measure(supercluster: Any, *, publishes: int, edits: int) -> dict[str, Any]:
    import nats
    from nats.js import api

    from secsync.servers.region import region_tag

    nc = await nats.connect(supercluster.region_urls(HOME))
    try:
        js = nc.jetstream()
        await js.add_stream(
            name="BENCH_RAW",
            subjects=["benchraw.>"],
            num_replicas=3,
            placement=api.Placement(tags=[region_tag(HOME)]),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = await js.stream_info("BENCH_RAW")
            if info.cluster is not None and info.cluster.leader:
                break
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    results: dict[str, Any] = {"raw": {}, "secsync": {}}
    for region in (HOME, AWAY):
        results["raw"][region] = await _raw_publishes(
            supercluster.region_urls(region)[0], f"benchraw.{region}", publishes
        )
    for region in (HOME, AWAY):
        results["secsync"][region] = await _secsync_edits(supercluster, region, edits)
    return results


def run(*, quick: bool = False) -> dict[str, Any]:
    """Start a super-cluster, measure, stop it; every figure of the federation section."""
    from secsync.servers.supercluster import SuperCluster

    started = time.monotonic()
    with SuperCluster() as supercluster:
        ready_s = time.monotonic() - started
        results = asyncio.run(
            _measure(
                supercluster,
                publishes=200 if quick else 1000,
                edits=100 if quick else 500,
            )
        )
    results["ready_s"] = ready_s
    results["home"], results["away"] = HOME, AWAY
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.federation")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    from benchmarks.e2e import quiet_logs

    quiet_logs()
    print(json.dumps(run(quick=args.quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
