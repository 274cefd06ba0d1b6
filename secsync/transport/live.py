"""Live delivery shared by many documents: one ordered push consumer per shard of the stream,
each message handed to the document whose token its subject carries
(``SecsyncConfig.live_consumers="per_shard"``).

A backend that follows thousands of documents would otherwise hold one server consumer, one
subscription and one heartbeat per document. Here the server holds at most sixteen consumers
(one per shard digit of the document tokens, :mod:`secsync.transport.subjects`) whatever the
number of documents, and an idle document costs no timer and no server state.

:class:`OrderedConsumer` is the ordered push consumer itself, the guarantees of nats-py's
(every stored message of the filter once, in stream order, re-created from the last delivered
sequence after a gap, a missed heartbeat or a reconnect) without its per-message task work,
and with the start kept when it is re-created before its first message. :class:`ShardRouter`
routes its messages: a document registers before it reads what is stored (:meth:`route`), so
whatever is stored after that read reaches it live; what it already read is dropped by
sequence (``StreamBinding.applied_already``).

The messages of documents of a shard that nobody here follows are delivered too, and dropped:
the price of sharing, measured in docs/benchmarks.md. A service needs permission to create
consumers on ``{root}.s.<shard>.>`` (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from secsync.config import SecsyncConfig
from secsync.logs import get_logger
from secsync.transport.jetstream_errors import NO_STREAM, translated
from secsync.transport.reads import delivery_sequences

log = get_logger("secsync.live")

_ACK_PREFIX = "$JS.ACK."
_STATUS = "Status"
_LAST_CONSUMER = "Nats-Last-Consumer"
_LAST_STREAM = "Nats-Last-Stream"
_STALLED = "Nats-Consumer-Stalled"
_MISSED_HEARTBEATS = 2


class _Link(Protocol):
    @property
    def nc(self) -> Any: ...

    @property
    def js(self) -> Any: ...


Deliver = Callable[[Any, int], None]  # a delivered nats-py Msg, and its stream sequence


class OrderedConsumer:
    """An ordered push consumer on ``filter_subject`` from stream sequence ``start`` on (``None``:
    after the stream's last message when it is created); each delivered message (a nats-py
    ``Msg``, with its stream sequence) goes to ``deliver``, synchronously, in order."""

    def __init__(
        self,
        link: _Link,
        config: SecsyncConfig,
        stream: str,
        filter_subject: str,
        deliver: Deliver,
        *,
        start: int | None,
    ) -> None:
        self._link = link
        self._config = config
        self._stream = stream
        self._filter = filter_subject
        self._deliver = deliver
        self._new = start is None
        self.last_sequence = 0 if start is None else start - 1
        """The last stream sequence delivered (or the one before the first to deliver)."""
        self._expected = 1  # the consumer sequence of the next message
        self._sub: Any = None
        self._name = ""
        self._active = False
        self._stopped = False
        self._watchdog: asyncio.Task[None] | None = None
        self._resetting: asyncio.Task[None] | None = None
        self.resets = 0
        """How often the consumer was re-created (a gap, a stall, a reconnect)."""

    @property
    def name(self) -> str:
        """The server-side name of the consumer now (a fresh one after each re-creation)."""
        return self._name

    async def start(self) -> None:
        await self._create()
        self._watchdog = asyncio.create_task(self._watch(), name="secsync-live-watch")

    async def stop(self) -> None:
        self._stopped = True
        for task in (self._watchdog, self._resetting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._drop(self._sub, self._name)
        self._sub = None

    async def _create(self) -> None:
        from nats.js import api

        nc = self._link.nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=self._on_message)
        name = f"secsync_{secrets.token_hex(16)}"
        config = api.ConsumerConfig(
            name=name,
            deliver_subject=inbox,
            deliver_policy=api.DeliverPolicy.NEW
            if self._new
            else api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if self._new else self.last_sequence + 1,
            filter_subject=self._filter,
            ack_policy=api.AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=self._config.idle_heartbeat,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=max(5.0, 4 * self._config.idle_heartbeat),
        )
        # The new subscription is current before the create request goes out: its first
        # messages may arrive before the answer.
        old_sub, old_name, old_expected = self._sub, self._name, self._expected
        self._sub, self._name, self._expected, self._active = sub, name, 1, True
        try:
            info = await self._link.js.add_consumer(
                self._stream, config=config, timeout=self._config.request_timeout
            )
            if self._new:
                # where "new" began (no stream info needed, which members may not ask for);
                # a message that arrived before this answer already moved it on
                self._new = False
                if self._expected == 1:
                    self.last_sequence = int(info.delivered.stream_seq)
        except BaseException:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            self._sub, self._name, self._expected = old_sub, old_name, old_expected
            raise
        if old_sub is not None:
            await self._drop(old_sub, old_name)

    async def _drop(self, sub: Any, name: str) -> None:
        if sub is None:
            return
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._link.js.delete_consumer(self._stream, name), self._config.request_timeout
            )

    async def _on_message(self, msg: Any) -> None:
        if self._stopped or self._sub is None or msg._sid != self._sub._id:
            return  # a replaced consumer's late message
        reply = msg.reply
        if reply.startswith(_ACK_PREFIX):
            self._active = True
            sequence, consumer_sequence = delivery_sequences(reply)
            if consumer_sequence != self._expected:
                self._reset("gap")
                return
            self._expected += 1
            self.last_sequence = sequence
            self._deliver(msg, sequence)
            return
        headers = msg.headers or {}
        if headers.get(_STATUS) != "100":
            return
        self._active = True
        if reply:  # a flow-control request: we process at once, so answer at once
            await self._link.nc.publish(reply, b"")
            return
        stalled = headers.get(_STALLED)
        if stalled:
            await self._link.nc.publish(stalled, b"")
        last = headers.get(_LAST_CONSUMER)
        if last is not None and int(last) != self._expected - 1:
            self._reset("missed")  # a heartbeat says the server delivered more than we saw

    def _reset(self, reason: str) -> None:
        if self._resetting is not None and not self._resetting.done():
            return
        self._expected = -1  # nothing more is taken until the new consumer is in place
        self.resets += 1
        log.info("live_consumer_reset", reason=reason, start=self.last_sequence + 1)
        self._resetting = asyncio.create_task(self._recreate())

    async def _recreate(self) -> None:
        attempt = 0
        while not self._stopped:
            try:
                await self._create()
                return
            except Exception as exc:  # the broker away: the watchdog and backoff try again
                log.info("live_consumer_retry", attempt=attempt, error=type(exc).__name__)
                attempt += 1
                await asyncio.sleep(min(self._config.retry_max, 0.1 * 2**attempt))

    async def _watch(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self._config.idle_heartbeat * _MISSED_HEARTBEATS)
            if not self._active and self._link.nc.is_connected:
                self._reset("heartbeat")
            self._active = False


@dataclasses.dataclass
class _Shard:
    routes: dict[str, Deliver]
    consumer: OrderedConsumer | None = None
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class ShardRouter:
    """One :class:`OrderedConsumer` per shard with documents routed to it; messages go to the
    document whose token their subject carries (see the module docstring)."""

    def __init__(self, link: _Link, config: SecsyncConfig) -> None:
        self._link = link
        self._config = config
        self._stream = config.read_stream or config.stream_name
        self._shards: dict[str, _Shard] = {}
        self.dropped = 0
        """Messages of documents nobody here follows (delivered with the shard, dropped)."""

    @property
    def consumers(self) -> int:
        return sum(1 for shard in self._shards.values() if shard.consumer is not None)

    @property
    def resets(self) -> int:
        """How often a shard's consumer was re-created (see :attr:`OrderedConsumer.resets`)."""
        return sum(s.consumer.resets for s in self._shards.values() if s.consumer is not None)

    async def route(self, shard: str, token: str, deliver: Deliver) -> None:
        """Deliver to ``deliver`` every message stored for ``token`` from now on. The shard's
        consumer, created if need be, starts after the stream's last message: what was stored
        before is the document's to read."""
        entry = self._shards.setdefault(shard, _Shard({}))
        entry.routes[token] = deliver
        async with entry.lock:
            if entry.consumer is not None or token not in entry.routes:
                return
            try:
                consumer = OrderedConsumer(
                    self._link,
                    self._config,
                    self._stream,
                    self._filter(shard),
                    self._routed(entry),
                    start=None,
                )
                with translated(self._filter(shard), no_stream=NO_STREAM):
                    await consumer.start()
            except BaseException:
                entry.routes.pop(token, None)
                raise
            entry.consumer = consumer

    async def unroute(self, shard: str, token: str) -> None:
        """No more deliveries for ``token``; the shard's consumer goes with its last route."""
        entry = self._shards.get(shard)
        if entry is None:
            return
        entry.routes.pop(token, None)
        async with entry.lock:
            if entry.routes or entry.consumer is None:
                return
            consumer, entry.consumer = entry.consumer, None
            await consumer.stop()

    async def close(self) -> None:
        for entry in self._shards.values():
            entry.routes.clear()
            if entry.consumer is not None:
                consumer, entry.consumer = entry.consumer, None
                await consumer.stop()

    def _filter(self, shard: str) -> str:
        return f"{self._config.subject_root}.s.{shard}.>"

    def _routed(self, entry: _Shard) -> Deliver:
        routes = entry.routes

        def deliver(msg: Any, sequence: int) -> None:
            # {root}.s.{shard}.{token}.{kind}: the token is the last but one
            subject: str = msg.subject
            end = subject.rfind(".")
            target = routes.get(subject[subject.rfind(".", 0, end) + 1 : end])
            if target is None:
                self.dropped += 1
            else:
                target(msg, sequence)

        return deliver
