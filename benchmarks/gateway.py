"""Edits from an unmodified secsync JS client (``createSyncMachine`` in Node) through the gateway
and JetStream to a Python reader, beside the same edits from a Python writer.

    python -m benchmarks.gateway [--edits 400]

Also a section of ``python -m benchmarks.run`` (``--only gateway``). One embedded broker, one
gateway (uvicorn, this process), one Node process (tests/js/client/driver.mjs), one Python
reader; all on this machine, so the clocks compared are one clock.

* **Latency**: ``edits`` single-word inserts, one every 20 ms; per edit, the time from the
  writer's insert (the JS driver's timestamp, or Python's) to the Python reader seeing it.
* **Throughput**: ``edits`` inserts as fast as the writer takes them; edits per second until
  the reader has them all. A JS client batches the changes typed while an update is in flight,
  so it sends fewer updates than edits (counted).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python benchmarks/gateway.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pycrdt

import secsync
from benchmarks.common import median, percentile
from benchmarks.report.format import table
from secsync.config import SecsyncConfig
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.events import UpdateApplied
from secsync.servers.broker import Broker
from secsync.transport import Document

CONFIG = SecsyncConfig(change_encoding="secsync-json")
PACE_S = 0.020


class Reader:
    """A Python reader: when each token first appears in its text (epoch ms)."""

    def __init__(self, doc: Document, text: pycrdt.Text) -> None:
        self.doc, self.text = doc, text
        self.seen: dict[str, float] = {}
        self.updates = 0

    async def until_seen(self, tokens: list[str], timeout: float = 120.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                now = time.time() * 1000
                content = str(self.text)
                for token in tokens:
                    if token not in self.seen and token in content:
                        self.seen[token] = now
                if all(t in self.seen for t in tokens):
                    return
                event = await self.doc.next_event()
                if isinstance(event, UpdateApplied):
                    self.updates += 1


def _latencies(sent: dict[str, float], reader: Reader) -> list[float]:
    return [reader.seen[t] - sent[t] for t in sent]


async def _scenario(
    reader: Reader,
    tokens: list[str],
    write: Callable[[str], Awaitable[float]],
    paced: bool,
) -> tuple[dict[str, float], float]:
    """Write ``tokens`` (paced or flat out) while ``reader`` watches; the send times, and the
    seconds from the first send until the reader had them all."""
    sent: dict[str, float] = {}
    watching = asyncio.create_task(reader.until_seen(tokens))
    start = time.perf_counter()
    for token in tokens:
        sent[token] = await write(token)
        if paced:
            await asyncio.sleep(PACE_S)
    await watching
    return sent, time.perf_counter() - start


async def measure(edits: int) -> dict[str, Any]:
    from secsync.gateway import Gateway, GatewayServer, allow_all
    from tests.gateway.node_client import NodeDriver

    results: dict[str, Any] = {"edits": edits, "pace_ms": PACE_S * 1000}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        try:
            server = await GatewayServer(
                Gateway(broker.url, allow_all, secsync_config=CONFIG)
            ).start()
            js = await NodeDriver.start()
            try:
                async with secsync.connect(broker.url, config=CONFIG) as client:
                    for mode in ("paced", "flat"):
                        results[mode] = await _pair(
                            js, server.url, client, broker.url, edits=edits, mode=mode
                        )
            finally:
                await js.aclose()
                await server.stop()
        finally:
            broker.close()
    return results


async def _open(client: secsync.SecsyncClient, doc_id: str, key: bytes) -> tuple[Document, Any]:
    signer = SigningKeyPair.generate()
    ydoc = secsync.new_yjs_doc(signer)
    doc = await client.open(doc_id, key=key, signing_key=signer, crdt=ydoc)
    return doc, ydoc.get("text", type=pycrdt.Text)


async def _pair(
    js: Any, url: str, client: secsync.SecsyncClient, broker_url: str, *, edits: int, mode: str
) -> dict[str, Any]:
    paced = mode == "paced"
    out: dict[str, Any] = {}
    key = os.urandom(32)
    # JS writer -> gateway -> JetStream -> Python reader
    doc_id = f"bench-js-{mode}-{os.urandom(4).hex()}"
    name = f"w-{mode}"
    await js.open(name, url, doc_id, key, os.urandom(32))
    await js.wait_loaded(name)
    await js.insert(name, "start ")
    reader_doc, reader_text = await _open(client, doc_id, key)
    reader = Reader(reader_doc, reader_text)
    await reader.until_seen(["start"])

    async def js_write(token: str) -> float:
        reply = await js.command("insert", client=name, text=token + " ")
        return float(reply["wall"])

    tokens = [f"j{i}x" for i in range(edits)]
    reader.updates = 0
    if paced:
        sent, seconds = await _scenario(reader, tokens, js_write, paced)
    else:  # flat out inside Node: one edit per turn of its event loop
        watching = asyncio.create_task(reader.until_seen(tokens))
        start = time.perf_counter()
        reply = await js.command("burst", client=name, tokens=[t + " " for t in tokens])
        await watching
        seconds = time.perf_counter() - start
        sent = dict(zip(tokens, map(float, reply["walls"]), strict=True))
    out["js"] = _summary(_latencies(sent, reader), seconds, edits, reader.updates)
    await js.close(name)
    await reader_doc.close()

    # Python writer -> JetStream -> Python reader: the baseline
    doc_id = f"bench-py-{mode}-{os.urandom(4).hex()}"
    writer_doc, writer_text = await _open(client, doc_id, key)
    async with secsync.connect(broker_url, config=CONFIG) as other:
        reader_doc, reader_text = await _open(other, doc_id, key)
        reader = Reader(reader_doc, reader_text)

        async def py_write(token: str) -> float:
            writer_text.insert(len(writer_text), token + " ")
            sent = time.time() * 1000
            await asyncio.sleep(0)  # one edit per turn of the event loop, as in Node
            return sent

        tokens = [f"p{i}x" for i in range(edits)]
        sent, seconds = await _scenario(reader, tokens, py_write, paced)
        out["python"] = _summary(_latencies(sent, reader), seconds, edits, reader.updates)
        await reader_doc.close()
    await writer_doc.close()
    return out


def _summary(latencies: list[float], seconds: float, edits: int, updates: int) -> dict[str, Any]:
    return {
        "p50_ms": median(latencies),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "edits_per_s": edits / seconds,
        "updates_applied": updates,
    }


def run(*, quick: bool) -> dict[str, Any]:
    try:
        return asyncio.run(measure(50 if quick else 400))
    except BaseException as exc:  # no Node.js here: say so in the report
        if type(exc).__name__ in ("Skipped", "Failed"):
            return {"skipped": str(exc)}
        raise


def render(numbers: dict[str, Any]) -> str:
    lines = ["## JS clients through the gateway", ""]
    if "skipped" in numbers:
        return "\n".join([*lines, f"Not measured: {numbers['skipped']}", ""])
    lines += [
        f"{numbers['edits']} single-word edits, from an unmodified secsync JS client "
        "(`createSyncMachine` in Node, through the gateway) and from a Python writer, each "
        "read by a Python reader over the same embedded broker. Latency: writer's insert to "
        f"the reader seeing it, edits {numbers['pace_ms']:.0f} ms apart. Throughput: edits "
        "flat out (one per turn of the writer's event loop), until the reader has all of "
        "them. A Python writer gathers the edits of `batch_interval` (20 ms) into one update; "
        "a JS client sends at once and batches only while an update is in flight.",
        "",
    ]
    rows = []
    for mode, label in (("paced", "paced"), ("flat", "flat out")):
        for writer in ("js", "python"):
            m = numbers[mode][writer]
            rows.append(
                [
                    f"{'JS → gateway' if writer == 'js' else 'Python'} → JetStream → Python, "
                    + label,
                    f"{m['p50_ms']:.1f}",
                    f"{m['p99_ms']:.1f}",
                    f"{m['edits_per_s']:.0f}",
                    m["updates_applied"],
                ]
            )
    lines += table(["writer → reader", "p50 ms", "p99 ms", "edits/s", "updates applied"], rows)
    js, py = numbers["flat"]["js"], numbers["flat"]["python"]
    lines.append(
        f"Flat out, the JS path carries {js['edits_per_s'] / py['edits_per_s']:.0%} of the "
        "Python writer's edit rate; paced, its median latency is "
        f"{numbers['paced']['js']['p50_ms'] / numbers['paced']['python']['p50_ms']:.1f} times the "
        "Python writer's."
    )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=400)
    args = parser.parse_args(argv)
    print(render(asyncio.run(measure(args.edits))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
