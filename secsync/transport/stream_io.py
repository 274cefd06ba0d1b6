"""The reads and writes one document makes on JetStream, behind one small interface.

:class:`JetStreamLink` performs what the stream binding (:mod:`secsync.protocol.stream`)
asks for: reads scoped to the document's subjects (what per-document permissions allow), the
last message of a subject, publishes with the compare-and-set headers the binding computed
(in parts, by one atomic batch, when a message exceeds the payload limit). Calls go through
the :mod:`secsync.transport.jetstream` module, so a test can stand in for one of its
functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from secsync.config import SecsyncConfig
from secsync.errors import PayloadTooLargeError, PermissionDeniedError
from secsync.protocol.stream import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    MSG_ID,
    StoredMessage,
    part_limit,
)
from secsync.transport import chunks, jetstream

if TYPE_CHECKING:
    from secsync.store import LocalStore
    from secsync.transport.live import ShardRouter


class Connection(Protocol):
    """What a document needs of the connection it runs on (a ``SecsyncClient`` is one)."""

    connected: asyncio.Event
    store: LocalStore | None

    @property
    def nc(self) -> Any: ...

    @property
    def js(self) -> Any: ...

    @property
    def publisher(self) -> jetstream.Publisher: ...

    @property
    def router(self) -> ShardRouter: ...

    def denied(self, subject: str) -> PermissionDeniedError | None: ...


class JetStreamLink:
    """One document's reads and publishes on ``connection`` (see the module docstring)."""

    def __init__(self, connection: Connection, config: SecsyncConfig) -> None:
        self._connection = connection
        self._config = config
        self._stream = config.stream_name
        self.read_stream = config.read_stream or config.stream_name

    def part_limit(self) -> int:
        return part_limit(self._connection.nc.max_payload, self._config.max_part_bytes)

    async def read(
        self,
        subject: str,
        start: int,
        *,
        limit: int | None = None,
        origin: bool = False,
        on_page: jetstream.OnPage | None = None,
    ) -> list[StoredMessage]:
        """Stored messages on ``subject`` from ``start`` on, through a consumer scoped to the
        document; ``origin``: from the stream itself, not a mirror read instead; ``on_page``
        takes them page by page as they arrive instead (see :func:`jetstream.messages_scoped`).
        """
        return await jetstream.messages_scoped(
            self._connection.js,
            self._stream if origin else self.read_stream,
            subject,
            start,
            timeout=self._config.request_timeout,
            limit=limit,
            on_page=on_page,
        )

    async def last(self, subject: str) -> StoredMessage | None:
        """The last message on ``subject``, through a scoped consumer (mirrors too)."""
        return await jetstream.last_scoped(
            self._connection.js, self.read_stream, subject, timeout=self._config.request_timeout
        )

    async def last_direct(self, subject: str) -> StoredMessage | None:
        """The last message on ``subject`` by direct get on the stream itself."""
        return await jetstream.last_message(
            self._connection.js, self._stream, subject, timeout=self._config.request_timeout
        )

    async def between(
        self, subject: str, first: int, last: int, *, stored_after: int, max_count: int
    ) -> tuple[list[StoredMessage], int]:
        return await jetstream.messages_between(
            self._connection.js,
            self.read_stream,
            subject,
            first,
            last,
            stored_after=stored_after,
            max_count=max_count,
            timeout=self._config.request_timeout,
        )

    async def count(self, subject: str) -> int:
        return await jetstream.count_scoped(
            self._connection.js, self.read_stream, subject, timeout=self._config.request_timeout
        )

    async def store(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> tuple[int, int, bool]:
        """Store ``payload``, in parts by one atomic batch when it exceeds the payload limit;
        the first and last sequence, and whether the broker answered "duplicate"."""
        limit = self.part_limit()
        if len(payload) <= limit:
            try:
                seq, duplicate = await jetstream.publish(
                    self._connection.js,
                    subject,
                    payload,
                    headers=headers,
                    timeout=self._config.publish_timeout,
                )
                return seq, seq, duplicate
            except PayloadTooLargeError:
                limit = max(1024, limit // 2)
        parts = chunks.split(payload, limit)
        n = len(parts)
        items: list[tuple[str, bytes, dict[str, str]]] = []
        for index, part in enumerate(parts, start=1):
            part_headers = chunks.part_headers(index, n)
            if index == 1:
                # the compare-and-set rides on the first part, the message id on the last
                part_headers[EXPECTED_LAST_SUBJECT_SEQ] = headers[EXPECTED_LAST_SUBJECT_SEQ]
                part_headers[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = headers[
                    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT
                ]
            if index == n:
                part_headers[MSG_ID] = headers[MSG_ID]
            items.append((subject, part, part_headers))
        last, count = await jetstream.publish_batch(
            self._connection.nc, items, timeout=self._config.publish_timeout * 2
        )
        return last - count + 1, last, False

    async def pipeline(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        settle: Callable[[tuple[int, bool] | None, Any], None],
    ) -> None:
        """Publish without waiting; ``settle(result, error)`` runs on the acknowledgement."""
        await self._connection.publisher.publish_then(subject, payload, headers, settle)

    async def follow(
        self, subject: str, start: int, deliver: Callable[[Any], Awaitable[None]]
    ) -> Any:
        """An ordered push consumer on ``subject`` from ``start`` on, delivering to
        ``deliver``; the subscription, for :meth:`unfollow`."""
        from nats.js import api

        class NamedConsumerConfig(api.ConsumerConfig):
            # nats-py creates the consumer from config.evolve(), also when it re-creates the
            # ordered consumer after a gap or missed heartbeats: give each creation a random
            # name. A named create carries the filter in its subject, which per-document
            # permissions can match (an unnamed one cannot be scoped), and a fresh name never
            # collides with the consumer it replaces, which may still exist for a while.
            def evolve(self, **params: Any) -> Any:
                params.setdefault("name", f"secsync_{secrets.token_hex(16)}")
                return dataclasses.replace(self, **params)

        config = NamedConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
        )
        return await self._connection.js.subscribe(
            subject,
            stream=self.read_stream,
            cb=deliver,
            ordered_consumer=True,
            idle_heartbeat=self._config.idle_heartbeat,
            config=config,
        )

    async def unfollow(self, sub: Any) -> None:
        """Stop ``sub`` and delete its consumer (best effort: the server drops it anyway)."""
        timeout = self._config.request_timeout
        with contextlib.suppress(Exception):
            info = await asyncio.wait_for(sub.consumer_info(), timeout)
            await asyncio.wait_for(
                self._connection.js.delete_consumer(self.read_stream, info.name), timeout
            )
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def publish_core(self, subject: str, payload: bytes) -> None:
        """A core NATS publish (ephemeral messages: never stored)."""
        await self._connection.nc.publish(subject, payload)

    def denied(self, subject: str) -> PermissionDeniedError | None:
        return self._connection.denied(subject)
