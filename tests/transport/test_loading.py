"""Loading a large document through nats-server: ``open_timeout`` bounds a stall, never a load
that makes progress, and the application sees how far loading has come."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from typing import Any

import pycrdt
import pytest

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import BrokerUnavailableError
from secsync.protocol import crypto, wire
from secsync.protocol.session import DocumentSession
from secsync.servers.broker import Broker
from secsync.transport.events import LoadProgress
from secsync.transport.subjects import DocumentSubjects
from tests.transport.helpers import KEY, YClient

UPDATES = 8_000


async def store_document(client: secsync.SecsyncClient, doc_id: str, updates: int) -> str:
    """Store a snapshot and ``updates`` one-character updates of one author (sealed by a real
    session, published pipelined); the text they make."""
    ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = ydoc.get("text", type=pycrdt.Text)
    author = crypto.SigningKeyPair.generate()
    session = DocumentSession(
        doc_id,
        author,
        KEY,
        ydoc,
        config=SecsyncConfig(snapshot_after_updates=0, snapshot_after_bytes=0),
    )
    session.load(None, now=0.0)
    snapshot = session.create_snapshot()
    session.snapshot_stored(snapshot.snapshot_id, now=0.0)
    subjects = DocumentSubjects.of(doc_id)
    await client.js.publish(subjects.snapshot, wire.encode(snapshot, include_doc_id=False))
    pending: collections.deque[asyncio.Future[Any]] = collections.deque()
    for i in range(updates):
        text += "abcdefghij"[i % 10]
        (update,) = session.data_to_send()
        session.update_stored(snapshot.snapshot_id, update.clock)
        payload = wire.encode(update, include_doc_id=False)
        pending.append(await client.js.publish_async(subjects.update, payload))
        if len(pending) >= 256:
            await pending.popleft()
    while pending:
        await pending.popleft()
    return str(text)


async def test_a_document_that_takes_longer_than_open_timeout_loads_and_reports_progress(
    broker: Broker,
) -> None:
    config = SecsyncConfig(open_timeout=0.5)
    async with secsync.connect(broker.url, config=config) as client:
        expected = await store_document(client, "large", UPDATES)
        reader = YClient()
        seen: list[LoadProgress] = []
        start = time.monotonic()
        doc = await client.open(
            "large", key=KEY, signing_key=reader.signer, crdt=reader.ydoc, on_progress=seen.append
        )
        elapsed = time.monotonic() - start
        try:
            assert reader.content == expected
            # the open outlasted its timeout several times over, and did not time out
            assert elapsed > 2 * config.open_timeout, elapsed
            assert len(seen) >= UPDATES // 1024
            counts = [p.messages for p in seen]
            assert counts == sorted(counts) and len(set(counts)) == len(counts)
            assert seen[-1].messages == seen[-1].total == UPDATES
            assert {p.doc_id for p in seen} == {"large"}
        finally:
            await doc.close()


async def test_an_open_that_makes_no_progress_raises_a_typed_error_within_open_timeout(
    broker: Broker,
) -> None:
    # request_timeout far longer: the stall is what open_timeout catches
    config = SecsyncConfig(open_timeout=1.0, request_timeout=30.0)
    async with secsync.connect(broker.url, config=config) as client:
        await store_document(client, "stalled", 10)
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)  # the broker stops answering, the socket stays open
        try:
            reader = YClient()
            start = time.monotonic()
            with pytest.raises(BrokerUnavailableError, match="no progress"):
                await client.open("stalled", key=KEY, signing_key=reader.signer, crdt=reader.ydoc)
            assert time.monotonic() - start < 5 * config.open_timeout
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        # and once the broker answers again, the same document opens
        again = YClient()
        doc = await client.open("stalled", key=KEY, signing_key=again.signer, crdt=again.ydoc)
        assert again.content == "abcdefghij"
        await doc.close()
