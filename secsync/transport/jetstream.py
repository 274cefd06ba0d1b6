"""Async helpers over nats-py's JetStream API, with secsync errors instead of nats-py's.

* :func:`ensure_stream` provisions (creates or updates) the one stream that stores documents.
* :func:`publish` stores one message (with optional compare-and-set and dedup headers).
* :func:`publish_batch` stores several messages all-or-nothing by an atomic batch (ADR-50),
  which nats-py 2.16 does not wrap, so the batch headers are set here.
* :func:`last_message`, :func:`get_message` read by direct get; :func:`messages_after` pages
  through a subject filter by *batch* direct get, with no consumer; :func:`messages_scoped`
  and :func:`messages_between` read through a consumer scoped to the document.

Every function raises only :class:`~secsync.errors.TransportError` subclasses for broker and
connection failures (``ValueError`` for invalid arguments); nats-py exceptions never escape, they
are chained as ``__cause__``. Mapping:

========================================================  =====================================
nats-py / broker                                          secsync
========================================================  =====================================
err_code 10071 ``wrong last sequence: N``                 :class:`WrongLastSequenceError`
err_code 10164 (another compare-and-set in process)       :class:`CompareAndSetBusyError`
err_code 10054 (stream ``max_msg_size``), MaxPayloadError :class:`PayloadTooLargeError`
NoStreamResponseError, no responders, err_code 10059      :class:`StreamNotFoundError`
err_code 10201 (batch with a duplicate message id)        :class:`DuplicateBatchError`
err_code 10077, 10002, 10047 (stream or account full)     :class:`StorageLimitError`
timeouts, code 503, closed/reconnecting/draining conn.    :class:`BrokerUnavailableError`
any other API error                                       :class:`BrokerRequestError`
any other nats-py error                                   :class:`TransportError`
========================================================  =====================================

10164 is no verdict on the expectation: a clustered stream leader refuses a compare-and-set
publish while another one naming the same subject (``Nats-Expected-Last-Subject-Sequence-Subject``,
or the published subject) is proposed and not yet applied, without looking at the stored
sequence. Nothing was stored; the same publish, sent again, is decided on its merits.

Permission violations cannot be told apart from timeouts: the server answers nothing, and its
reason goes only to the connection's ``error_cb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.js import api

from secsync.errors import (
    BrokerRequestError,
    BrokerUnavailableError,
    CompareAndSetBusyError,
    DuplicateBatchError,
    PayloadTooLargeError,
    SecsyncError,
    StorageLimitError,
    StreamNotFoundError,
    TransportError,
    WrongLastSequenceError,
)
from secsync.logs import get_logger
from secsync.protocol.stream_types import StoredMessage

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

__all__ = [
    "API_PREFIX",
    "ERR_BATCH_DUPLICATE_MSG_ID",
    "ERR_WRONG_LAST_SEQUENCE",
    "ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT",
    "MAX_BATCH_MESSAGES",
    "DuplicateBatchError",
    "Publisher",
    "StoredMessage",
    "StreamSettings",
    "delivered",
    "ensure_mirror",
    "ensure_stream",
    "get_message",
    "last_message",
    "messages_after",
    "messages_between",
    "last_scoped",
    "count_scoped",
    "publish",
    "publish_batch",
]

log = get_logger("secsync.jetstream")

API_PREFIX = "$JS.API"

#: The broker's limit of messages in one atomic batch.
MAX_BATCH_MESSAGES = 1000
#: Reply bytes asked for per page of a batch direct get (the server sends at least one message).
PAGE_MAX_BYTES = 16 * 1024 * 1024

ERR_MESSAGE_TOO_LARGE = 10054
ERR_NO_SUITABLE_PEERS = 10005
ERR_STREAM_NAME_IN_USE = 10058
ERR_STREAM_NOT_FOUND = 10059
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT = 10164
ERR_BATCH_DUPLICATE_MSG_ID = 10201
ERR_STORE_FAILED = 10077  # "maximum bytes exceeded" of a discard-new stream (code 503)
ERR_ACCOUNT_LIMITS = 10002  # "resource limits exceeded for account"
ERR_INSUFFICIENT_STORAGE = 10047  # a stream's max_bytes does not fit what is left

HEADER_BATCH_ID = "Nats-Batch-Id"
HEADER_BATCH_SEQUENCE = "Nats-Batch-Sequence"
HEADER_BATCH_COMMIT = "Nats-Batch-Commit"
HEADER_SEQUENCE = "Nats-Sequence"
HEADER_SUBJECT = "Nats-Subject"
HEADER_NUM_PENDING = "Nats-Num-Pending"
HEADER_STATUS = "Status"
HEADER_DESCRIPTION = "Description"

_WRONG_LAST_SEQUENCE = re.compile(r"wrong last sequence: (\d+)")
_ENSURE_ATTEMPTS = 3
_UNREADY_RETRIES = 20  # about 4 s in all
_NO_STREAM = "no stream stores the subject"
_NO_DIRECT = "no stream answers direct gets (it does not exist or lacks allow_direct)"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """The settings :func:`ensure_stream` manages (other settings of the stream are kept)."""

    name: str = "SECSYNC"
    subjects: tuple[str, ...] = ("secsync.s.>",)
    replicas: int = 1
    max_consumers: int = 10_000  # explicit: the 2.15 default of 1000 per stream is a trap
    duplicate_window: float = 120.0  # seconds
    max_msg_size: int = -1
    placement_cluster: str | None = None
    placement_tags: tuple[str, ...] = ()
    max_bytes: int = -1
    """Bound on the stream's stored bytes (-1: none). With a bound the stream discards *new*
    messages when full: dropping the oldest would delete other documents' history."""


# --- error mapping ------------------------------------------------------------------------------


def _api_error(
    code: int | None, err_code: int | None, description: str | None, *, subject: str | None
) -> TransportError:
    text = description or "broker error"
    where = f" ({subject})" if subject else ""
    if err_code == ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT:
        return CompareAndSetBusyError(f"{text}{where}")
    if err_code == ERR_WRONG_LAST_SEQUENCE:
        match = _WRONG_LAST_SEQUENCE.search(text)
        last = int(match.group(1)) if match else None
        return WrongLastSequenceError(f"{text}{where}", last_sequence=last)
    if err_code == ERR_BATCH_DUPLICATE_MSG_ID:
        return DuplicateBatchError(f"{text}{where}")
    if err_code == ERR_MESSAGE_TOO_LARGE:
        return PayloadTooLargeError(f"{text}{where}")
    if err_code == ERR_STREAM_NOT_FOUND:
        return StreamNotFoundError(f"{text}{where}")
    if err_code in (ERR_STORE_FAILED, ERR_ACCOUNT_LIMITS, ERR_INSUFFICIENT_STORAGE):
        # before the 503 test: a full stream answers 503, and it is not away
        return StorageLimitError(f"{text}{where}", err_code=err_code)
    if code == 503:
        return BrokerUnavailableError(f"{text}{where}")
    return BrokerRequestError(
        f"{text}{where} (code {code}, err_code {err_code})",
        err_code=err_code if err_code is not None else code,
    )


def _map_error(exc: BaseException, *, subject: str | None, no_stream: str | None) -> TransportError:
    where = f" ({subject})" if subject else ""
    if isinstance(exc, nats.js.errors.APIError):
        return _api_error(exc.code, exc.err_code, exc.description, subject=subject)
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return StreamNotFoundError(f"{_NO_STREAM}{where}")
    if isinstance(exc, nats.errors.NoRespondersError):
        if no_stream is not None:
            return StreamNotFoundError(f"{no_stream}{where}")
        return BrokerUnavailableError(f"no responders{where}")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLargeError(f"message exceeds the broker's max_payload{where}")
    if isinstance(exc, TimeoutError):  # nats.errors.TimeoutError is an asyncio.TimeoutError
        return BrokerUnavailableError(f"no answer from the broker in time{where}")
    if isinstance(
        exc,
        nats.errors.ConnectionClosedError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.ConnectionDrainingError
        | nats.errors.OutboundBufferLimitError
        | nats.errors.StaleConnectionError
        | nats.errors.NoServersError,
    ):
        return BrokerUnavailableError(f"connection unavailable: {exc}{where}")
    return TransportError(f"{type(exc).__name__}: {exc}{where}")


@contextlib.contextmanager
def _translated(subject: str | None, *, no_stream: str | None = None) -> Iterator[None]:
    """Re-raise nats-py errors and timeouts as secsync transport errors.

    ``no_stream``: a "no responders" answer means that no stream serves the request, and this
    is the message of the :class:`StreamNotFoundError` it becomes.
    """
    try:
        yield
    except SecsyncError:
        raise
    except (nats.errors.Error, TimeoutError) as exc:
        raise _map_error(exc, subject=subject, no_stream=no_stream) from exc


def _validate_stream(stream: str) -> None:
    if not stream or any(ch in stream for ch in ".*> \t\r\n"):
        raise ValueError(f"invalid stream name: {stream!r}")


def _header_dict(headers: Mapping[Any, Any] | None) -> dict[str, str]:
    """Headers as plain ``str`` keys (nats-py parses ``Description`` as an enum member)."""
    if not headers:
        return {}
    result: dict[str, str] = {}
    for key, value in headers.items():
        name = key.value if isinstance(key, Enum) else key
        result[str(name)] = str(value)
    return result


def _json_reply(data: bytes, *, subject: str) -> dict[str, Any]:
    try:
        reply = json.loads(data)
    except ValueError:
        raise TransportError(f"malformed reply from the broker ({subject})") from None
    if not isinstance(reply, dict):
        raise TransportError(f"malformed reply from the broker ({subject})")
    error = reply.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise TransportError(f"malformed error reply from the broker ({subject})")
        code, err_code = error.get("code"), error.get("err_code")
        raise _api_error(
            code if isinstance(code, int) else None,
            err_code if isinstance(err_code, int) else None,
            str(error.get("description") or ""),
            subject=subject,
        )
    return reply


# --- provisioning -------------------------------------------------------------------------------


def _nanoseconds(seconds: float | None) -> int:
    return round((seconds or 0.0) * 1_000_000_000)


def _placement(settings: StreamSettings) -> api.Placement | None:
    if settings.placement_cluster is None and not settings.placement_tags:
        return None
    return api.Placement(
        cluster=settings.placement_cluster,
        tags=list(settings.placement_tags) if settings.placement_tags else None,
    )


def _discard(settings: StreamSettings) -> api.DiscardPolicy:
    return api.DiscardPolicy.NEW if settings.max_bytes > 0 else api.DiscardPolicy.OLD


def _managed(settings: StreamSettings) -> dict[str, Any]:
    """The managed stream config fields, as nats-py ``StreamConfig`` keyword arguments."""
    return {
        "subjects": list(settings.subjects),
        "retention": api.RetentionPolicy.LIMITS,
        "discard": _discard(settings),
        "storage": api.StorageType.FILE,
        "num_replicas": settings.replicas,
        "max_consumers": settings.max_consumers,
        "duplicate_window": settings.duplicate_window,
        "max_msg_size": settings.max_msg_size,
        "max_bytes": settings.max_bytes,
        "placement": _placement(settings),
        "allow_direct": True,
        "allow_atomic": True,
        "allow_rollup_hdrs": False,
        "deny_delete": True,
        "deny_purge": False,
    }


def _placement_key(placement: api.Placement | None) -> tuple[str | None, tuple[str, ...]]:
    if placement is None:
        return None, ()
    return placement.cluster or None, tuple(placement.tags or ())


def _matches(config: api.StreamConfig, settings: StreamSettings) -> bool:
    """Whether the managed settings of ``config`` equal ``settings``."""

    def same(value: Any, wanted: Enum) -> bool:
        return str(value.value if isinstance(value, Enum) else value) == str(wanted.value)

    return (
        list(config.subjects or ()) == list(settings.subjects)
        and same(config.retention, api.RetentionPolicy.LIMITS)
        and same(config.discard, _discard(settings))
        and same(config.storage, api.StorageType.FILE)
        and (config.num_replicas or 1) == settings.replicas
        and config.max_consumers == settings.max_consumers
        and _nanoseconds(config.duplicate_window) == _nanoseconds(settings.duplicate_window)
        and config.max_msg_size == settings.max_msg_size
        and (config.max_bytes or -1) == settings.max_bytes
        and _placement_key(config.placement) == _placement_key(_placement(settings))
        and bool(config.allow_direct)
        and bool(config.allow_atomic)
        and not config.allow_rollup_hdrs
        and config.deny_delete
        and not config.deny_purge
    )


async def ensure_stream(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create the stream, or update it when a managed setting differs; idempotent.

    Settings outside :class:`StreamSettings` (limits, TTLs, metadata...) of an existing stream
    are kept. Concurrent calls are safe: an identical create succeeds on the server, and a create
    that loses a race to a different configuration falls back to an update. Some changes are
    refused by the broker (storage type, switching ``deny_delete`` off) and raise
    :class:`BrokerRequestError`.
    """
    _validate_stream(settings.name)
    placement_retries = 40  # 10 s
    with _translated(f"stream {settings.name}"):
        for _attempt in range(_ENSURE_ATTEMPTS + placement_retries):
            try:
                info = await js.stream_info(settings.name)
            except nats.js.errors.NotFoundError:
                try:
                    await js.add_stream(api.StreamConfig(name=settings.name, **_managed(settings)))
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code == ERR_STREAM_NAME_IN_USE:
                        continue  # created meanwhile with other settings: compare and update
                    if exc.err_code == ERR_NO_SUITABLE_PEERS and placement_retries > 0:
                        # a restarted node is not back in the meta layer's view yet
                        placement_retries -= 1
                        await asyncio.sleep(0.25)
                        continue
                    raise
                if settings.replicas > 1:
                    await _wait_for_leader(js, settings.name)
                return
            if info.config is not None and _matches(info.config, settings):
                return
            current = info.config or api.StreamConfig(name=settings.name)
            await js.update_stream(current.evolve(name=settings.name, **_managed(settings)))
            return
    raise BrokerRequestError(
        f"stream {settings.name} kept changing while it was provisioned",
        err_code=ERR_STREAM_NAME_IN_USE,
    )


async def ensure_mirror(
    js: JetStreamContext,
    name: str,
    source: str,
    *,
    replicas: int = 1,
    placement_cluster: str | None = None,
    placement_tags: Sequence[str] = (),
    max_consumers: int = 10_000,
) -> None:
    """Create ``name`` as a read-only mirror of stream ``source``, placed near its readers.

    A mirror keeps the origin's stream sequences, so a client may load and follow documents
    from it (``SecsyncConfig.read_stream``) and still publish with compare-and-set against the
    origin. Idempotent; an existing stream of that name that is not a mirror of ``source``
    raises :class:`BrokerRequestError`.
    """
    _validate_stream(name)
    _validate_stream(source)
    settings = StreamSettings(
        name=name,
        replicas=replicas,
        placement_cluster=placement_cluster,
        placement_tags=tuple(placement_tags),
    )
    with _translated(f"stream {name}"):
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                api.StreamConfig(
                    name=name,
                    mirror=api.StreamSource(name=source),
                    storage=api.StorageType.FILE,
                    num_replicas=replicas,
                    placement=_placement(settings),
                    max_consumers=max_consumers,
                    allow_direct=True,
                    mirror_direct=True,
                    deny_delete=True,
                )
            )
            if replicas > 1:
                await _wait_for_leader(js, name)
            return
    mirror = info.config.mirror if info.config is not None else None
    if mirror is None or mirror.name != source:
        raise BrokerRequestError(
            f"stream {name} exists and is not a mirror of {source}", err_code=ERR_STREAM_NAME_IN_USE
        )


async def _wait_for_leader(js: JetStreamContext, name: str, timeout: float = 10.0) -> None:
    """A new replicated stream answers publishes only once it has elected a leader."""
    async with asyncio.timeout(timeout):
        while True:
            info = await js.stream_info(name)
            if info.cluster is not None and info.cluster.leader:
                return
            await asyncio.sleep(0.05)


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
    with _translated(subject, no_stream=_NO_STREAM):
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
    with _translated(subject, no_stream=_NO_STREAM):
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
                        reply = _json_reply(msg.data, subject=subject)
                    elif msg.data:  # the first message is answered empty unless it failed
                        _json_reply(msg.data, subject=subject)
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
                with _translated(subject, no_stream=_NO_STREAM):
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
                raise StreamNotFoundError(f"{_NO_STREAM} ({subject})")
            raise TransportError(f"empty acknowledgement (status {status}) ({subject})")
        reply = _json_reply(msg.data, subject=subject)
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


# --- reading ------------------------------------------------------------------------------------


def _stored(raw: api.RawStreamMsg) -> StoredMessage:
    headers = _header_dict(raw.headers)
    subject = raw.subject or headers.get(HEADER_SUBJECT, "")
    sequence = raw.seq if raw.seq is not None else int(headers.get(HEADER_SEQUENCE, "0"))
    return StoredMessage(subject=subject, sequence=sequence, data=raw.data or b"", headers=headers)


async def _direct_get(
    js: JetStreamContext, stream: str, *, timeout: float, **request: Any
) -> StoredMessage | None:
    _validate_stream(stream)
    with _translated(f"stream {stream}", no_stream=_NO_DIRECT):
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


def delivered(msg: Msg) -> StoredMessage:
    """A message as a consumer delivered it (its stream sequence from the reply metadata)."""
    return StoredMessage(
        subject=msg.subject,
        sequence=int(msg.metadata.sequence.stream),
        data=msg.data,
        headers=_header_dict(msg.headers),
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
) -> list[StoredMessage]:
    """What :func:`messages_after` returns, read through a short-lived consumer instead.

    The consumer is named and filtered on ``subject_filter``, so its create subject
    (``$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>``) names what is read and
    per-document permissions can allow exactly that; batch direct get cannot be scoped. It is
    a pull consumer, fetched in pages of ``page`` up to what it reported pending at creation
    (waiting, within ``timeout`` per page, for a replica that is still catching up):
    on a large stream a push consumer on the same wildcard filter takes several times longer
    to deliver the same messages (``docs/operations.md``, capacity). ``limit``: at most this
    many messages (the first ones).
    """

    def how_many(pending: int) -> int:
        return pending if limit is None else min(pending, limit)

    stored, _pending = await _scoped(
        js, stream, subject_filter, start_sequence, how_many, timeout=timeout, page=page
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
) -> tuple[list[StoredMessage], int]:
    """Read ``how_many(pending)`` messages through a named pull consumer (see
    :func:`messages_scoped`); returns them and the consumer's pending count at creation.
    ``last_only``: the consumer delivers the last message of each subject instead."""
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
    with _translated(subject_filter):
        async with asyncio.timeout(timeout * 4):
            info = await js.add_consumer(stream, config, timeout=timeout)
            sub = None
            pending = int(info.num_pending or 0)
            try:
                remaining = how_many(pending)
                if remaining:
                    sub = await js.pull_subscribe_bind(durable=name, stream=stream)
                unready = 0
                while remaining > 0 and sub is not None:
                    try:
                        batch = await sub.fetch(min(remaining, page), timeout=timeout)
                    except nats.errors.TimeoutError:
                        # what did not come is the healing's business (gaps, recovery), not
                        # a reason to fail the read
                        break
                    except nats.js.errors.ServiceUnavailableError:
                        # In a cluster a consumer just created may not answer pulls yet
                        # ("no responders"): ask again shortly, a bounded number of times.
                        unready += 1
                        if unready > _UNREADY_RETRIES:
                            raise
                        await asyncio.sleep(0.02 * unready)
                        continue
                    stored.extend(delivered(msg) for msg in batch)
                    # Not "until a message says nothing is pending": a consumer placed on a
                    # replica that is still catching up (after a leader change) says so early.
                    remaining -= len(batch)
            finally:
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                with contextlib.suppress(Exception):
                    await js.delete_consumer(stream, name)
    return stored, pending


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
    _validate_stream(stream)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    request_subject = f"{API_PREFIX}.DIRECT.GET.{stream}"
    where = f"stream {stream}, {subject_filter}"
    result: list[StoredMessage] = []
    sequence = max(1, start_sequence)
    with _translated(where, no_stream=_NO_DIRECT):
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
                    headers = _header_dict(msg.headers)
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
                        raise StreamNotFoundError(f"{_NO_DIRECT} ({where})")
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
