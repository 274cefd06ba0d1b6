"""Loading a large document through nats-server: ``open_timeout`` bounds a stall, never a load
that makes progress, and the application sees how far loading has come."""

from __future__ import annotations

import os
import signal
import time

import pytest

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import BrokerUnavailableError
from secsync.servers.broker import Broker
from secsync.transport.events import LoadProgress
from tests.transport.helpers import KEY, YClient, store_document

UPDATES = 8_000


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
