"""One process following many documents: a consumer per document against shared consumers.

A backend (an indexer, a backup, an assistant) opens N small documents it holds the key for
(a snapshot and three updates each, stored beforehand) in a process of its own, through
``secsync.connect`` with ``live_consumers="per_document"`` (the default) or ``"per_shard"``
(with ``presence=False``, as a backend runs). Measured:

* **open**: wall time to open all N (64 opens at a time), and CPU per document;
* **client memory**: the follower's RSS after the opens minus before, per document (the
  CRDT documents included, created before the first measurement);
* **idle**: the follower's CPU over 5 s with nothing written;
* **server**: nats-server's RSS growth and the stream's consumer count;
* **throughput**: updates (one character each, sealed by real sessions beforehand) published
  pipelined on random documents of the N; updates/s until the follower applied all of them.

Run alone with ``python -m benchmarks.service``; ``python -m benchmarks.service follow ...``
is the follower process.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from typing import Any

KEY_HEX = "00" * 32
IDLE_SECONDS = 5.0
CONCURRENT_OPENS = 64


def _rss_kb(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _doc_id(i: int) -> str:
    return f"svc-{i:05d}"


# --- the follower process -------------------------------------------------------------------


async def _follow(url: str, mode: str, count: int) -> None:
    import gc

    import pycrdt

    import secsync

    config = secsync.SecsyncConfig(
        live_consumers=mode,  # type: ignore[arg-type]
        presence=mode == "per_document",
    )
    key = bytes.fromhex(KEY_HEX)
    async with secsync.connect(url, config=config) as client:
        signer = secsync.SigningKeyPair.generate()
        ydocs = [secsync.new_yjs_doc(signer) for _ in range(count)]
        texts = [ydoc.get("text", type=pycrdt.Text) for ydoc in ydocs]
        gc.collect()
        rss0 = _rss_kb()
        limit = asyncio.Semaphore(CONCURRENT_OPENS)
        docs: list[Any] = [None] * count

        async def open_one(i: int) -> None:
            async with limit:
                docs[i] = await client.open(_doc_id(i), key=key, signing_key=signer, crdt=ydocs[i])

        start, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(open_one(i) for i in range(count)))
        open_s, open_cpu = time.perf_counter() - start, time.process_time() - cpu0
        gc.collect()
        await asyncio.sleep(1.0)
        rss1 = _rss_kb()
        cpu0 = time.process_time()
        await asyncio.sleep(IDLE_SECONDS)
        idle = (time.process_time() - cpu0) / IDLE_SECONDS
        base = sum(len(text) for text in texts)
        print(
            json.dumps(
                {
                    "open_s": open_s,
                    "open_cpu_ms_per_doc": open_cpu / count * 1e3,
                    "client_kb_per_doc": (rss1 - rss0) / count,
                    "idle_cpu_percent": idle * 100,
                    "tasks": len(asyncio.all_tasks()),
                }
            ),
            flush=True,
        )
        expect = int(await asyncio.to_thread(sys.stdin.readline))
        start = time.perf_counter()
        async with asyncio.timeout(600):
            while sum(len(text) for text in texts) < base + expect:
                await asyncio.sleep(0.02)
        print(json.dumps({"applied_s": time.perf_counter() - start}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for doc in docs:
            await doc.close()


# --- the measuring process ------------------------------------------------------------------


def _store(nc_js: Any, count: int) -> Any:
    """Store ``count`` documents, each a snapshot and three updates; per document, the session
    that sealed them (to seal more later)."""

    async def store() -> list[Any]:
        import collections

        import pycrdt

        from secsync.config import SecsyncConfig
        from secsync.protocol import crypto, wire
        from secsync.protocol.session import DocumentSession
        from secsync.transport.subjects import DocumentSubjects

        key = bytes.fromhex(KEY_HEX)
        sessions = []
        pending: collections.deque[Any] = collections.deque()
        config = SecsyncConfig(snapshot_after_updates=0, snapshot_after_bytes=0)
        for i in range(count):
            ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
            text = ydoc.get("text", type=pycrdt.Text)
            session = DocumentSession(
                _doc_id(i), crypto.SigningKeyPair.generate(), key, ydoc, config=config
            )
            session.load(None, now=0.0)
            snapshot = session.create_snapshot()
            session.snapshot_stored(snapshot.snapshot_id, now=0.0)
            subjects = DocumentSubjects.of(_doc_id(i))
            pending.append(
                await nc_js.publish_async(
                    subjects.snapshot, wire.encode(snapshot, include_doc_id=False)
                )
            )
            for _ in range(3):
                text += "x"
                (update,) = session.data_to_send()
                session.update_stored(snapshot.snapshot_id, update.clock)
                pending.append(
                    await nc_js.publish_async(
                        subjects.update, wire.encode(update, include_doc_id=False)
                    )
                )
            while len(pending) > 512:
                await pending.popleft()
            sessions.append((session, text, snapshot.snapshot_id, subjects))
        while pending:
            await pending.popleft()
        return sessions

    return store()


def _sealed(sessions: list[Any], updates: int, seed: int) -> list[tuple[str, bytes]]:
    from secsync.protocol import wire

    rng = random.Random(seed)
    out = []
    for _ in range(updates):
        session, text, snapshot_id, subjects = sessions[rng.randrange(len(sessions))]
        text += "y"
        (update,) = session.data_to_send()
        session.update_stored(snapshot_id, update.clock)
        out.append((subjects.update, wire.encode(update, include_doc_id=False)))
    return out


async def _scenario(
    broker: Any, js: Any, sessions: list[Any], mode: str, *, count: int, updates: int
) -> dict[str, Any]:
    import collections

    from secsync.config import SecsyncConfig

    server0 = _rss_kb(broker.pid)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.service",
        "follow",
        broker.url,
        mode,
        str(count),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert follower.stdin is not None and follower.stdout is not None
    try:
        opened = json.loads(await follower.stdout.readline())
        info = await js.stream_info(SecsyncConfig().stream_name)
        opened["consumers"] = int(info.state.consumer_count)
        opened["server_mb"] = (_rss_kb(broker.pid) - server0) / 1024
        opened["server_rss_mb"] = _rss_kb(broker.pid) / 1024
        sealed = _sealed(sessions[:count], updates, seed=count)
        follower.stdin.write(f"{updates}\n".encode())
        await follower.stdin.drain()
        start = time.perf_counter()
        pending: collections.deque[Any] = collections.deque()
        for subject, payload in sealed:
            pending.append(await js.publish_async(subject, payload))
            if len(pending) >= 256:
                await pending.popleft()
        while pending:
            await pending.popleft()
        published_s = time.perf_counter() - start
        applied = json.loads(await follower.stdout.readline())
        follower.stdin.write(b"done\n")
        await follower.stdin.drain()
        await asyncio.wait_for(follower.wait(), 120)
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()
    return {
        "mode": mode,
        "documents": count,
        "updates": updates,
        "published_per_s": updates / published_s,
        "applied_per_s": updates / max(applied["applied_s"], published_s),
        **opened,
    }


async def _run(quick: bool) -> dict[str, Any]:
    import nats

    from secsync.servers.broker import Broker
    from secsync.transport import jetstream
    from secsync.transport.subjects import stream_subjects

    documents = 500 if quick else 10_000
    compared = min(documents, 200 if quick else 1_000)
    updates = 2_000 if quick else 20_000
    async with Broker() as broker:
        nc = await nats.connect(broker.url)
        try:
            js = nc.jetstream()
            await jetstream.ensure_stream(
                js,
                jetstream.StreamSettings(
                    name="SECSYNC", subjects=tuple(stream_subjects()), max_consumers=20_000
                ),
            )
            start = time.perf_counter()
            sessions = await _store(js, documents)
            stored_s = time.perf_counter() - start
            rows = [
                await _scenario(
                    broker, js, sessions, "per_document", count=compared, updates=updates
                ),
                await _scenario(broker, js, sessions, "per_shard", count=compared, updates=updates),
                await _scenario(
                    broker, js, sessions, "per_shard", count=documents, updates=updates
                ),
            ]
        finally:
            await nc.close()
    return {"documents": documents, "stored_s": stored_s, "rows": rows}


def run(*, quick: bool) -> dict[str, Any]:
    return asyncio.run(_run(quick))


def render(numbers: dict[str, Any]) -> str:
    from benchmarks.report.format import f1, table

    lines = [
        "## One process following many documents",
        "",
        "A follower process opens N small documents (a snapshot and three updates each) with "
        'one consumer per document (`live_consumers="per_document"`, the default) or sharing '
        'one consumer per shard of the stream (`"per_shard"`, with `presence=False`). Client '
        "memory is the follower's RSS growth over the opens per document; idle CPU is the "
        "follower's over 5 s with nothing written; server RSS is nats-server's while the "
        "follower is open (the scenarios run one after the other on one server, which keeps "
        "some of what the earlier ones grew). Throughput: pre-sealed one-character updates "
        "published pipelined on random documents of the N, until the follower applied them "
        "all. Goal: "
        "≤ 20 KB per idle document and idle CPU near zero.",
        "",
    ]
    rows = [
        [
            f"`{row['mode']}`",
            f"{row['documents']:,}",
            f1(row["open_s"]),
            f1(row["open_cpu_ms_per_doc"]),
            f1(row["client_kb_per_doc"]),
            f"{row['idle_cpu_percent']:.2f} %",
            f"{row['consumers']:,}",
            f1(row["server_rss_mb"]) if "server_rss_mb" in row else "n/a",
            f"{row['applied_per_s']:,.0f}",
        ]
        for row in numbers["rows"]
    ]
    lines += table(
        [
            "live consumers",
            "documents",
            "open all, s",
            "open CPU ms/doc",
            "client KB/doc",
            "idle CPU",
            "server consumers",
            "server RSS MB",
            "updates/s applied",
        ],
        rows,
    )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "follow":
        import logging

        import structlog

        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )
        asyncio.run(_follow(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return 0
    quick = "--quick" in sys.argv
    numbers = run(quick=quick)
    print(render(numbers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
