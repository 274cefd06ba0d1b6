"""Publishing: one message (:func:`publish`), an atomic batch (:func:`publish_batch`, ADR-50,
which nats-py does not wrap), and pipelined publishes on one reply inbox (:class:`Publisher`:
no task per message, every wait bounded)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from secsync.errors import (
    BrokerUnavailableError,
    PayloadTooLargeError,
    SecsyncError,
    StreamNotFoundError,
    TransportError,
)
from secsync.logs import get_logger
from secsync.transport.jetstream_errors import (
    HEADER_BATCH_COMMIT,
    HEADER_BATCH_ID,
    HEADER_BATCH_SEQUENCE,
    HEADER_STATUS,
    MAX_BATCH_MESSAGES,
    NO_STREAM,
    json_reply,
    translated,
)

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.client import JetStreamContext

log = get_logger("secsync.jetstream")


# --- publishing ---------------------------------------------------------------------------------


async def publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bool]:
    """Store one message; its stream sequence and whether it was a duplicate (``Nats-Msg-Id``).

    Compare-and-set headers (``Nats-Expected-Last-Subject-Sequence`` and friends) raise
    :class:`WrongLastSequenceError` on a mismatch, :class:`CompareAndSetBusyError` when a
    cluster did not evaluate them (another one on that subject in process). A resent publish
    with both a msg id and an expectation is refused that way on a single server (the
    expectation is checked before the duplicate window), while a cluster answers "duplicate".
    """
    sent = dict(headers) if headers else None
    with translated(subject, no_stream=NO_STREAM):
        try:
            async with asyncio.timeout(timeout):
                ack = await js.publish(subject, payload, timeout=timeout, headers=sent)
        except ValueError:
            # nats-py parses the reply with json.loads and does not guard it.
            raise TransportError(f"malformed reply from the broker ({subject})") from None
    return int(ack.seq), bool(ack.duplicate)


async def publish_batch(
    nc: NATS,
    items: Sequence[tuple[str, bytes, Mapping[str, str]]],
    *,
    timeout: float = 10.0,
) -> tuple[int, int]:
    """Store ``items`` (subject, payload, headers) all-or-nothing by one atomic batch.

    Returns the stream sequence of the last message and the number stored; the messages have the
    consecutive sequences ``last - count + 1 .. last``. Compare-and-set headers belong on the first
    item (a per-subject expectation fails if an earlier item of the batch writes that subject); a
    ``Nats-Msg-Id`` on the last item makes a resend of a committed batch fail with
    :class:`DuplicateBatchError`, storing nothing. A :class:`BrokerUnavailableError` leaves it
    open whether the batch was committed. The whole call is bounded by ``timeout``.
    """
    count = len(items)
    if count == 0:
        raise ValueError("an atomic batch needs at least one message")
    if count > MAX_BATCH_MESSAGES:
        raise PayloadTooLargeError(
            f"{count} messages exceed the atomic batch limit of {MAX_BATCH_MESSAGES}"
        )
    max_payload = nc.max_payload
    for subject, data, _ in items:
        if max_payload > 0 and len(data) > max_payload:
            raise PayloadTooLargeError(
                f"a message of {len(data)} bytes exceeds the broker's max_payload of "
                f"{max_payload} ({subject})"
            )
    batch_id = secrets.token_hex(16)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reply: dict[str, Any] = {}
    subject = items[0][0]
    with translated(subject, no_stream=NO_STREAM):
        async with asyncio.timeout_at(deadline):
            for index, (subject, data, extra) in enumerate(items, start=1):
                headers = dict(extra)
                headers[HEADER_BATCH_ID] = batch_id
                headers[HEADER_BATCH_SEQUENCE] = str(index)
                last = index == count
                if last:
                    headers[HEADER_BATCH_COMMIT] = "1"
                if index == 1 or last:
                    remaining = max(deadline - loop.time(), 0.001)
                    msg = await nc.request(subject, data, timeout=remaining, headers=headers)
                    if last:
                        reply = json_reply(msg.data, subject=subject)
                    elif msg.data:  # the first message is answered empty unless it failed
                        json_reply(msg.data, subject=subject)
                else:
                    await nc.publish(subject, data, headers=headers)
    sequence = reply.get("seq")
    stored = reply.get("count", 1 if count == 1 else None)
    if not isinstance(sequence, int) or stored != count:
        raise TransportError(f"unexpected batch acknowledgement {reply!r} ({subject})")
    if count > 1 and reply.get("batch") != batch_id:
        raise TransportError(f"acknowledgement of another batch {reply!r} ({subject})")
    return sequence, count


#: ``callback(result, error)`` of :meth:`Publisher.publish_then`.
Acknowledged = Callable[[tuple[int, bool] | None, SecsyncError | None], None]


class Publisher:
    """Pipelined acknowledged publishes on one connection, with a bound on every wait.

    :meth:`publish` returns a future of ``(sequence, duplicate)``, :meth:`publish_then` calls
    back with it (or with the error) as soon as the answer is read; many can be outstanding.
    Acknowledgements arrive on one wildcard inbox subscription, and no task and no timer exist
    per message: a single sweep fails what is unanswered after ``timeout`` with
    :class:`BrokerUnavailableError`, so nothing waits forever (nats-py's ``publish_async``
    futures never time out, and lose error acknowledgements). Error acknowledgements fail
    their future with the same typed errors as :func:`publish`; :meth:`refuse` fails what waits
    on a subject the server refused for lack of permission.

    Writes are coalesced the way Nagle's algorithm does it: a message goes out at once when
    nothing else is unanswered; otherwise it is held until the next acknowledgement (or until
    ``max_held`` are held), and everything held goes out in one socket write. An interactive
    writer sees no added delay; a writer at full speed sends one write per round trip instead
    of one per message, which is what a system call costs most.
    """

    def __init__(self, nc: NATS, *, timeout: float = 5.0, max_held: int = 128) -> None:
        self._nc = nc
        self._timeout = timeout
        self._max_held = max_held
        self._prefix = nc.new_inbox()
        self._pending: OrderedDict[str, tuple[Acknowledged, float, str]] = OrderedDict()
        self._on_wire: set[str] = set()
        self._held: list[tuple[str, bytes, str, dict[str, str] | None]] = []
        self._sub: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self._counter = 0

    @property
    def outstanding(self) -> int:
        """Publishes not answered yet (sent or held)."""
        return len(self._pending)

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)
        self._sweeper = asyncio.ensure_future(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._held = []
        self._fail(list(self._pending), BrokerUnavailableError("the connection was closed"))
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> asyncio.Future[tuple[int, bool]]:
        """Store one message; the future holds its sequence and duplicate flag."""
        future: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()

        def settle(result: tuple[int, bool] | None, error: SecsyncError | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result or (0, False))

        await self.publish_then(subject, payload, headers, settle)
        return future

    async def publish_then(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None,
        callback: Acknowledged,
    ) -> None:
        """Store one message; ``callback(result, error)`` runs once, when it is settled.

        ``result`` is ``(sequence, duplicate)``. The callback runs inside the reply handler,
        without a future or a turn of the event loop in between; it must not raise.
        """
        self._counter += 1
        token = str(self._counter)
        self._pending[token] = (callback, time.monotonic() + self._timeout, subject)
        self._held.append((token, payload, subject, dict(headers) if headers else None))
        if not self._on_wire or len(self._held) >= self._max_held:
            await self._release()

    def refuse(self, subject: str, error: SecsyncError) -> None:
        """Fail every publish waiting on ``subject`` (compared case-insensitively)."""
        wanted = subject.lower()
        self._fail([t for t, (_f, _d, s) in self._pending.items() if s.lower() == wanted], error)

    async def _release(self) -> None:
        """Send everything held; nats-py writes what is published in one turn at once."""
        held, self._held = self._held, []
        for index, (token, payload, subject, headers) in enumerate(held):
            if token not in self._pending:
                continue  # failed while held (timeout, refusal)
            try:
                with translated(subject, no_stream=NO_STREAM):
                    await self._nc.publish(
                        subject, payload, reply=f"{self._prefix}.{token}", headers=headers
                    )
            except SecsyncError as exc:
                self._fail([t for t, *_ in held[index:]], exc)
                return
            self._on_wire.add(token)

    async def _on_reply(self, msg: Any) -> None:
        token = msg.subject.rpartition(".")[2]
        self._on_wire.discard(token)
        entry = self._pending.pop(token, None)
        if entry is not None:
            callback, _deadline, subject = entry
            try:
                result = self._acknowledgement(msg, subject)
            except SecsyncError as exc:
                self._settle(callback, None, exc)
            else:
                self._settle(callback, result, None)
        if self._held:
            await self._release()

    @staticmethod
    def _settle(
        callback: Acknowledged, result: tuple[int, bool] | None, error: SecsyncError | None
    ) -> None:
        try:
            callback(result, error)
        except Exception:  # a failing callback must not stop the other acknowledgements
            log.exception("publish_callback_failed")

    @staticmethod
    def _acknowledgement(msg: Any, subject: str) -> tuple[int, bool]:
        if not msg.data:
            status = (msg.headers or {}).get(HEADER_STATUS)
            if status == "503":
                raise StreamNotFoundError(f"{NO_STREAM} ({subject})")
            raise TransportError(f"empty acknowledgement (status {status}) ({subject})")
        reply = json_reply(msg.data, subject=subject)
        sequence = reply.get("seq")
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise TransportError(f"unexpected acknowledgement {reply!r} ({subject})")
        return sequence, bool(reply.get("duplicate"))

    async def _sweep(self) -> None:
        interval = max(0.05, self._timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            expired = []
            for token, (_future, deadline, _subject) in self._pending.items():
                if deadline > now:
                    break  # deadlines grow with insertion order: the rest are later
                expired.append(token)
            if expired:
                self._fail(
                    expired, BrokerUnavailableError(f"no acknowledgement in {self._timeout} s")
                )
            if self._held and not self._on_wire:
                await self._release()

    def _fail(self, tokens: list[str], error: SecsyncError) -> None:
        for token in tokens:
            self._on_wire.discard(token)
            entry = self._pending.pop(token, None)
            if entry is not None:
                self._settle(entry[0], None, error)
