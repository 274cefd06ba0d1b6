"""Reading: direct gets, batch direct gets (:func:`messages_after`) and reads through a
consumer scoped to a document (:func:`messages_scoped`, :func:`messages_between`,
:func:`last_scoped`, :func:`count_scoped`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import nats.aio.msg
import nats.errors
import nats.js.errors
from nats.js import api

from secsync.errors import (
    BrokerRequestError,
    StreamNotFoundError,
    TransportError,
)
from secsync.logs import get_logger
from secsync.protocol.stream_types import StoredMessage
from secsync.transport.jetstream_errors import (
    API_PREFIX,
    HEADER_DESCRIPTION,
    HEADER_NUM_PENDING,
    HEADER_SEQUENCE,
    HEADER_STATUS,
    HEADER_SUBJECT,
    NO_DIRECT,
    header_dict,
    translated,
    validate_stream,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

log = get_logger("secsync.jetstream")

#: Reply bytes asked for per page of a batch direct get (the server sends at least one message).
PAGE_MAX_BYTES = 16 * 1024 * 1024
_UNREADY_RETRIES = 20  # about 4 s in all

OnPage = Callable[[list[StoredMessage], int], None]
"""Takes one page of a read as it arrives, and how many messages the read takes in all."""


# --- reading ------------------------------------------------------------------------------------


def _stored(raw: api.RawStreamMsg) -> StoredMessage:
    headers = header_dict(raw.headers)
    subject = raw.subject or headers.get(HEADER_SUBJECT, "")
    sequence = raw.seq if raw.seq is not None else int(headers.get(HEADER_SEQUENCE, "0"))
    return StoredMessage(subject=subject, sequence=sequence, data=raw.data or b"", headers=headers)


async def _direct_get(
    js: JetStreamContext, stream: str, *, timeout: float, **request: Any
) -> StoredMessage | None:
    validate_stream(stream)
    with translated(f"stream {stream}", no_stream=NO_DIRECT):
        try:
            async with asyncio.timeout(timeout):
                raw = await js.get_msg(stream, direct=True, **request)
        except nats.js.errors.NotFoundError:
            return None
    return _stored(raw)


async def last_message(
    js: JetStreamContext, stream: str, subject: str, *, timeout: float = 5.0
) -> StoredMessage | None:
    """The last message stored on ``subject`` (wildcards allowed), or ``None``; by direct get.

    A stream that does not exist or lacks ``allow_direct`` raises :class:`StreamNotFoundError`.
    nats-py applies the JetStream context's own timeout to the request as well.
    """
    return await _direct_get(js, stream, timeout=timeout, subject=subject)


async def get_message(
    js: JetStreamContext, stream: str, sequence: int, *, timeout: float = 5.0
) -> StoredMessage | None:
    """The message at stream ``sequence``, or ``None`` (never stored, deleted or purged)."""
    if sequence < 1:
        raise ValueError(f"stream sequences start at 1, not {sequence}")
    return await _direct_get(js, stream, timeout=timeout, seq=sequence)


_Ack = nats.aio.msg.Msg.Ack
_V1_FIELDS = (7, 5, 6, 4, 8)  # timestamp, stream and consumer sequence, delivered, pending
_V2_FIELDS = (_Ack.Timestamp, _Ack.StreamSeq, _Ack.ConsumerSeq, _Ack.NumDelivered, _Ack.NumPending)
_V1_TOKENS = 9


def stream_sequence(reply: str) -> int:
    """``msg.metadata.sequence.stream`` of a message delivered with ``reply``, with exactly the
    checks (and errors) of nats-py's ``Msg.Metadata._from_reply``, in its order, without
    building the two frozen dataclasses it returns (most of a delivery's cost)."""
    return delivery_sequences(reply)[0]


def delivery_sequences(reply: str) -> tuple[int, int]:
    """The stream and consumer sequences of a message delivered with ``reply`` (checked as
    :func:`stream_sequence` checks them)."""
    tokens = nats.aio.msg.Msg.Metadata._get_metadata_fields(reply)
    timestamp, stream, consumer, delivered, pending = (
        _V1_FIELDS if len(tokens) == _V1_TOKENS else _V2_FIELDS
    )
    datetime.datetime.fromtimestamp(int(tokens[timestamp]) / 1_000_000_000.0, datetime.UTC)
    sequence = int(tokens[stream])
    consumer_sequence = int(tokens[consumer])
    for field in (delivered, pending):
        int(tokens[field])  # checked as nats-py checks it
    return sequence, consumer_sequence


def delivered(msg: Msg, sequence: int | None = None) -> StoredMessage:
    """A message as a consumer delivered it (its stream sequence from the reply metadata,
    unless the caller already read it there: ``sequence``)."""
    return StoredMessage(
        subject=msg.subject,
        sequence=stream_sequence(msg.reply) if sequence is None else sequence,
        data=msg.data,
        headers=header_dict(msg.headers),
    )


def _from_reply(msg: Msg, headers: dict[str, str]) -> StoredMessage:
    try:
        sequence = int(headers[HEADER_SEQUENCE])
        subject = headers[HEADER_SUBJECT]
    except (KeyError, ValueError):
        raise TransportError("direct get reply without sequence or subject") from None
    return StoredMessage(subject=subject, sequence=sequence, data=msg.data, headers=headers)


async def messages_scoped(
    js: JetStreamContext,
    stream: str,
    subject_filter: str,
    start_sequence: int,
    *,
    timeout: float = 5.0,
    page: int = 1024,
    limit: int | None = None,
    on_page: OnPage | None = None,
) -> list[StoredMessage]:
    """What :func:`messages_after` returns, read through a short-lived consumer instead.

    The consumer is named and filtered on ``subject_filter``, so its create subject
    (``$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>``) names what is read and
    per-document permissions can allow exactly that; batch direct get cannot be scoped. It is
    a pull consumer, fetched in pages of ``page`` up to what it reported pending at creation
    (waiting, within ``timeout`` per page, for a replica that is still catching up):
    on a large stream a push consumer on the same wildcard filter takes several times longer
    to deliver the same messages (``docs/operations.md``, capacity). ``limit``: at most this
    many messages (the first ones). ``on_page``: each page is handed to it as it arrives,
    with how many messages the read is to take in all, instead of being returned (the next
    page is asked for first, so the broker sends it while the caller works on this one).
    """

    def how_many(pending: int) -> int:
        return pending if limit is None else min(pending, limit)

    stored, _pending = await _scoped(
        js,
        stream,
        subject_filter,
        start_sequence,
        how_many,
        timeout=timeout,
        page=page,
        on_page=on_page,
    )
    return stored


async def messages_between(
    js: JetStreamContext,
    stream: str,
    subject: str,
    first: int,
    last: int,
    *,
    stored_after: int,
    max_count: int,
    timeout: float = 5.0,
) -> tuple[list[StoredMessage], int]:
    """The messages on ``subject`` with sequences ``first..last``, in order, and how many
    there are; nothing is fetched (an empty list) when there are more than ``max_count``.

    Read like :func:`messages_scoped` (a consumer scoped to ``subject`` from ``first``):
    its pending count at creation, less ``stored_after`` (how many messages on ``subject``
    the caller knows are stored after ``last``), is how many lie in the range, so only those
    are fetched. Messages stored meanwhile, or a range emptied meanwhile, never make it
    return a message outside the range.
    """
    if first < 1 or last < first:
        raise ValueError(f"no sequence range {first}..{last}")
    counted: list[int] = []

    def how_many(pending: int) -> int:
        in_range = max(0, pending - stored_after)
        counted.append(in_range)
        return in_range if in_range <= max_count else 0

    stored, _pending = await _scoped(js, stream, subject, first, how_many, timeout=timeout)
    return [m for m in stored if first <= m.sequence <= last], counted[0] if counted else 0


async def last_scoped(
    js: JetStreamContext, stream: str, subject: str, *, timeout: float = 5.0
) -> StoredMessage | None:
    """The last message stored on ``subject`` (no wildcard), or ``None``, through a consumer
    scoped to it (``DeliverPolicy.LAST_PER_SUBJECT``): what :func:`last_message` returns, under
    the permissions that allow :func:`messages_scoped`, on a mirror too. Its stream sequence
    comes from the delivery metadata."""
    if "*" in subject or ">" in subject:
        raise ValueError(f"one subject, not a wildcard: {subject!r}")
    stored, _pending = await _scoped(
        js, stream, subject, 1, lambda pending: min(pending, 1), timeout=timeout, last_only=True
    )
    return stored[-1] if stored else None


async def count_scoped(
    js: JetStreamContext, stream: str, subject: str, *, timeout: float = 5.0
) -> int:
    """How many messages are stored on ``subject``: the pending count of a consumer scoped to
    it (created and deleted; nothing is fetched)."""
    _stored, pending = await _scoped(js, stream, subject, 1, lambda _pending: 0, timeout=timeout)
    return pending


async def _scoped(
    js: JetStreamContext,
    stream: str,
    subject_filter: str,
    start_sequence: int,
    how_many: Callable[[int], int],
    *,
    timeout: float,
    page: int = 1024,
    last_only: bool = False,
    on_page: OnPage | None = None,
) -> tuple[list[StoredMessage], int]:
    """Read ``how_many(pending)`` messages through a named pull consumer (see
    :func:`messages_scoped`); returns them (none if ``on_page`` takes them) and the
    consumer's pending count at creation. ``last_only``: the consumer delivers the last
    message of each subject instead."""
    name = f"secsync_{secrets.token_hex(16)}"
    config = api.ConsumerConfig(
        name=name,
        filter_subject=subject_filter,
        deliver_policy=(
            api.DeliverPolicy.LAST_PER_SUBJECT if last_only else api.DeliverPolicy.BY_START_SEQUENCE
        ),
        opt_start_seq=None if last_only else max(1, start_sequence),
        ack_policy=api.AckPolicy.NONE,
        mem_storage=True,
        num_replicas=1,
        inactive_threshold=max(5.0, 2 * timeout),
    )
    stored: list[StoredMessage] = []
    with translated(subject_filter):
        # a bound on a read that stops making progress: each page moves it on
        async with asyncio.timeout(timeout * 4) as cap:
            info = await js.add_consumer(stream, config, timeout=timeout)
            puller: _Puller | None = None
            pending = int(info.num_pending or 0)
            try:
                total = remaining = how_many(pending)
                if remaining:
                    puller = await _Puller.start(js, stream, name)
                    await puller.request(min(remaining, page), timeout)
                unready = 0
                while remaining > 0 and puller is not None:
                    batch, status = await puller.page(timeout)
                    if status == _NO_RESPONDERS:
                        # In a cluster a consumer just created may not answer pulls yet
                        # ("no responders"): ask again shortly, a bounded number of times.
                        unready += 1
                        if unready > _UNREADY_RETRIES:
                            raise nats.js.errors.ServiceUnavailableError
                        await asyncio.sleep(0.02 * unready)
                        await puller.request(min(remaining, page), timeout)
                        continue
                    if not batch:
                        # what did not come is the healing's business (gaps, recovery), not
                        # a reason to fail the read
                        break
                    # Not "until a message says nothing is pending": a consumer placed on a
                    # replica that is still catching up (after a leader change) says so early.
                    remaining -= len(batch)
                    cap.reschedule(asyncio.get_running_loop().time() + timeout * 4)
                    if remaining > 0:
                        # asked for before this page is looked at: the broker sends it meanwhile
                        await puller.request(min(remaining, page), timeout)
                    messages = [delivered(msg) for msg in batch]
                    if on_page is None:
                        stored.extend(messages)
                    else:
                        on_page(messages, total)
            finally:
                if puller is not None:
                    await puller.stop()
                with contextlib.suppress(Exception):
                    await js.delete_consumer(stream, name)
    return stored, pending


_NO_RESPONDERS = "503"
_REQUEST_ENDED = frozenset({"404", "408", "409"})  # no messages, expired, refused


class _Puller:
    """Pull requests to one consumer, answered on one inbox, taken a request at a time.

    What nats-py's ``PullSubscription.fetch`` does, without its cost per message (a task and a
    timer each): messages are collected by the subscription's callback and the reader wakes
    once per request, when all of it has arrived or a status ends it."""

    def __init__(self, nc: NATS, subject: str) -> None:
        self._nc = nc
        self._subject = subject
        self._inbox = nc.new_inbox()
        self._sub: Any = None
        self._arrived: list[Msg] = []
        self._status: str | None = None
        self._wanted = 0
        self._ready = asyncio.Event()

    @classmethod
    async def start(cls, js: JetStreamContext, stream: str, consumer: str) -> _Puller:
        nc = js._nc  # the connection the context was made from
        puller = cls(nc, f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}")
        puller._sub = await nc.subscribe(
            puller._inbox,
            cb=puller._take,
            pending_msgs_limit=512 * 1024,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        return puller

    async def _take(self, msg: Msg) -> None:
        status = msg.headers.get(api.Header.STATUS) if msg.headers else None
        if status is None:
            self._arrived.append(msg)
            if len(self._arrived) >= self._wanted:
                self._ready.set()
        elif status != "100":  # heartbeats say nothing about this request
            self._status = status
            self._ready.set()

    async def request(self, batch: int, timeout: float) -> None:
        """Ask for ``batch`` messages; they go to :meth:`page` (one request at a time)."""
        self._wanted = batch
        self._status = None
        self._ready.clear()
        request = {"batch": batch, "expires": int(timeout * 1_000_000_000)}
        await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)

    async def page(self, timeout: float) -> tuple[list[Msg], str | None]:
        """What the last request brought: all of it, or what came before a status ended it
        (with that status), or before ``timeout`` and a little more."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout + 1.0):
                while len(self._arrived) < self._wanted and self._status is None:
                    await self._ready.wait()
                    self._ready.clear()
        taken, self._arrived = self._arrived[: self._wanted], self._arrived[self._wanted :]
        status = self._status if self._status not in _REQUEST_ENDED else None
        if status is not None and status != _NO_RESPONDERS:
            log.info("pull_status", status=status)
        return taken, status

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


async def messages_after(
    nc: NATS,
    stream: str,
    subject_filter: str,
    start_sequence: int,
    *,
    batch: int = 256,
    timeout: float = 5.0,
) -> list[StoredMessage]:
    """Every stored message with a sequence >= ``start_sequence`` on ``subject_filter``, in order.

    Pages through the stream by batch direct get (``{"seq", "next_by_subj", "batch"}`` on
    ``$JS.API.DIRECT.GET.<stream>``, up to ``batch`` messages or :data:`PAGE_MAX_BYTES` per page),
    without a consumer. It ends when a page's end-of-batch marker reports nothing pending, so
    messages stored meanwhile may be included. ``timeout`` bounds the wait for each reply message.
    """
    validate_stream(stream)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    request_subject = f"{API_PREFIX}.DIRECT.GET.{stream}"
    where = f"stream {stream}, {subject_filter}"
    result: list[StoredMessage] = []
    sequence = max(1, start_sequence)
    with translated(where, no_stream=NO_DIRECT):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        try:
            while True:
                request = {
                    "seq": sequence,
                    "next_by_subj": subject_filter,
                    "batch": batch,
                    "max_bytes": PAGE_MAX_BYTES,
                }
                await nc.publish(request_subject, json.dumps(request).encode(), reply=inbox)
                received = 0
                pending = ""
                while True:
                    msg = await sub.next_msg(timeout=timeout)
                    headers = header_dict(msg.headers)
                    status = headers.get(HEADER_STATUS)
                    if status is None:
                        stored = _from_reply(msg, headers)
                        if stored.sequence >= sequence:
                            result.append(stored)
                            sequence = stored.sequence + 1
                            received += 1
                        continue
                    if status == "204":  # end of this batch
                        pending = headers.get(HEADER_NUM_PENDING, "0")
                        break
                    if status == "404":  # nothing (more) matches
                        return result
                    if status == "503":
                        raise StreamNotFoundError(f"{NO_DIRECT} ({where})")
                    description = headers.get(HEADER_DESCRIPTION)
                    raise BrokerRequestError(
                        f"direct get failed: {status} {description or ''} ({where})".strip(),
                        err_code=int(status) if status.isdigit() else None,
                    )
                if received == 0 or pending in ("", "0"):
                    return result
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
