"""Capacity of one nats-server holding secsync documents: memory, disk, lookups, restarts.

    python -m benchmarks.capacity                 # up to 200k documents (about 2-3 minutes)
    python -m benchmarks.capacity --docs 100000   # stop at 100k
    python -m benchmarks.capacity --json run.json # also keep every number

Writes a markdown fragment to ``benchmarks/out/capacity.md`` (``--out`` to change). From other
code: ``capacity.run(out=path, max_docs=n)`` measures, writes the fragment and returns the
numbers; ``capacity.measure()`` and ``capacity.render()`` are the two halves.

What is measured, on one real nats-server (``broker-config/single.conf`` plus a profiling port,
file storage) with the stream provisioned by ``jetstream.ensure_stream`` as the client does:

* Documents are laid out as the package lays them out: ``DocumentSubjects`` subjects, one
  snapshot (a sealed Yjs state of a few KB) and four sealed updates (~250 B) per document,
  published with the headers the client sends (``Nats-Msg-Id``; the snapshot's compare-and-set
  over the document's subjects; each update's compare-and-set against the snapshot subject).
  Filler documents reuse one document's sealed bytes under their own subjects and message ids
  (the broker cannot tell); a few probe documents are sealed for their own ids and opened
  through ``secsync.connect`` to check them and to time a real open.
* At each size: the server's RSS (``/varz`` ``mem``) and Go heap in use after a forced GC
  (``/debug/pprof/heap``), bytes on disk, the stream's subject count, direct get of the last
  message by subject, the document-scoped read an open starts with, a full ``client.open``,
  ``ensure_stream`` (every client connect runs it) and a compare-and-set update publish.
* Then two graceful restarts: one as provisioned (every message stored within the 120 s
  duplicate window, so the server rebuilds the message-id table for all of them), one with the
  duplicate window set to 1 s (as for messages older than the window: the steady state of a
  server that has run for a while). Each is timed to ``/healthz`` ok and to a document opened
  by a new client. At the largest size also a restart after SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import re
import secrets
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python benchmarks/capacity.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.common import REPO, median, percentile
from benchmarks.report.format import table

DEFAULT_DOCS = 200_000
POINTS = (0, 10_000, 50_000, 100_000, 200_000, 500_000, 1_000_000)
UPDATES_PER_DOC = 4
SNAPSHOT_TEXT_CHARS = 3_000
UPDATE_TEXT_CHARS = 24
PROBES_PER_POINT = 2
WINDOW = 4_000  # publishes in flight while loading
DIRECT_GETS = 1_000
SCOPED_READS = 200
DOCUMENT_READS = 40  # through a consumer on the document's wildcard: slow when the server is busy
SETTLE_SAMPLES = (15, 30, 45, 60)  # seconds after the last load: watch the burst fade
OPENS = 20
ENSURES = 20
CAS_PUBLISHES = 200
OUT = REPO / "benchmarks" / "out" / "capacity.md"

MSG_ID = "Nats-Msg-Id"
EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
STEADY_WINDOW = 1.0  # seconds: the duplicate window of the "steady state" restart

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] capacity: {message}", file=sys.stderr, flush=True)


def _get(url: str, timeout: float = 30.0) -> bytes:
    with _opener.open(url, timeout=timeout) as response:
        data: bytes = response.read()
        return data


# --- documents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedDocument:
    """One document as its author's session sealed it (native wire form, docId left out)."""

    doc_id: str
    snapshot_id: bytes
    author: bytes
    snapshot: bytes
    updates: list[bytes]
    text: str  # the content once everything is applied


def seal_document(doc_id: str, key: bytes, seed: int) -> SealedDocument:
    """A Yjs text of :data:`SNAPSHOT_TEXT_CHARS` as a snapshot, then small edits as updates."""
    import pycrdt

    from secsync.protocol import wire

    rng = random.Random(seed)
    words = ["secsync", "snapshot", "update", "stream", "broker", "offline", "editor", "crdt"]
    body = ""
    while len(body) < SNAPSHOT_TEXT_CHARS:
        body += rng.choice(words) + " "
    ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = ydoc.get("text", type=pycrdt.Text)
    text.insert(0, body[:SNAPSHOT_TEXT_CHARS])
    state = ydoc.get_update()
    changes: list[bytes] = []
    sub = ydoc.observe(lambda event: changes.append(event.update))
    for _ in range(UPDATES_PER_DOC):
        at = rng.randrange(len(text))
        text.insert(at, "".join(rng.choice("abcdefghij ") for _ in range(UPDATE_TEXT_CHARS)))
    ydoc.unobserve(sub)
    stream = common.build_stream(changes, state=state, key=key, doc_id=doc_id)
    snapshot = wire.decode(stream.snapshot, doc_id=doc_id)
    return SealedDocument(
        doc_id=doc_id,
        snapshot_id=snapshot.snapshot_id,  # type: ignore[union-attr]
        author=stream.author.public_key,
        snapshot=stream.snapshot,
        updates=stream.updates,
        text=str(text),
    )


def document_messages(
    doc: SealedDocument, doc_id: str, snapshot_id: bytes, first_sequence: int
) -> list[tuple[str, bytes, dict[str, str]]]:
    """``doc``'s messages stored as ``doc_id``, with the headers the client would send,
    for a stream whose next sequence is ``first_sequence``."""
    from secsync.protocol.encoding import b64encode
    from secsync.transport.subjects import DocumentSubjects, snapshot_msg_id

    subjects = DocumentSubjects.of(doc_id)
    messages = [
        (
            subjects.snapshot,
            doc.snapshot,
            {
                MSG_ID: snapshot_msg_id(snapshot_id),
                EXPECTED_SEQ: "0",
                EXPECTED_SEQ_SUBJECT: subjects.stored,
            },
        )
    ]
    for clock, update in enumerate(doc.updates):
        messages.append(
            (
                subjects.update,
                update,
                {
                    # The client derives it from the update's signature; every filler stores the
                    # same update bytes, so the benchmark makes the id unique per document.
                    MSG_ID: f"u.{b64encode(snapshot_id)}.{clock}",
                    EXPECTED_SEQ: str(first_sequence),
                    EXPECTED_SEQ_SUBJECT: subjects.snapshot,
                },
            )
        )
    return messages


class Loader:
    """Publishes documents pipelined (at most :data:`WINDOW` unacknowledged) on raw nats-py,
    counting acknowledgements; any refusal stops the run (the sequences are predicted)."""

    def __init__(self, nc: Any, template: SealedDocument) -> None:
        self.nc = nc
        self.template = template
        self.inbox = f"_CAPACITY.{secrets.token_hex(8)}"
        self.next_sequence = 1
        self.outstanding = 0
        self.errors: list[bytes] = []
        self.room = asyncio.Event()
        self.room.set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.snapshot_sequence: list[int] = []  # per filler document
        self.snapshot_ids: list[bytes] = []
        self.sub: Any = None

    async def start(self) -> None:
        self.sub = await self.nc.subscribe(
            self.inbox + ".*", cb=self._ack, pending_msgs_limit=-1, pending_bytes_limit=-1
        )

    async def _ack(self, msg: Any) -> None:
        self.outstanding -= 1
        if b'"error"' in msg.data:
            self.errors.append(msg.data)
        if self.outstanding <= WINDOW // 2:
            self.room.set()
        if self.outstanding == 0:
            self.idle.set()

    async def put(self, messages: Sequence[tuple[str, bytes, dict[str, str]]]) -> None:
        for subject, data, headers in messages:
            if self.outstanding >= WINDOW:
                self.room.clear()
                await self.room.wait()
            self.outstanding += 1
            self.idle.clear()
            await self.nc.publish(
                subject, data, reply=f"{self.inbox}.{self.next_sequence}", headers=headers
            )
            self.next_sequence += 1

    async def fillers(self, start: int, stop: int) -> None:
        for index in range(start, stop):
            snapshot_id = secrets.token_bytes(24)
            self.snapshot_ids.append(snapshot_id)
            self.snapshot_sequence.append(self.next_sequence)
            await self.put(
                document_messages(self.template, filler_id(index), snapshot_id, self.next_sequence)
            )

    async def drain(self) -> None:
        await self.nc.flush()
        await asyncio.wait_for(self.idle.wait(), 120)
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} publishes refused, e.g. {self.errors[0]!r}")


def filler_id(index: int) -> str:
    return f"capacity-filler-{index}"


# --- server observations ------------------------------------------------------------------------


def directory_bytes(path: Path) -> tuple[int, int]:
    """(allocated on disk, apparent size) of everything under ``path``."""
    allocated = apparent = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def proc_status(pid: int | None) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of the server process, bytes."""
    result: dict[str, int] = {}
    if pid is None:
        return result
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    result[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return result


class Server:
    """The broker under test, with its monitoring and profiling endpoints."""

    def __init__(self, root: Path) -> None:
        from secsync.servers.binary import default_config_path, free_port
        from secsync.servers.broker import Broker

        self.prof_port = free_port()
        config = root / "capacity.conf"
        config.write_text(
            default_config_path().read_text(encoding="utf-8")
            + f"\n# benchmarks.capacity: Go heap profiles\nprof_port: {self.prof_port}\n",
            encoding="utf-8",
        )
        self.broker = Broker(root / "broker", config=config, start_timeout=300.0)
        self.last_profile = ""

    def memory(self) -> dict[str, int]:
        """RSS (varz), peak RSS (/proc) and the Go heap after a forced collection."""
        varz = json.loads(_get(f"{self.broker.monitor_url}/varz"))
        result = {"rss": int(varz["mem"])}
        result["peak_rss"] = proc_status(self.broker.pid).get("VmHWM", 0)
        profile = _get(f"http://127.0.0.1:{self.prof_port}/debug/pprof/heap?debug=1&gc=1").decode(
            errors="replace"
        )
        for name in ("HeapAlloc", "HeapInuse", "Sys"):
            match = re.search(rf"# {name} = (\d+)", profile)
            if match:
                result[name] = int(match.group(1))
        self.last_profile = profile
        return result

    def heap_sites(self, count: int = 3) -> list[dict[str, Any]]:
        """The allocation sites holding the most live heap in the last profile taken."""
        sites: list[dict[str, Any]] = []
        for record in self.last_profile.split("\n\n"):
            head = re.match(r"\d+: (\d+) \[", record)
            if not head:
                continue
            frames = [
                m.group(1)
                for m in re.finditer(r"#\s+0x[0-9a-f]+\s+(\S+)", record)
                if "nats-server" in m.group(1)
            ]
            sites.append({"bytes": int(head.group(1)), "frames": frames[:4]})
        sites.sort(key=lambda site: -site["bytes"])
        return sites[:count]

    def healthy(self) -> bool:
        try:
            body = json.loads(_get(f"{self.broker.monitor_url}/healthz", timeout=5))
        except (OSError, ValueError):
            return False
        return isinstance(body, dict) and body.get("status") == "ok"

    def disk(self) -> dict[str, int]:
        root = self.broker.store_dir / "jetstream"
        allocated, apparent = directory_bytes(root)
        blocks = [path.stat().st_size for path in root.rglob("*.blk")]
        return {
            "allocated": allocated,
            "apparent": apparent,
            "blocks": len(blocks),
            "largest_block": max(blocks, default=0),
        }


# --- measurements -------------------------------------------------------------------------------


def _us(samples: Sequence[float]) -> dict[str, float]:
    return {
        "p50_us": median(samples) * 1e6,
        "p99_us": percentile(samples, 99) * 1e6,
        "n": float(len(samples)),
    }


async def stream_state(nc: Any, stream: str) -> dict[str, Any]:
    """The stream's state as the server reports it (with ``num_subjects``)."""
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=30)
    state: dict[str, Any] = json.loads(reply.data)["state"]
    return state


async def time_lookups(
    nc: Any, loader: Loader, probes: list[SealedDocument], *, url: str, key: bytes, stream: str
) -> dict[str, Any]:
    import pycrdt

    import secsync
    from secsync.config import SecsyncConfig
    from secsync.protocol import crypto
    from secsync.transport import jetstream
    from secsync.transport.subjects import DocumentSubjects

    js = nc.jetstream()
    rng = random.Random(7)
    population = len(loader.snapshot_sequence)
    result: dict[str, Any] = {}
    if population:
        samples = []
        for _ in range(DIRECT_GETS):
            subject = DocumentSubjects.of(filler_id(rng.randrange(population))).snapshot
            start = time.perf_counter()
            found = await jetstream.last_message(js, stream, subject)
            samples.append(time.perf_counter() - start)
            assert found is not None
        result["direct_get_last"] = _us(samples)
        samples = []
        for _ in range(SCOPED_READS):
            subject = DocumentSubjects.of(filler_id(rng.randrange(population))).snapshot
            start = time.perf_counter()
            read = await jetstream.messages_scoped(js, stream, subject, 1)
            samples.append(time.perf_counter() - start)
            assert len(read) == 1
        result["scoped_read"] = _us(samples)
        result["document_read"] = await time_document_reads(js, loader, rng, stream)
        result["pull_read"] = await time_pull_reads(js, loader, rng, stream)
    samples = []
    for _ in range(DIRECT_GETS // 4):  # a document nobody wrote yet: the miss path
        subject = DocumentSubjects.of(f"capacity-missing-{secrets.token_hex(8)}").snapshot
        start = time.perf_counter()
        found = await jetstream.last_message(js, stream, subject)
        samples.append(time.perf_counter() - start)
        assert found is None
    result["direct_get_miss"] = _us(samples)

    settings = jetstream.StreamSettings(name=stream)
    samples = []
    for _ in range(ENSURES):
        start = time.perf_counter()
        await jetstream.ensure_stream(js, settings)
        samples.append(time.perf_counter() - start)
    result["ensure_stream"] = _us(samples)

    if population:
        samples = []
        for n in range(CAS_PUBLISHES):
            index = rng.randrange(population)
            subjects = DocumentSubjects.of(filler_id(index))
            headers = {
                MSG_ID: f"u.capacity.{secrets.token_hex(8)}.{n}",
                EXPECTED_SEQ: str(loader.snapshot_sequence[index]),
                EXPECTED_SEQ_SUBJECT: subjects.snapshot,
            }
            start = time.perf_counter()
            await jetstream.publish(
                js, subjects.update, loader.template.updates[0], headers=headers
            )
            samples.append(time.perf_counter() - start)
        loader.next_sequence += CAS_PUBLISHES
        result["cas_update_publish"] = _us(samples)

    config = SecsyncConfig(provision_stream=False, stream_name=stream)
    samples = []
    async with secsync.connect(url, config=config) as client:
        signer = crypto.SigningKeyPair.generate()
        for n in range(OPENS):
            probe = probes[n % len(probes)]
            ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
            start = time.perf_counter()
            doc = await client.open(probe.doc_id, key=key, signing_key=signer, crdt=ydoc)
            samples.append(time.perf_counter() - start)
            got = str(ydoc.get("text", type=pycrdt.Text))
            await doc.close()
            if got != probe.text:
                raise RuntimeError(f"probe {probe.doc_id} opened with other content")
    result["client_open"] = _us(samples)
    return result


async def time_pull_reads(
    js: Any, loader: Loader, rng: random.Random, stream: str, count: int = DOCUMENT_READS
) -> dict[str, float]:
    """The same read as :func:`time_document_reads` (same filter, same start), through a pull
    consumer made by hand, as ``jetstream.messages_scoped`` does it in pages: create it, fetch
    what it reports pending, delete it."""
    from nats.js import api

    from secsync.transport.subjects import DocumentSubjects

    population = len(loader.snapshot_sequence)
    samples = []
    for _ in range(count):
        index = rng.randrange(population)
        name = f"capacity_{secrets.token_hex(8)}"
        config = api.ConsumerConfig(
            name=name,
            filter_subject=DocumentSubjects.of(filler_id(index)).stored,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=loader.snapshot_sequence[index] + 1,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=10.0,
        )
        start = time.perf_counter()
        info = await js.add_consumer(stream, config, timeout=30)
        sub = await js.pull_subscribe_bind(durable=name, stream=stream)
        messages = await sub.fetch(int(info.num_pending), timeout=30)
        samples.append(time.perf_counter() - start)
        await sub.unsubscribe()
        await js.delete_consumer(stream, name)
        if len(messages) < UPDATES_PER_DOC:
            raise RuntimeError(f"a pull consumer read {len(messages)} messages")
    return _us(samples)


async def time_document_reads(
    js: Any, loader: Loader, rng: random.Random, stream: str, count: int = DOCUMENT_READS
) -> dict[str, float]:
    """The read an open does second (and the filter of its live consumer): everything after the
    snapshot, through a consumer filtered on ``secsync.s.<shard>.<token>.*``."""
    from secsync.transport import jetstream
    from secsync.transport.subjects import DocumentSubjects

    population = len(loader.snapshot_sequence)
    samples = []
    for _ in range(count):
        index = rng.randrange(population)
        subject = DocumentSubjects.of(filler_id(index)).stored
        start = time.perf_counter()
        read = await jetstream.messages_scoped(
            js, stream, subject, loader.snapshot_sequence[index] + 1, timeout=30
        )
        samples.append(time.perf_counter() - start)
        assert len(read) >= UPDATES_PER_DOC
    return _us(samples)


async def watch_settling(
    server: Server, js: Any, loader: Loader, stream: str, since: float
) -> list[Any]:
    """Memory and document reads at :data:`SETTLE_SAMPLES` seconds after the last write burst
    ended at ``since`` (the server ages its caches out on timers: nothing to wait on instead)."""
    rng = random.Random(11)
    started = since
    samples: list[Any] = []
    for at in SETTLE_SAMPLES:
        await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
        memory = server.memory()
        reads = await time_document_reads(js, loader, rng, stream, count=10)
        samples.append(
            {"after_s": time.perf_counter() - started, "memory": memory, "document_read": reads}
        )
        _log(
            f"  +{time.perf_counter() - started:.0f} s: rss {memory['rss'] / 1e6:.0f} MB, "
            f"heap {memory['HeapAlloc'] / 1e6:.0f} MB, "
            f"document read p50 {reads['p50_us'] / 1000:.1f} ms"
        )
    return samples


async def open_probe(url: str, probe: SealedDocument, key: bytes, stream: str) -> None:
    """Connect a new client and open ``probe``; raise unless its content is right."""
    import pycrdt

    import secsync
    from secsync.config import SecsyncConfig
    from secsync.protocol import crypto

    config = SecsyncConfig(provision_stream=False, stream_name=stream, request_timeout=30.0)
    async with secsync.connect(url, config=config) as client:
        ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc = await client.open(
            probe.doc_id, key=key, signing_key=crypto.SigningKeyPair.generate(), crdt=ydoc
        )
        got = str(ydoc.get("text", type=pycrdt.Text))
        await doc.close()
    if got != probe.text:
        raise RuntimeError(f"probe {probe.doc_id} opened with other content after a restart")


async def timed_restart(
    server: Server, probe: SealedDocument, key: bytes, stream: str, *, kill: bool = False
) -> dict[str, Any]:
    """Restart (gracefully, or SIGKILL) and time: process start to JetStream enabled, to
    ``/healthz`` ok, to a new client having opened ``probe``."""
    broker = server.broker
    if kill:
        broker.kill()
    else:
        start = time.perf_counter()
        broker.stop(timeout=120)
        stop_s = time.perf_counter() - start
    start = time.perf_counter()
    await broker.astart()  # returns once /healthz?js-enabled-only=true is ok
    enabled = time.perf_counter() - start
    while not server.healthy():
        await asyncio.sleep(0.005)
    healthy = time.perf_counter() - start
    await open_probe(broker.url, probe, key, stream)
    opened = time.perf_counter() - start
    result = {"js_enabled_s": enabled, "healthz_s": healthy, "first_open_s": opened}
    if not kill:
        result["stop_s"] = stop_s
    result["memory"] = server.memory()
    result["log"] = _recovery_log(broker.log_path)
    return result


def _recovery_log(path: Path) -> list[str]:
    """The server's own lines about recovering the stream, from its last start."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    last_start = max(
        (i for i, line in enumerate(lines) if "--- secsync: starting" in line), default=0
    )
    wanted = ("Restored", "Took", "rebuild", "Rebuild", "index", "Recovering", "recovered")
    return [
        line.split("] ", 1)[-1]
        for line in lines[last_start:]
        if any(word in line for word in wanted)
    ][:8]


async def set_duplicate_window(nc: Any, stream: str, seconds: float) -> None:
    js = nc.jetstream()
    config = (await js.stream_info(stream)).config
    await js.update_stream(config.evolve(duplicate_window=seconds))


async def measure_async(max_docs: int = DEFAULT_DOCS) -> dict[str, Any]:
    import nats

    from benchmarks.e2e import quiet_logs
    from secsync.config import SecsyncConfig
    from secsync.protocol import crypto
    from secsync.transport import jetstream
    from secsync.transport.subjects import stream_subjects

    quiet_logs()
    points = [p for p in POINTS if p <= max_docs]
    if max_docs not in points:
        points.append(max_docs)
    defaults = SecsyncConfig()
    stream = defaults.stream_name
    settings = jetstream.StreamSettings(
        name=stream,
        subjects=tuple(stream_subjects(defaults.subject_root)),
        replicas=defaults.stream_replicas,
        max_consumers=defaults.max_consumers,
        duplicate_window=defaults.duplicate_window,
    )
    key = crypto.generate_key()
    template = seal_document("capacity-template", key, seed=1)
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": os.getloadavg(),
        "machine": common.machine_info(),
        "versions": {
            k: v
            for k, v in common.versions().items()
            if k in ("python", "nats-py", "nats-server", "pycrdt", "secsync")
        },
        "command": "python -m benchmarks.capacity"
        + ("" if max_docs == DEFAULT_DOCS else f" --docs {max_docs}"),
        "document": {
            "snapshot_bytes": len(template.snapshot),
            "update_bytes": [len(u) for u in template.updates],
            "messages": 1 + len(template.updates),
            "subjects": 2,
            "stored_bytes": len(template.snapshot) + sum(len(u) for u in template.updates),
        },
        "settings": {
            "stream": stream,
            "subjects": list(settings.subjects),
            "duplicate_window_s": settings.duplicate_window,
            "max_consumers": settings.max_consumers,
            "storage": "file",
            "replicas": settings.replicas,
        },
        "points": [],
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="secsync-capacity-") as tmp:
        server = Server(Path(tmp))
        await server.broker.astart()
        try:

            async def ignore(*_args: Any) -> None:
                pass  # the restarts disconnect us on purpose; nats-py would print tracebacks

            nc = await nats.connect(
                server.broker.url,
                error_cb=ignore,
                disconnected_cb=ignore,
                pending_size=64 * 1024 * 1024,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.1,
            )
            js = nc.jetstream(timeout=30)
            await jetstream.ensure_stream(js, settings)
            loader = Loader(nc, template)
            await loader.start()
            probes: list[SealedDocument] = []
            loaded = 0
            for point in points:
                # fillers up to the point, then this point's probe documents
                start = time.perf_counter()
                await loader.fillers(loaded, point)
                for n in range(PROBES_PER_POINT):
                    probe = seal_document(f"capacity-probe-{point}-{n}", key, seed=100 + n)
                    probes.append(probe)
                    await loader.put(
                        document_messages(
                            probe, probe.doc_id, probe.snapshot_id, loader.next_sequence
                        )
                    )
                await loader.drain()
                load_end = time.perf_counter()
                load_s = load_end - start
                entry: dict[str, Any] = {
                    "docs": point,
                    "probe_docs": len(probes),
                    "load_s": load_s,
                    "load_docs_per_s": (point - loaded) / load_s if point > loaded else None,
                    "loadavg": os.getloadavg(),
                }
                loaded = point
                entry["stream"] = await stream_state(nc, stream)
                entry["memory_loaded"] = server.memory()
                entry["heap_sites_loaded"] = server.heap_sites()
                entry["disk"] = server.disk()
                _log(
                    f"{point:,} documents: loaded in {load_s:.1f} s, "
                    f"rss {entry['memory_loaded']['rss'] / 1e6:.0f} MB, "
                    f"{entry['stream']['num_subjects']:,} subjects"
                )
                entry["lookups"] = await time_lookups(
                    nc, loader, probes, url=server.broker.url, key=key, stream=stream
                )
                if point == points[-1]:
                    entry["settling"] = await watch_settling(server, js, loader, stream, load_end)
                entry["restart"] = await timed_restart(server, probes[0], key, stream)
                await set_duplicate_window(nc, stream, STEADY_WINDOW)
                entry["restart_steady"] = await timed_restart(server, probes[0], key, stream)
                entry["lookups_after_restart"] = {
                    k: v
                    for k, v in (
                        await time_lookups(
                            nc, loader, probes, url=server.broker.url, key=key, stream=stream
                        )
                    ).items()
                    if k
                    in (
                        "direct_get_last",
                        "scoped_read",
                        "document_read",
                        "pull_read",
                        "client_open",
                    )
                }
                entry["memory_after_lookups"] = server.memory()
                await jetstream.ensure_stream(js, settings)  # the duplicate window back
                if point == points[-1]:
                    entry["restart_kill"] = await timed_restart(
                        server, probes[0], key, stream, kill=True
                    )
                results["points"].append(entry)
                _log(
                    f"{point:,} documents: restart to first open "
                    f"{entry['restart']['first_open_s']:.2f} s "
                    f"(steady {entry['restart_steady']['first_open_s']:.2f} s), "
                    f"steady rss {entry['restart_steady']['memory']['rss'] / 1e6:.0f} MB"
                )
            await nc.close()
        finally:
            await asyncio.to_thread(server.broker.close)
    results["duration_s"] = time.perf_counter() - t0
    results["loadavg_end"] = os.getloadavg()
    return results


def measure(max_docs: int = DEFAULT_DOCS) -> dict[str, Any]:
    """Run the whole measurement (starts and stops its own server)."""
    return asyncio.run(measure_async(max_docs))


# --- report -------------------------------------------------------------------------------------


def _mb(value: Any) -> str:
    return f"{value / 1e6:,.0f}" if isinstance(value, int | float) else "n/a"


def _ms(value: Any, digits: int = 2) -> str:
    return f"{value / 1000:,.{digits}f}" if isinstance(value, int | float) else "n/a"


def _s(value: Any) -> str:
    return f"{value:,.2f}" if isinstance(value, int | float) else "n/a"


def _slope(points: list[dict[str, Any]], pick: Any) -> float | None:
    """Least-squares bytes per document of ``pick(point)`` over the measured sizes."""
    xs = [p["docs"] for p in points]
    ys = [pick(p) for p in points]
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def render(results: dict[str, Any]) -> str:
    points: list[dict[str, Any]] = results["points"]
    doc = results["document"]
    lines: list[str] = []
    add = lines.append
    add("## Capacity of one server and one stream")
    add("")
    add(
        f"Measured {results['started']} by `{results['command']}` in "
        f"{results['duration_s']:.0f} s; load average "
        f"{' / '.join(f'{x:.2f}' for x in results['loadavg_start'])} (1/5/15 min) at the start, "
        f"{' / '.join(f'{x:.2f}' for x in results['loadavg_end'])} at the end. "
        f"Machine: {results['machine'].get('cpu')}, {results['machine'].get('logical cores')} "
        f"cores, {results['machine'].get('RAM')} RAM, {results['machine'].get('OS')}. "
        f"nats-server {results['versions'].get('nats-server')}, "
        f"nats-py {results['versions'].get('nats-py')}, Python "
        f"{results['versions'].get('python')}."
    )
    add("")
    add(
        f"One nats-server (`broker-config/single.conf`, file storage, R1), the stream as "
        f"`ensure_stream` provisions it (`{results['settings']['stream']}` on "
        f"`{', '.join(results['settings']['subjects'])}`, duplicate window "
        f"{results['settings']['duplicate_window_s']:.0f} s). A document: one sealed Yjs "
        f"snapshot of {doc['snapshot_bytes']:,} B and {len(doc['update_bytes'])} sealed updates "
        f"of {min(doc['update_bytes'])}-{max(doc['update_bytes'])} B "
        f"({doc['stored_bytes']:,} B of payload, {doc['messages']} messages, "
        f"{doc['subjects']} subjects), published with the client's headers (message ids, "
        "compare-and-set) from one connection, pipelined. Latencies are one request at a time "
        "from one Python client on the same machine (loopback), so they include nats-py."
    )
    add("")
    add("### Memory and disk")
    add("")
    lines += table(
        [
            "documents",
            "subjects",
            "messages",
            "disk (MB)",
            "RSS after load (MB)",
            "peak RSS during load (MB)",
            "RSS after restart (MB)",
            "RSS steady (MB)",
            "Go heap steady (MB)",
        ],
        [
            [
                f"{p['docs']:,}",
                f"{p['stream']['num_subjects']:,}",
                f"{p['stream']['messages']:,}",
                _mb(p["disk"]["allocated"]),
                _mb(p["memory_loaded"]["rss"]),
                _mb(p["memory_loaded"].get("peak_rss")),
                _mb(p["restart"]["memory"]["rss"]),
                _mb(p["restart_steady"]["memory"]["rss"]),
                _mb(p["restart_steady"]["memory"].get("HeapAlloc")),
            ]
            for p in points
        ],
        "r" * 9,
    )
    add(
        "*RSS after load*: right after the bulk load. *After restart*: a graceful restart with "
        "every message still inside the duplicate window, so the server rebuilds its message-id "
        f"table for all of them. *Steady*: a restart with the duplicate window set to "
        f"{STEADY_WINDOW:.0f} s, as for messages older than the window, then one document "
        "opened; the Go heap is live memory after a forced collection (`/debug/pprof/heap`)."
    )
    add("")
    slopes = {
        "steady RSS": _slope(points, lambda p: p["restart_steady"]["memory"]["rss"]),
        "steady Go heap": _slope(points, lambda p: p["restart_steady"]["memory"]["HeapAlloc"]),
        "RSS after restart (all message ids in the window)": _slope(
            points, lambda p: p["restart"]["memory"]["rss"]
        ),
        "RSS right after the bulk load": _slope(points, lambda p: p["memory_loaded"]["rss"]),
        "disk": _slope(points, lambda p: p["disk"]["allocated"]),
    }
    biggest = points[-1]["disk"]
    if biggest.get("blocks"):
        add(
            f"At {points[-1]['docs']:,} documents the stream is {biggest['blocks']:,} message "
            f"block files, the largest {biggest['largest_block'] / 1e6:.1f} MB. Memory beyond "
            "the steady figures depends on how much of the stream was written or read "
            "recently: see the table after the write burst below."
        )
        add("")
    add("Per 100k documents (least-squares slope over the sizes measured):")
    add("")
    for name, value in slopes.items():
        shown = f"{value * 100_000 / 1e6:,.0f} MB" if value is not None else "n/a"
        add(f"* {name}: {shown}")
    add("")
    add("### Lookups and opens (one at a time; p50 / p99 in ms)")
    add("")

    def pair(lookups: dict[str, Any], name: str) -> str:
        entry = lookups.get(name)
        if not entry:
            return "—"
        return f"{_ms(entry['p50_us'])} / {_ms(entry['p99_us'])}"

    operations = (
        ("direct_get_last", "direct get, last message by subject"),
        ("direct_get_miss", "direct get of a subject never written"),
        ("scoped_read", "open's first read: consumer on the snapshot subject"),
        ("document_read", "open's second read: consumer on `secsync.s.<h>.<token>.*`"),
        ("pull_read", "the same read by hand: `add_consumer`, one `fetch`, delete"),
        ("client_open", "`client.open` (both reads, live consumer, decrypt, apply)"),
        ("ensure_stream", "`ensure_stream` (every client connect)"),
        ("cas_update_publish", "update publish with compare-and-set"),
    )
    headers = ["operation", *(f"{p['docs']:,} docs" for p in points)]
    for title, key in (
        ("Right after loading (what was just written is still in the server's caches):", "lookups"),
        ("After the steady restart (server caches cold, OS page cache warm):", None),
    ):
        add(title)
        add("")
        rows = []
        for name, label in operations:
            cells = [pair(p[key] if key else p["lookups_after_restart"], name) for p in points]
            if not all(cell == "—" for cell in cells):
                rows.append([label, *cells])
        lines += table(headers, rows)
    rates = ", ".join(
        f"{p['load_docs_per_s']:,.0f} docs/s to {p['docs']:,}"
        for p in points
        if p.get("load_docs_per_s")
    )
    add(
        f"Loading rate (pipelined, {WINDOW:,} publishes in flight, one connection): {rates}. "
        f"Each size also holds {PROBES_PER_POINT} probe documents per size so far, sealed for "
        "their own ids and checked on every open."
    )
    add("")
    last = points[-1]
    if last.get("settling"):
        add(
            f"### After the write burst, at {last['docs']:,} documents (after the lookups "
            "above, nothing but these reads)"
        )
        add("")
        lines += table(
            [
                "seconds after the last write",
                "RSS (MB)",
                "Go heap (MB)",
                "open's second read p50 / p99 (ms)",
            ],
            [
                [
                    f"{sample['after_s']:.0f}",
                    _mb(sample["memory"]["rss"]),
                    _mb(sample["memory"].get("HeapAlloc")),
                    f"{_ms(sample['document_read']['p50_us'])} / "
                    f"{_ms(sample['document_read']['p99_us'])}",
                ]
                for sample in last["settling"]
            ],
            "rrrr",
        )
        sites = last.get("heap_sites_loaded") or []
        if sites:
            top = sites[0]
            frames = " ← ".join(
                f"`{frame.rsplit('/', 1)[-1].split('+', 1)[0]}`" for frame in top["frames"][:3]
            )
            add(
                f"Largest live heap right after loading: {_mb(top['bytes'])} MB allocated at "
                f"{frames}."
            )
            add("")
    add("### Restart and recovery")
    add("")
    restarts = []
    for p in points:
        for label, key in (
            ("graceful, all ids in the window", "restart"),
            ("graceful, steady", "restart_steady"),
            ("after SIGKILL", "restart_kill"),
        ):
            r = p.get(key)
            if r is not None:
                restarts.append(
                    [
                        f"{p['docs']:,}",
                        label,
                        _s(r.get("stop_s")),
                        _s(r["js_enabled_s"]),
                        _s(r["healthz_s"]),
                        _s(r["first_open_s"]),
                    ]
                )
    lines += table(
        [
            "documents",
            "restart",
            "stop (s)",
            "JetStream enabled (s)",
            "`/healthz` ok (s)",
            "first document opened by a new client (s)",
        ],
        restarts,
        "rlrrrr",
    )
    add("Times count from the process start. The server's own words at the largest size:")
    add("")
    last = points[-1]
    for key in ("restart", "restart_steady", "restart_kill"):
        if key in last and last[key]["log"]:
            add(f"* {key}: " + "; ".join(f"`{line}`" for line in last[key]["log"]))
    add("")
    return "\n".join(lines)


def run(out: Path | None = OUT, max_docs: int = DEFAULT_DOCS) -> dict[str, Any]:
    """Measure, write the markdown fragment to ``out`` (unless ``None``), return the numbers."""
    results = measure(max_docs)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(results), encoding="utf-8")
        _log(f"wrote {out}")
    return results


def section(*, quick: bool) -> dict[str, Any]:
    """The benchmark suite's section (``benchmarks.run``): up to 200,000 documents, 5,000 quick."""
    return run(out=None, max_docs=5_000 if quick else 200_000)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--docs", type=int, default=DEFAULT_DOCS, help="largest number of documents"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="markdown fragment to write")
    parser.add_argument("--json", type=Path, help="also write every number as JSON here")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="measure nothing: render a --json file"
    )
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text(encoding="utf-8"))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render(results), encoding="utf-8")
        return 0
    if args.docs < 0:
        parser.error("--docs must not be negative")
    results = run(args.out, args.docs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
