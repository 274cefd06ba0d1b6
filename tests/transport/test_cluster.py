"""A real 3-node JetStream cluster (secsync.servers.cluster, broker-config/cluster.conf) with
R3 streams.

One cluster serves the module. It measures the compare-and-set retry semantics on both
deployments (a resent publish that already landed: duplicate on the cluster, conflict on a
single server), runs the client end to end on the cluster, and last kills the stream leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import nats
import nats.js.errors
import pycrdt
import pytest
from nats.aio.client import Client
from nats.js.client import JetStreamContext

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import (
    BrokerUnavailableError,
    CompareAndSetBusyError,
    WrongLastSequenceError,
)
from secsync.protocol import wire
from secsync.protocol.events import Event, MessageRejected, RecoveryNeeded, UpdateStored
from secsync.protocol.messages import Update
from secsync.protocol.stream import Heal
from secsync.servers.broker import Broker
from secsync.servers.cluster import Cluster, ClusterNode
from secsync.transport import Document, jetstream
from secsync.transport.jetstream import StreamSettings, ensure_stream, last_message, publish
from tests.factories import plain_yjs_doc
from tests.servers import nats_server_children, no_server_left_running  # noqa: F401

pytestmark = pytest.mark.slow

MSG_ID = "Nats-Msg-Id"
EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"

KEY = secsync.generate_key()
R1 = SecsyncConfig(batch_interval=0.005, publish_timeout=5.0, request_timeout=5.0)
R3 = SecsyncConfig(
    stream_replicas=3, batch_interval=0.005, publish_timeout=5.0, request_timeout=5.0
)


# --- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made = Cluster(tmp_path_factory.mktemp("cluster"))
    started = time.monotonic()
    made.start()
    print(f"\n3-node cluster ready in {time.monotonic() - started:.2f} s")
    pids = [node.pid for node in made.nodes]
    try:
        yield made
    finally:
        made.close()
        assert not any(node.running for node in made.nodes)
        assert not set(pids) & nats_server_children()


async def _ignore_error(exc: Exception) -> None:
    """error_cb: keeps nats-py from printing tracebacks."""


async def connect(servers: str | list[str]) -> Client:
    return await nats.connect(servers, error_cb=_ignore_error)


@pytest.fixture
async def cluster_nc(cluster: Cluster) -> AsyncIterator[Client]:
    conn = await connect(cluster.urls)
    try:
        yield conn
    finally:
        await conn.close()


def unique(prefix: str) -> tuple[str, str]:
    """A stream name and a subject root of its own."""
    tag = secrets.token_hex(4)
    return f"{prefix.upper()}{tag.upper()}", f"{prefix}{tag}"


# --- the cluster and an R3 stream ---------------------------------------------------------------


async def test_three_nodes_elect_a_meta_leader_and_hold_an_r3_stream(
    cluster: Cluster, cluster_nc: Client
) -> None:
    assert cluster.running
    assert [node.name for node in cluster.nodes] == ["n1", "n2", "n3"]
    assert len(set(cluster.urls)) == 3
    meta_leader = await cluster.await_ready()
    assert {node.meta_leader() for node in cluster.nodes} == {meta_leader}

    js = cluster_nc.jetstream()
    name, root = unique("r")
    settings = StreamSettings(name=name, subjects=(f"{root}.s.>",), replicas=3)
    await ensure_stream(js, settings)
    await ensure_stream(js, settings)  # idempotent on the cluster too
    info = await js.stream_info(name)
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    assert info.cluster.name == cluster.name
    leader = await cluster.astream_leader(name)
    assert isinstance(leader, ClusterNode)
    assert info.cluster.leader == leader.name
    assert {p.name for p in info.cluster.replicas or ()} == {"n1", "n2", "n3"} - {leader.name}

    # A write acknowledged by the R3 stream is readable through every node (direct get).
    assert await publish(js, f"{root}.s.d.upd", b"u1") == (1, False)
    for url in cluster.urls:
        nc = await connect(url)
        try:
            async with asyncio.timeout(5):
                while (stored := await last_message(nc.jetstream(), name, f"{root}.s.d.*")) is None:
                    await asyncio.sleep(0.01)  # a follower may not have applied it yet
            assert (stored.sequence, stored.data) == (1, b"u1")
        finally:
            await nc.close()
    await js.delete_stream(name)


# --- retry semantics: single server vs cluster --------------------------------------------------


async def _cas_stream(js: JetStreamContext, replicas: int) -> tuple[str, str, str, dict[str, str]]:
    """A fresh stream; its name, a snapshot subject, and the headers of a first snapshot
    publish (msg id + "no message yet on the document" compare-and-set)."""
    name, root = unique("cas")
    await ensure_stream(js, StreamSettings(name=name, subjects=(f"{root}.s.>",), replicas=replicas))
    headers = {MSG_ID: "snap-1", EXPECTED_SEQ: "0", EXPECTED_SEQ_SUBJECT: f"{root}.s.d.*"}
    return name, f"{root}.s.d.snap", f"{root}.s.d.*", headers


async def _messages(js: JetStreamContext, name: str) -> tuple[int, int]:
    info = await js.stream_info(name)
    return info.state.messages, info.state.last_seq


async def test_resent_cas_publish_is_a_duplicate_on_the_cluster(cluster_nc: Client) -> None:
    """The cluster checks the msg id before the expectation: the resend of a publish that
    landed answers duplicate=True with the original sequence, and nothing more is stored."""
    js = cluster_nc.jetstream()
    name, subject, _doc, headers = await _cas_stream(js, replicas=3)
    assert await publish(js, subject, b"s", headers=headers) == (1, False)
    assert await publish(js, subject, b"s", headers=headers) == (1, True)
    assert await publish(js, subject, b"s", headers=headers) == (1, True)
    assert await _messages(js, name) == (1, 1)
    # Only the msg id makes it a duplicate: another id with the stale expectation conflicts.
    with pytest.raises(WrongLastSequenceError):
        await publish(js, subject, b"t", headers={**headers, MSG_ID: "snap-2"})
    assert await _messages(js, name) == (1, 1)
    await js.delete_stream(name)


async def test_resent_cas_publish_is_a_conflict_on_a_single_server(broker: Broker) -> None:
    """A single server checks the expectation first: the same resend is refused with 10071
    ('wrong last sequence: 1'), and only the stored msg id tells that it was ours."""
    nc = await connect(broker.url)
    try:
        js = nc.jetstream()
        name, subject, doc, headers = await _cas_stream(js, replicas=1)
        assert await publish(js, subject, b"s", headers=headers) == (1, False)
        with pytest.raises(WrongLastSequenceError) as caught:
            await publish(js, subject, b"s", headers=headers)
        assert caught.value.last_sequence == 1
        assert "wrong last sequence: 1" in str(caught.value)
        assert await _messages(js, name) == (1, 1)
        last = await last_message(js, name, doc)
        assert last is not None
        assert (last.sequence, last.headers[MSG_ID]) == (1, "snap-1")
    finally:
        await nc.close()


async def test_concurrent_compare_and_set_publishes_are_busy_not_refused(
    cluster_nc: Client,
) -> None:
    """Updates of a document all expect the same snapshot subject sequence. A clustered stream
    evaluates one such expectation at a time: the others are answered 10164 while it is in
    process, stored nothing, and the same publish sent again is stored."""
    js = cluster_nc.jetstream()
    name, root = unique("busy")
    await ensure_stream(js, StreamSettings(name=name, subjects=(f"{root}.s.>",), replicas=3))
    snap, upd = f"{root}.s.d.snap", f"{root}.s.d.upd"
    assert await publish(js, snap, b"s", headers={MSG_ID: "s"}) == (1, False)
    publisher = jetstream.Publisher(cluster_nc, timeout=5.0)
    await publisher.start()
    try:
        headers = [
            {MSG_ID: f"u{i}", EXPECTED_SEQ: "1", EXPECTED_SEQ_SUBJECT: snap} for i in range(40)
        ]
        futures = [await publisher.publish(upd, b"u%d" % i, h) for i, h in enumerate(headers)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await publisher.close()
    busy = [i for i, o in enumerate(outcomes) if isinstance(o, CompareAndSetBusyError)]
    stored = [i for i, o in enumerate(outcomes) if isinstance(o, tuple)]
    print(f"\n40 concurrent compare-and-set publishes: {len(stored)} stored, {len(busy)} busy")
    assert busy and stored and len(busy) + len(stored) == 40
    assert (await _messages(js, name))[0] == 1 + len(stored)  # a busy answer stored nothing
    for i in busy:  # the same bytes and headers again, one at a time
        assert (await publish(js, upd, b"u%d" % i, headers=headers[i]))[1] is False
    assert (await _messages(js, name))[0] == 41
    await js.delete_stream(name)


# --- the client end to end on the cluster -------------------------------------------------------


def _events(doc: Document) -> list[Event]:
    """The document's events so far, without waiting."""
    out = []
    while not doc._events.empty():
        out.append(doc._events.get_nowait())
    return out


class YClient:
    def __init__(self) -> None:
        self.signer = secsync.SigningKeyPair.generate()
        self.ydoc: pycrdt.Doc[Any] = plain_yjs_doc()
        self.text = self.ydoc.get("text", type=pycrdt.Text)

    @property
    def content(self) -> str:
        return str(self.text)

    async def open(self, client: secsync.SecsyncClient, doc_id: str) -> Document:
        return await client.open(doc_id, key=KEY, signing_key=self.signer, crdt=self.ydoc)


async def until(doc: Document, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait, event by event, until ``predicate`` holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await doc.next_event()


def rotated(urls: list[str], by: int) -> list[str]:
    return urls[by:] + urls[:by]


async def test_two_clients_on_different_nodes_converge(cluster: Cluster) -> None:
    urls = cluster.urls
    async with (
        # In order, not shuffled: each client starts at another node.
        secsync.connect(rotated(urls, 0), config=R3, dont_randomize=True) as c1,
        secsync.connect(rotated(urls, 1), config=R3, dont_randomize=True) as c2,
    ):
        assert c1.nc.connected_url.port != c2.nc.connected_url.port
        info = await c1.js.stream_info(R3.stream_name)
        assert info.config.num_replicas == 3

        a, b = YClient(), YClient()
        da = await a.open(c1, "cluster-converge")
        a.text.insert(0, "hello")
        await da.flush(10)
        db = await b.open(c2, "cluster-converge")
        assert b.content == "hello"  # loaded from what the cluster stored

        b.text.insert(5, " world")
        await db.flush(10)
        await until(da, lambda: a.content == "hello world")
        a.text.insert(0, ">> ")
        b.text.insert(len(b.text), "!")
        await asyncio.gather(da.flush(10), db.flush(10))
        await until(da, lambda: a.content == ">> hello world!")
        await until(db, lambda: b.content == ">> hello world!")


@pytest.fixture(params=["cluster", "single"])
def deployment(request: pytest.FixtureRequest) -> tuple[str, list[str], SecsyncConfig]:
    """(kind, client URLs, config): the module's cluster (R3) or a single server (R1)."""
    if request.param == "cluster":
        return "cluster", request.getfixturevalue("cluster").urls, R3
    return "single", [request.getfixturevalue("broker").url], R1


@pytest.mark.parametrize("echo", ["unseen", "seen"])
async def test_retried_snapshot_publish_is_stored_once(
    deployment: tuple[str, list[str], SecsyncConfig], echo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot publish whose acknowledgement was "lost" is retried by the Document and
    stored once, on the cluster as on a single server.

    ``echo``: whether the document saw its own stored snapshot (live delivery) before the
    retry. Unseen (live delivery paused, as after a disconnect), the retry carries the stale
    expectation of the first attempt; seen, the document's expectation has moved on with it.
    """
    kind, urls, config = deployment
    # A stream of its own: then the document's messages have consecutive stream sequences, and
    # the Document knows its last sequence from its own acknowledgements. In a stream shared
    # with other documents it learns it only from the echo of its own update, which may come
    # after flush() returns, and the first snapshot publish below could be refused for that.
    name, root = unique("retry")
    config = replace(config, stream_name=name, subject_root=root)
    attempts: list[tuple[dict[str, str], tuple[int, bool] | WrongLastSequenceError]] = []
    original = jetstream.publish

    async def spy(*args: Any, **kwargs: Any) -> tuple[int, bool]:
        headers = dict(kwargs.get("headers") or {})
        try:
            result = await original(*args, **kwargs)
        except WrongLastSequenceError as exc:
            attempts.append((headers, exc))
            raise
        attempts.append((headers, result))
        return result

    async with (
        secsync.connect(urls, config=config) as client,
        secsync.connect(urls, config=config) as other,
    ):
        a = YClient()
        da = await a.open(client, f"retry-{echo}")
        a.text.insert(0, "x")
        await da.flush(10)
        snap = da.session.create_snapshot()
        payload = wire.encode(snap, include_doc_id=False)
        headers = da.binding.headers(snap)
        if echo == "unseen":
            await da._stop_live()
        first, _, _ = await da._io.store(da.subjects.snapshot, payload, headers)
        if echo == "seen":
            await until(da, lambda: da.last_sequence >= first)
        # the acknowledgement was "lost": the same snapshot is published again
        monkeypatch.setattr(jetstream, "publish", spy)
        await da._sender.publish_stored(snap)
        monkeypatch.undo()
        if echo == "unseen":
            await da._start_live()

        [(retry_headers, outcome)] = attempts
        assert retry_headers[MSG_ID] == headers[MSG_ID]
        if echo == "unseen":
            assert retry_headers[EXPECTED_SEQ] == headers[EXPECTED_SEQ] != str(first)
        else:
            assert retry_headers[EXPECTED_SEQ] == str(first)
        if kind == "single" and echo == "unseen":
            # refused as a conflict; the Document recognised its msg id on the stored snapshot
            assert isinstance(outcome, WrongLastSequenceError)
            assert outcome.last_sequence == first
        else:
            assert outcome == (first, True)  # the broker's duplicate answer

        stored = await jetstream.messages_after(
            client.nc, config.stream_name, da.subjects.snapshot, 1
        )
        assert sum(m.headers.get(MSG_ID) == headers[MSG_ID] for m in stored) == 1
        assert da.session.active_snapshot is not None
        assert da.session.active_snapshot.snapshot_id == snap.snapshot_id
        assert da.last_sequence == first

        # The document goes on from there, and a newcomer loads the same state.
        a.text.insert(1, "y")
        await da.flush(10)
        b = YClient()
        db = await b.open(other, f"retry-{echo}")
        assert b.content == "xy"
        assert db.session.active_snapshot is not None
        assert db.session.active_snapshot.snapshot_id == snap.snapshot_id


# --- writers at full speed: acknowledged means stored ---------------------------------------------

# Each case runs once in CI; SECSYNC_CLUSTER_RUNS=N repeats every case N times.
RUNS = range(int(os.environ.get("SECSYNC_CLUSTER_RUNS", "1")))
TOKENS_PER_WRITER = 400


async def type_tokens(doc: Document, who: YClient, tag: str, count: int) -> list[str]:
    """Type ``count`` tokens one at a time (each its own update, batch_interval=0), waiting
    after every hundred until all are acknowledged; the tokens. (While updates are in flight
    the session writes no snapshot: the pauses let the snapshot policy act.)"""
    typed = []
    for i in range(count):
        token = f"{tag}{i}"
        who.text.insert(len(who.text), f" {token}")
        typed.append(token)
        await asyncio.sleep(0)  # yield to the sender: one update per token, not one burst
        if i % 100 == 99:
            await doc.flush(90)
    await doc.flush(90)
    return typed


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("snapshots", ["never", "default", "every-50"])
@pytest.mark.parametrize("writers", [2, 3])
async def test_every_acknowledged_token_is_stored_once(
    cluster: Cluster, writers: int, snapshots: str, run: int
) -> None:
    """Writers on different nodes type at full speed into one document; once each one's flush
    returned (all acknowledged), a fresh reader holds every token exactly once and the writers
    converge on the same text. Default configuration but for the stream's replicas."""
    name, root = unique("full")
    config = SecsyncConfig(
        stream_name=name, subject_root=root, stream_replicas=3, batch_interval=0.0
    )
    if snapshots == "never":
        config = replace(config, snapshot_after_updates=0, snapshot_after_bytes=0)
    elif snapshots == "every-50":  # the default (500) is reached only in longer runs
        config = replace(config, snapshot_after_updates=50)
    urls = cluster.urls
    doc_id = f"full-speed-{writers}-{snapshots}-{run}"
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                secsync.connect(rotated(urls, i), config=config, dont_randomize=True)
            )
            for i in range(writers)
        ]
        people = [YClient() for _ in range(writers)]
        docs = [await p.open(c, doc_id) for p, c in zip(people, clients, strict=True)]
        started = time.monotonic()
        typed = await asyncio.gather(
            *(
                type_tokens(d, p, "abcdefgh"[i], TOKENS_PER_WRITER)
                for i, (d, p) in enumerate(zip(docs, people, strict=True))
            )
        )
        acknowledged_after = time.monotonic() - started
        acknowledged = [t for tokens in typed for t in tokens]

        reader = YClient()
        later = await stack.enter_async_context(secsync.connect(urls, config=config))
        fresh = await reader.open(later, doc_id)
        present = Counter(reader.content.split())
        found = sum(present[t] > 0 for t in acknowledged)
        missing = [t for t in acknowledged if present[t] == 0]
        doubled = [t for t in acknowledged if present[t] > 1]
        snapshot_messages = await jetstream.messages_scoped(
            later.js, name, fresh.subjects.snapshot, 1
        )
        print(
            f"\n{writers} writers, snapshots {snapshots}, run {run}: "
            f"acknowledged {len(acknowledged)}, present {found}, "
            f"lost {len(missing)}, doubled {len(doubled)}; snapshots stored "
            f"{len(snapshot_messages)}; all acknowledged after "
            f"{acknowledged_after:.2f} s"
        )
        assert missing == []
        assert doubled == []
        assert sorted(present) == sorted(acknowledged)
        if snapshots == "never":
            assert len(snapshot_messages) == 1  # the initial one
        elif snapshots == "every-50":
            assert len(snapshot_messages) > 2  # written while the writers typed
        # the writers converge on the reader's text
        everyone = [*docs, fresh]
        await until_all(
            everyone, lambda: all(p.content == reader.content for p in people), timeout=30
        )
        for doc in everyone:
            await doc.close()
    await clients_js_cleanup(urls, name)


async def until_all(
    docs: list[Document], predicate: Callable[[], bool], timeout: float = 15.0
) -> None:
    """Wait until ``predicate`` holds, re-checking after each event of any of ``docs``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            waiting = [asyncio.ensure_future(d.next_event()) for d in docs]
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waiting:
                    task.cancel()


async def clients_js_cleanup(urls: list[str], stream: str) -> None:
    nc = await connect(urls)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def test_recovery_that_fails_for_a_broker_side_reason_is_retried(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recovery whose reads fail (no answer in time: what a partition without a meta leader
    gives) is tried again with backoff until it succeeds, instead of leaving the gap open."""
    name, root = unique("heal")
    config = SecsyncConfig(stream_name=name, subject_root=root, stream_replicas=3)
    async with (
        secsync.connect(cluster.urls, config=config) as c1,
        secsync.connect(cluster.urls, config=config) as c2,
    ):
        a, b = YClient(), YClient()
        da = await a.open(c1, "heal-retry")
        a.text.insert(0, "hello")
        await da.flush(10)
        db = await b.open(c2, "heal-retry")
        await db.pause_receiving()  # b learns of what follows only by recovering
        a.text.insert(5, " world")
        await da.flush(10)
        failures = []
        original = jetstream.messages_scoped

        async def flaky(*args: Any, **kwargs: Any) -> list[jetstream.StoredMessage]:
            if len(failures) < 3:
                failures.append(args[2])
                raise BrokerUnavailableError("no answer from the broker in time")
            return await original(*args, **kwargs)

        monkeypatch.setattr(jetstream, "messages_scoped", flaky)
        db._perform([Heal(RecoveryNeeded("updates never arrived"))])
        await until(db, lambda: b.content == "hello world", timeout=30)
        assert len(failures) == 3
        assert not any(isinstance(e, MessageRejected) for e in _events(db))
    nc = await connect(cluster.urls)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


# --- failover (last: it kills a node of the module's cluster, and restarts it) -----------------


async def test_clients_ride_out_the_loss_of_the_stream_leader(cluster: Cluster) -> None:
    # the default configuration, retries and timeouts included (docs/operations.md quotes it)
    config = SecsyncConfig(stream_replicas=3)
    urls = cluster.urls
    async with (
        secsync.connect(rotated(urls, 0), config=config, dont_randomize=True) as c1,
        secsync.connect(rotated(urls, 1), config=config, dont_randomize=True) as c2,
    ):
        a, b = YClient(), YClient()
        da = await a.open(c1, "failover")
        a.text.insert(0, "before")
        await da.flush(10)
        db = await b.open(c2, "failover")
        assert b.content == "before"

        async def burst() -> list[str]:
            """Type 60 tokens, flushing every 10; the stream leader dies in the middle."""
            typed = []
            for i in range(60):
                token = f" t{i}"
                a.text.insert(len(a.text), token)
                typed.append(token.strip())
                await asyncio.sleep(0)
                if i % 10 == 9:
                    await da.flush(30)
            return typed

        leader = await cluster.astream_leader(config.stream_name)
        typing = asyncio.ensure_future(burst())
        await until(db, lambda: "t25" in b.content, timeout=30)  # mid-burst, some stored
        killed_at = time.monotonic()
        leader.kill()
        try:
            typed = await asyncio.wait_for(typing, 60)
            await da.flush(30)
            stored_after = time.monotonic() - killed_at
            await until(db, lambda: b.content == a.content, timeout=30)
            converged_after = time.monotonic() - killed_at
            successor = await cluster.astream_leader(config.stream_name)
            assert successor.name != leader.name
        finally:
            typing.cancel()
            await leader.arestart()
            await cluster.await_ready()
        print(
            f"\nstream leader {leader.name} killed mid-burst: all stored "
            f"{stored_after:.2f} s later, converged after {converged_after:.2f} s, "
            f"new leader {successor.name}"
        )
        # every token exactly once, on both sides
        assert b.content.split() == ["before", *typed]
        # every update the broker acknowledged is in the stream
        # (a snapshot may be written during the burst: clocks count per snapshot)
        acknowledged = {
            (e.snapshot_id, e.clock) for e in _events(da) if isinstance(e, UpdateStored)
        }
        # Read from the stream leader (STREAM.MSG.GET, not a consumer or a direct get, which
        # a replica still catching up after the restart may answer from an older view).
        last = (await c1.js.stream_info(config.stream_name)).state.last_seq
        in_stream = []
        for seq in range(1, last + 1):
            try:
                raw = await c1.js.get_msg(config.stream_name, seq)
            except nats.js.errors.NotFoundError:
                continue  # purged by an earlier test of the module
            if raw.subject == da.subjects.update and raw.data:
                in_stream.append(raw.data)
        decoded = [wire.decode(data, doc_id="failover") for data in in_stream]
        mine = {
            (m.public_data.ref_snapshot_id, m.clock)
            for m in decoded
            if isinstance(m, Update) and m.author == a.signer.public_key
        }
        assert acknowledged and acknowledged <= mine
        b.text.insert(0, "> ")
        await db.flush(10)
        await until(da, lambda: a.content == b.content and a.content.startswith("> before t0"))
