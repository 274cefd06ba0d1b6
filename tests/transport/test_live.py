"""Documents sharing live consumers (``live_consumers="per_shard"``) through nats-server: at
most one consumer per shard, and every guarantee of a consumer per document: nothing stored
is missed (during the load, after a lost consumer, across a restart), nothing forged applies,
and closing frees the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple

import pycrdt
import pytest

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import RemoteInputError, StreamNotFoundError
from secsync.protocol.events import GapDetected, MessageRejected, RecoveryNeeded
from secsync.servers.broker import Broker
from secsync.transport import Document
from secsync.transport.subjects import DocumentSubjects
from tests.transport.helpers import KEY, YClient, open_y, store_document, until

SHARED = SecsyncConfig(live_consumers="per_shard", presence=False, idle_heartbeat=0.2)
DOCS = 40


class Clients(NamedTuple):
    writers: secsync.SecsyncClient  # a consumer per document, as members write
    service: secsync.SecsyncClient  # the shared consumers under test


@pytest.fixture
async def clients(broker: Broker) -> AsyncIterator[Clients]:
    async with (
        secsync.connect(broker.url) as writers,
        secsync.connect(broker.url, config=SHARED) as service,
    ):
        yield Clients(writers, service)


async def consumers(client: secsync.SecsyncClient) -> int:
    info = await client.js.stream_info(client.config.stream_name)
    return int(info.state.consumer_count)


async def consumer_names(client: secsync.SecsyncClient) -> list[str]:
    """The shard consumers on the stream (a per-document consumer filters one document)."""
    infos = await client.js.consumers_info(client.config.stream_name)
    return [i.name for i in infos if (i.config.filter_subject or "").endswith(".>")]


async def test_many_documents_share_at_most_one_consumer_per_shard(clients: Clients) -> None:
    writers, service = clients
    names = [f"doc-{i}" for i in range(DOCS)]
    for name in names:
        await store_document(writers, name, 3)
    shards = {DocumentSubjects.of(name).shard for name in names}
    reader = YClient()
    docs = {}
    for name in names:
        ydoc = secsync.new_yjs_doc(reader.signer)
        ydoc.get("text", type=pycrdt.Text)
        docs[name] = await service.open(name, key=KEY, signing_key=reader.signer, crdt=ydoc)
    assert await consumers(service) == len(shards) < DOCS

    # a writer edits every document; each edit reaches its own document, and only it
    writer = YClient()
    for name in names:
        doc = await open_y(writers, name, writer)
        writer.text.insert(len(writer.text), f"<{name}>")
        await doc.flush(timeout=10)
        await doc.close()
        writer = YClient()

    def text(name: str) -> str:
        return str(docs[name].session.crdt.doc.get("text", type=pycrdt.Text))

    await until(list(docs.values()), lambda: all(f"<{n}>" in text(n) for n in names))
    for name in names:
        assert text(name).count("<") == 1, (name, text(name))

    for doc in docs.values():
        await doc.close()
    assert await consumers(service) == 0  # the last document of a shard takes its consumer


async def test_nothing_stored_while_a_document_loads_is_missed(clients: Clients) -> None:
    writers, service = clients
    expected = await store_document(writers, "busy", 2_000)
    writer = YClient()
    wdoc = await open_y(writers, "busy", writer)
    stop = asyncio.Event()

    async def type_on() -> int:
        typed = 0
        while not stop.is_set():
            writer.text.insert(len(writer.text), "w")
            typed += 1
            await asyncio.sleep(0)
        return typed

    typing = asyncio.create_task(type_on())
    reader = YClient()
    doc = await open_y(service, "busy", reader)
    for _ in range(300):  # and on after it opened: a message missed shows as a gap
        writer.text.insert(len(writer.text), "w")
        await asyncio.sleep(0)
    stop.set()
    typed = await typing + 300
    await wdoc.flush(timeout=15)
    events = []
    async with asyncio.timeout(20):
        while reader.content.count("w") != typed:
            events.append(await doc.next_event())
    assert reader.content.replace("w", "") == expected
    assert reader.content == writer.content
    # reached live, not healed afterwards: nothing waited for a predecessor or recovered
    assert not [e for e in events if isinstance(e, GapDetected | RecoveryNeeded)]
    await wdoc.close()
    await doc.close()


async def test_a_deleted_consumer_is_recreated_from_where_it_was(clients: Clients) -> None:
    writers, service = clients
    await store_document(writers, "kept", 1)
    reader = YClient()
    doc = await open_y(service, "kept", reader)
    writer = YClient()
    wdoc = await open_y(writers, "kept", writer)
    writer.text.insert(len(writer.text), "before")
    await until(doc, lambda: "before" in reader.content)

    names = await consumer_names(service)
    assert len(names) == 1
    await service.js.delete_consumer(service.config.stream_name, names[0])
    writer.text.insert(len(writer.text), "-while-gone")  # stored with no consumer
    await wdoc.flush(timeout=10)
    writer.text.insert(len(writer.text), "-after")
    await until(doc, lambda: reader.content == writer.content, timeout=10)
    assert service.router.resets >= 1
    assert await consumer_names(service) != names
    assert reader.content.count("-while-gone") == 1
    await wdoc.close()
    await doc.close()


async def test_live_delivery_survives_a_broker_restart(broker: Broker, clients: Clients) -> None:
    writers, service = clients
    await store_document(writers, "restart", 1)
    reader = YClient()
    doc = await open_y(service, "restart", reader)
    await broker.arestart()
    await until(doc, lambda: service.connected.is_set(), timeout=15)
    writer = YClient()
    wdoc: Document | None = None
    async with asyncio.timeout(20):
        while wdoc is None:
            try:
                wdoc = await open_y(writers, "restart", writer)
            except secsync.SecsyncError:
                await asyncio.sleep(0.1)  # the restarted broker elects its stream
    writer.text.insert(len(writer.text), "after restart")
    await until(doc, lambda: "after restart" in reader.content, timeout=20)
    await wdoc.close()
    await doc.close()


async def test_forged_messages_on_a_shared_document_are_rejected_and_honest_ones_apply(
    clients: Clients,
) -> None:
    writers, service = clients
    await store_document(writers, "target", 1)
    reader = YClient()
    doc = await open_y(service, "target", reader)
    subjects = DocumentSubjects.of("target")
    await writers.js.publish(subjects.update, b"\x93not a secsync message")
    rejected: list[MessageRejected] = []

    async def watch() -> None:
        async for event in doc.events():
            if isinstance(event, MessageRejected):
                rejected.append(event)
                return

    async with asyncio.timeout(10):
        await watch()
    assert isinstance(rejected[0].error, RemoteInputError)
    writer = YClient()
    wdoc = await open_y(writers, "target", writer)
    writer.text.insert(len(writer.text), "honest")
    await until(doc, lambda: "honest" in reader.content)
    await wdoc.close()
    await doc.close()


async def test_messages_of_documents_nobody_here_follows_are_dropped(clients: Clients) -> None:
    writers, service = clients
    # two documents of one shard, only the first followed
    first = "followed"
    shard = DocumentSubjects.of(first).shard
    other = next(
        f"other-{i}" for i in range(1000) if DocumentSubjects.of(f"other-{i}").shard == shard
    )
    await store_document(writers, first, 1)
    reader = YClient()
    doc = await open_y(service, first, reader)
    stranger = YClient()
    sdoc = await open_y(writers, other, stranger)
    stranger.text.insert(0, "not for the service")
    await sdoc.flush(timeout=10)
    writer = YClient()
    wdoc = await open_y(writers, first, writer)
    writer.text.insert(len(writer.text), "mine")
    await until(doc, lambda: "mine" in reader.content)
    assert service.router.dropped >= 1
    assert "not for the service" not in reader.content
    await sdoc.close()
    await wdoc.close()
    await doc.close()


async def test_paused_receiving_catches_up_on_resume(clients: Clients) -> None:
    writers, service = clients
    await store_document(writers, "paused", 1)
    reader = YClient()
    doc = await open_y(service, "paused", reader)
    await doc.pause_receiving()
    assert await consumers(service) == 0
    writer = YClient()
    wdoc = await open_y(writers, "paused", writer)
    writer.text.insert(len(writer.text), "while paused")
    await wdoc.flush(timeout=10)
    assert "while paused" not in reader.content
    await doc.resume_receiving()
    assert "while paused" in reader.content  # read on resume, before following again
    writer.text.insert(len(writer.text), "+live")
    await until(doc, lambda: reader.content == writer.content)
    await wdoc.close()
    await doc.close()


async def test_a_consumer_lost_before_its_first_message_does_not_replay_the_shard(
    clients: Clients,
) -> None:
    writers, service = clients
    first = "fresh"
    shard = DocumentSubjects.of(first).shard
    other = next(f"old-{i}" for i in range(1000) if DocumentSubjects.of(f"old-{i}").shard == shard)
    await store_document(writers, other, 50)  # history of the shard nobody follows
    await store_document(writers, first, 1)
    reader = YClient()
    doc = await open_y(service, first, reader)
    [name] = await consumer_names(service)
    await service.js.delete_consumer(service.config.stream_name, name)
    async with asyncio.timeout(10):
        while service.router.resets == 0:  # the heartbeat watchdog notices (0.4 s)
            await asyncio.sleep(0.05)
    writer = YClient()
    wdoc = await open_y(writers, first, writer)
    writer.text.insert(len(writer.text), "!")
    await until(doc, lambda: reader.content == writer.content)
    # re-created after where "new" began, not from the start of the stream
    assert service.router.dropped == 0
    assert doc.redelivered == 0
    await wdoc.close()
    await doc.close()


async def test_a_missing_stream_is_a_clear_error(broker: Broker) -> None:
    config = SecsyncConfig(
        live_consumers="per_shard", provision_stream=False, stream_name="NOSUCH", open_timeout=2
    )
    async with secsync.connect(broker.url, config=config) as service:
        reader = YClient()
        with pytest.raises(StreamNotFoundError):
            await open_y(service, "nowhere", reader)
        assert service.router.consumers == 0
