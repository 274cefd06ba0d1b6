"""End to end through a real local nats-server: one writer, one reader, raw baselines, cold open.

The writer runs in this process; the reader is a separate process
(``python -m benchmarks.e2e reader ...``) so that the two do not share one GIL, as two
participants would not. Both stamp events with ``time.monotonic`` (CLOCK_MONOTONIC on Linux,
one clock for every process on the machine), which makes publish-to-apply latency measurable
across the two processes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, YjsReplay, build_stream, clock, median, percentile

now = time.monotonic
READER_START_TIMEOUT = 60.0

MSG_ID = "Nats-Msg-Id"
EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


def quiet_logs() -> None:
    """structlog to stderr, warnings and up only (stdout carries the reader's protocol)."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


# --- the reader process -------------------------------------------------------------------------


async def _reader(args: argparse.Namespace) -> int:
    import pycrdt

    import secsync
    from secsync.config import SecsyncConfig

    ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = ydoc.get("text", type=pycrdt.Text)
    records: list[tuple[float, int, int]] = []
    done = asyncio.Event()
    recording = False
    count = 0

    def on_change(_event: Any) -> None:
        nonlocal count
        if not recording:
            return
        count += 1
        length = len(text)
        records.append((now(), length, count))
        if (args.mode == "len" and length >= args.expect) or (
            args.mode == "count" and count >= args.expect
        ):
            done.set()

    text.observe(on_change)
    config = SecsyncConfig(provision_stream=False)
    async with secsync.connect(args.url, config=config) as client:
        doc = await client.open(
            args.doc,
            key=bytes.fromhex(args.key),
            signing_key=secsync.SigningKeyPair.generate(),
            crdt=ydoc,
        )
        recording = True
        cpu = time.process_time()
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), args.timeout)
        cpu = time.process_time() - cpu
        await doc.close()
    result = {"records": records, "complete": done.is_set(), "cpu_s": cpu}
    Path(args.out).write_text(json.dumps(result))
    return 0


class Reader:
    """A reader process following one document; ``records`` are (time, length, count)."""

    def __init__(
        self, url: str, doc_id: str, key: bytes, mode: str, *, expect: int, timeout: float
    ) -> None:
        self.args = [url, doc_id, key.hex(), mode, str(expect), str(timeout)]
        self.timeout = timeout
        fd, path = tempfile.mkstemp(prefix="secsync-bench-reader-", suffix=".json")
        os.close(fd)
        self.out = Path(path)
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Reader:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.e2e",
            "reader",
            *self.args,
            str(self.out),
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), READER_START_TIMEOUT)
        if line.strip() != b"ready":
            raise RuntimeError(f"reader did not start: {line!r}")
        return self

    async def finish(self) -> tuple[list[tuple[float, int, int]], float]:
        """The reader's records and its CPU seconds from "ready" to the last record."""
        assert self.process is not None
        await asyncio.wait_for(self.process.wait(), self.timeout + 30)
        data = json.loads(self.out.read_text() or "{}")
        if not data.get("complete"):
            raise RuntimeError("the reader timed out before it saw everything")
        return [tuple(r) for r in data["records"]], float(data["cpu_s"])  # type: ignore[misc]

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.out.unlink(missing_ok=True)


def analyze(
    sent: Sequence[tuple[float, int]],
    records: Sequence[tuple[float, int, int]],
    field: int,
    *,
    writer_cpu: float,
    reader_cpu: float,
) -> dict[str, Any]:
    """Match every sent item (time, length-or-count) to the first reader record reaching it."""
    latencies = []
    j = 0
    for sent_at, wanted in sent:
        while j < len(records) and records[j][field] < wanted:
            j += 1
        if j == len(records):
            raise RuntimeError("the reader never applied everything that was sent")
        latencies.append(records[j][0] - sent_at)
    duration = records[-1][0] - sent[0][0]
    return {
        "items": len(sent),
        "messages": len(records),
        "seconds": duration,
        "items_per_s": len(sent) / duration,
        "messages_per_s": len(records) / duration,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "writer_cpu_us": writer_cpu / len(sent) * 1e6,
        "reader_cpu_us": reader_cpu / len(records) * 1e6,
        "cycle_us": duration / len(records) * 1e6,
    }


# --- secsync scenarios --------------------------------------------------------------------------

Drive = Callable[[Any, Any, int], Awaitable[list[tuple[float, int]]]]


async def drive_one_per_edit(doc: Any, text: Any, n: int) -> list[tuple[float, int]]:
    """One keystroke, then wait until the broker stored it: one update per edit."""
    sent = []
    for _ in range(n):
        text.insert(len(text), "x")
        sent.append((now(), len(text)))
        await doc.flush(timeout=30)
    return sent


async def drive_saturated(doc: Any, text: Any, n: int) -> list[tuple[float, int]]:
    """Keystrokes as fast as the event loop runs; the sender batches what piles up."""
    sent = []
    for _ in range(n):
        text.insert(len(text), "x")
        sent.append((now(), len(text)))
        await asyncio.sleep(0)
    return sent


def drive_bursts(burst: int) -> Drive:
    async def drive(doc: Any, text: Any, n: int) -> list[tuple[float, int]]:
        """A program editing in bursts: ``burst`` transactions per turn of the event loop."""
        sent = []
        for i in range(n):
            text.insert(len(text), "x")
            sent.append((now(), len(text)))
            if i % burst == burst - 1:
                await asyncio.sleep(0)
        return sent

    return drive


def drive_paced(rate: float) -> Drive:
    async def drive(doc: Any, text: Any, n: int) -> list[tuple[float, int]]:
        """Typing at a steady ``rate`` keystrokes per second."""
        sent = []
        start = now()
        for i in range(n):
            delay = start + i / rate - now()
            if delay > 0:
                await asyncio.sleep(delay)
            text.insert(len(text), "x")
            sent.append((now(), len(text)))
        return sent

    return drive


async def document_scenario(
    url: str, name: str, config: Any, drive: Drive, *, edits: int, timeout: float
) -> dict[str, Any]:
    """A real ``Document`` writer; a real ``Document`` reader in another process."""
    import pycrdt

    import secsync

    key = secsync.generate_key()
    doc_id = f"bench-{name}-{secrets.token_hex(4)}"
    ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = ydoc.get("text", type=pycrdt.Text)
    async with secsync.connect(url, config=config) as client:
        doc = await client.open(
            doc_id, key=key, signing_key=secsync.SigningKeyPair.generate(), crdt=ydoc
        )
        text.insert(0, "#")
        await doc.flush(timeout=30)  # the initial snapshot
        async with Reader(url, doc_id, key, "len", expect=1 + edits, timeout=timeout) as reader:
            gc.collect()
            cpu = time.process_time()
            sent = await drive(doc, text, edits)
            await doc.flush(timeout=timeout)
            cpu = time.process_time() - cpu
            records, reader_cpu = await reader.finish()
        await doc.close()
    result = analyze(sent, records, 1, writer_cpu=cpu, reader_cpu=reader_cpu)
    result["name"] = name
    return result


async def idle_cpu(url: str, seconds: float) -> dict[str, Any]:
    """CPU the client burns while nothing happens: connected, then with one open document.

    With a busy open document, the CPU-bound numbers of this section share the core with it;
    the profile names the function that keeps running.
    """
    import cProfile
    import pstats

    import pycrdt

    import secsync
    from benchmarks.profiling import _name

    out: dict[str, Any] = {"seconds": seconds}
    async with secsync.connect(url) as client:
        await asyncio.sleep(0.2)
        cpu = time.process_time()
        await asyncio.sleep(seconds)
        out["connected_pct"] = (time.process_time() - cpu) / seconds * 100
        ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
        text = ydoc.get("text", type=pycrdt.Text)
        doc = await client.open(
            f"bench-idle-{secrets.token_hex(4)}",
            key=secsync.generate_key(),
            signing_key=secsync.SigningKeyPair.generate(),
            crdt=ydoc,
        )
        text.insert(0, "#")
        await doc.flush(timeout=30)
        await asyncio.sleep(0.2)
        cpu = time.process_time()
        await asyncio.sleep(seconds)
        out["open_document_pct"] = (time.process_time() - cpu) / seconds * 100
        profiler = cProfile.Profile()
        profiler.enable()
        await asyncio.sleep(min(0.5, seconds))
        profiler.disable()
        await doc.close()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    busiest = sorted(
        ((nc, _name(key)) for key, (_cc, nc, _tt, _ct, _callers) in stats.items()),
        reverse=True,
    )
    mine = [(n, name) for n, name in busiest if name.startswith("secsync/")]
    out["busiest"] = [
        {"function": name, "calls_per_s": n / min(0.5, seconds)} for n, name in mine[:3]
    ]
    return out


# --- raw nats-py --------------------------------------------------------------------------------


async def raw_publish(
    url: str, size: int, *, sequential: int, pipelined: int, window: int, reps: int
) -> dict[str, Any]:
    """Acknowledged JetStream publishes of ``size`` random bytes, no secsync involved."""
    import nats

    from secsync.transport import jetstream

    nc = await nats.connect(url)
    out: dict[str, Any] = {"payload_bytes": size, "window": window}
    try:
        js = nc.jetstream()
        await jetstream.ensure_stream(
            js, jetstream.StreamSettings(name="BENCHRAW", subjects=("benchraw.>",))
        )
        payload = os.urandom(size)

        cpu: dict[str, list[float]] = collections.defaultdict(list)

        async def seq(n: int, headers: Callable[[int], dict[str, str] | None]) -> float:
            start, cpu0 = clock(), time.process_time()
            for i in range(n):
                await js.publish("benchraw.seq", payload, headers=headers(i))
            cpu["sequential"].append((time.process_time() - cpu0) / n * 1e6)
            return n / (clock() - start)

        async def pipe(n: int, headers: Callable[[int], dict[str, str] | None]) -> float:
            pending: collections.deque[asyncio.Future[Any]] = collections.deque()
            start, cpu0 = clock(), time.process_time()
            for i in range(n):
                pending.append(await js.publish_async("benchraw.pipe", payload, headers=headers(i)))
                if len(pending) >= window:
                    await pending.popleft()
            while pending:
                await pending.popleft()
            cpu["pipelined"].append((time.process_time() - cpu0) / n * 1e6)
            return n / (clock() - start)

        snap = await js.publish("benchraw.h.snap", payload)
        run = secrets.token_hex(4)

        def secsync_headers(i: int) -> dict[str, str]:
            return {
                MSG_ID: f"u.{run}.{i}.{secrets.token_hex(4)}",
                EXPECTED_SEQ: str(snap.seq),
                EXPECTED_SEQ_SUBJECT: "benchraw.h.snap",
            }

        def no_headers(i: int) -> None:
            return None

        await seq(min(200, sequential), no_headers)  # warm-up
        await pipe(min(2_000, pipelined), no_headers)
        gc.collect()
        cpu.clear()
        out["sequential"] = median([await seq(sequential, no_headers) for _ in range(reps)])
        out["pipelined"] = median([await pipe(pipelined, no_headers) for _ in range(reps)])
        out["sequential_cpu_us"] = median(cpu["sequential"])
        out["pipelined_cpu_us"] = median(cpu["pipelined"])
        out["sequential_headers"] = median(
            [await seq(sequential, secsync_headers) for _ in range(reps)]
        )
        out["pipelined_headers"] = median(
            [await pipe(pipelined, secsync_headers) for _ in range(reps)]
        )
    finally:
        await nc.close()
    return out


# --- cold open ----------------------------------------------------------------------------------


async def cold_open(
    url: str, replay: YjsReplay, *, base: int, counts: Sequence[int], reps: int, window: int
) -> list[dict[str, Any]]:
    """``client.open`` of a document stored as one snapshot (the trace after ``base``
    transactions) plus ``count`` updates (the transactions after it), beside what the open
    is made of, measured alone: the same messages fetched with nats-py (a pull consumer, as
    ``open`` reads) and by batch direct get, and the same bytes loaded in process by
    ``receive_many`` (no workers, and one worker thread). Counts of 50,000 and more are
    measured once (one open takes tens of seconds)."""
    from concurrent.futures import ThreadPoolExecutor

    import pycrdt
    from nats.js import api

    import secsync
    from secsync.protocol import crypto, wire
    from secsync.protocol.session import DocumentSession
    from secsync.transport import jetstream
    from secsync.transport.subjects import DocumentSubjects

    rows = []
    config = secsync.SecsyncConfig(open_timeout=120.0)
    threaded = secsync.SecsyncConfig(open_timeout=120.0, verify_threads=1)
    async with (
        secsync.connect(url, config=config) as client,
        secsync.connect(url, config=threaded) as threaded_client,
    ):
        for count in counts:
            runs = reps if count < 50_000 else 1
            doc_id = f"bench-cold-{count}-{secrets.token_hex(4)}"
            subjects = DocumentSubjects.of(doc_id)
            stream = build_stream(
                replay.changes[base : base + count], state=replay.states[base], doc_id=doc_id
            )
            expected = replay.texts[base + count]
            await client.js.publish(subjects.snapshot, stream.snapshot)
            pending: collections.deque[asyncio.Future[Any]] = collections.deque()
            for payload in stream.updates:
                pending.append(await client.js.publish_async(subjects.update, payload))
                if len(pending) >= window:
                    await pending.popleft()
            while pending:
                await pending.popleft()

            async def open_once(
                on: Any, doc_id: str = doc_id, stream: Any = stream, expected: str = expected
            ) -> float:
                ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
                text = ydoc.get("text", type=pycrdt.Text)
                gc.collect()
                start = clock()
                doc = await on.open(
                    doc_id, key=stream.key, signing_key=crypto.SigningKeyPair.generate(), crdt=ydoc
                )
                elapsed = clock() - start
                await doc.close()
                if str(text) != expected:
                    raise RuntimeError(f"cold open of {doc_id} loaded the wrong text")
                return elapsed

            if runs > 1:
                await open_once(client)  # warm-up
            opens = [await open_once(client) for _ in range(runs)]
            threaded_opens = [await open_once(threaded_client) for _ in range(runs)]

            last = await jetstream.last_message(client.js, config.stream_name, subjects.snapshot)
            assert last is not None
            fetches = []
            for _ in range(runs):
                start = clock()
                fetched = await jetstream.messages_after(
                    client.nc, config.stream_name, subjects.stored, last.sequence
                )
                fetches.append(clock() - start)
                if len(fetched) != count + 1:
                    raise RuntimeError(f"fetched {len(fetched)} messages, expected {count + 1}")
            pulls = []
            for _ in range(runs):
                name = f"bench_{secrets.token_hex(8)}"
                start = clock()
                info = await client.js.add_consumer(
                    config.stream_name,
                    api.ConsumerConfig(
                        name=name,
                        filter_subject=subjects.stored,
                        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                        opt_start_seq=last.sequence,
                        ack_policy=api.AckPolicy.NONE,
                        mem_storage=True,
                        num_replicas=1,
                    ),
                )
                sub = await client.js.pull_subscribe_bind(durable=name, stream=config.stream_name)
                remaining = int(info.num_pending or 0)
                got = 0
                while remaining > 0:
                    batch = await sub.fetch(min(remaining, 1024), timeout=10)
                    remaining -= len(batch)
                    got += len(batch)
                pulls.append(clock() - start)
                await sub.unsubscribe()
                await client.js.delete_consumer(config.stream_name, name)
                if got != count + 1:
                    raise RuntimeError(f"pulled {got} messages, expected {count + 1}")

            def local(threads: int, doc_id: str = doc_id, stream: Any = stream) -> float:
                ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
                ydoc.get("text", type=pycrdt.Text)
                pool = ThreadPoolExecutor(max_workers=threads) if threads else None
                session = DocumentSession(
                    doc_id,
                    crypto.SigningKeyPair.generate(),
                    stream.key,
                    ydoc,
                    config=secsync.SecsyncConfig(verify_threads=threads),
                    verify_executor=pool,
                )
                gc.collect()
                start = clock()
                session.load(wire.decode(stream.snapshot, doc_id=doc_id), now=0.0)
                session.receive_many(stream.updates, now=0.0)
                elapsed = clock() - start
                if pool is not None:
                    pool.shutdown()
                return elapsed

            locals_ = [local(0) for _ in range(runs)]
            locals_threaded = [local(1) for _ in range(runs)]
            rows.append(
                {
                    "updates": count,
                    "runs": runs,
                    "snapshot_bytes": len(stream.snapshot),
                    "open_ms": median(opens) * 1e3,
                    "open_threaded_ms": median(threaded_opens) * 1e3,
                    "fetch_ms": median(fetches) * 1e3,
                    "pull_ms": median(pulls) * 1e3,
                    "local_ms": median(locals_) * 1e3,
                    "local_threaded_ms": median(locals_threaded) * 1e3,
                }
            )
    return rows


# --- the section --------------------------------------------------------------------------------


async def run_e2e(
    sizes: Any, payload_size: int, replay: YjsReplay, cold_base: int
) -> dict[str, Any]:
    import secsync
    from secsync.servers.broker import Broker

    results: dict[str, Any] = {"errors": {}}
    broker = Broker()
    await broker.astart()
    timeout = 180.0

    async def attempt(name: str, coro: Awaitable[Any]) -> None:
        print(f"  e2e: {name}", file=sys.stderr, flush=True)
        try:
            results[name] = await coro
        except Exception as exc:
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"  e2e {name} failed: {exc!r}", file=sys.stderr, flush=True)

    try:
        url = broker.url
        immediate = secsync.SecsyncConfig(batch_interval=0.0)
        paced_edits = int(sizes.e2e_paced_seconds * sizes.e2e_paced_rate)
        await attempt("idle", idle_cpu(url, 1.0 if sizes.name == "quick" else 2.0))
        await attempt(
            "raw",
            raw_publish(
                url,
                payload_size,
                sequential=sizes.e2e_raw_sequential,
                pipelined=sizes.e2e_raw_pipelined,
                window=sizes.e2e_window,
                reps=sizes.e2e_raw_reps,
            ),
        )
        await attempt(
            "one_per_edit",
            document_scenario(
                url,
                "one-per-edit",
                immediate,
                drive_one_per_edit,
                edits=sizes.e2e_one_per_edit,
                timeout=timeout,
            ),
        )
        await attempt(
            "saturated",
            document_scenario(
                url,
                "saturated",
                immediate,
                drive_saturated,
                edits=sizes.e2e_saturated,
                timeout=timeout,
            ),
        )
        await attempt(
            "paced",
            document_scenario(
                url,
                "paced",
                secsync.SecsyncConfig(),
                drive_paced(sizes.e2e_paced_rate),
                edits=paced_edits,
                timeout=timeout,
            ),
        )
        await attempt(
            "bursts",
            document_scenario(
                url,
                "bursts",
                immediate,
                drive_bursts(sizes.e2e_burst),
                edits=sizes.e2e_burst_edits,
                timeout=timeout,
            ),
        )
        await attempt(
            "cold",
            cold_open(
                url,
                replay,
                base=cold_base,
                counts=sizes.cold_counts,
                reps=sizes.cold_reps,
                window=sizes.e2e_window,
            ),
        )
    finally:
        await asyncio.to_thread(broker.close)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e")
    sub = parser.add_subparsers(dest="command", required=True)
    reader = sub.add_parser("reader", help="(internal) the reading participant")
    reader.add_argument("url")
    reader.add_argument("doc")
    reader.add_argument("key")
    reader.add_argument("mode", choices=["len", "count"])
    reader.add_argument("expect", type=int)
    reader.add_argument("timeout", type=float)
    reader.add_argument("out")
    args = parser.parse_args(argv)
    quiet_logs()
    return asyncio.run(_reader(args))


if __name__ == "__main__":
    sys.exit(main())
