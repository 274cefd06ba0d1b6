"""nats-py errors mapped to secsync's (the table is in :mod:`secsync.transport.jetstream`), and
the small helpers every JetStream call shares: no nats-py exception escapes ``translated``."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Any

import nats.errors
import nats.js.errors

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

API_PREFIX = "$JS.API"

#: The broker's limit of messages in one atomic batch.
MAX_BATCH_MESSAGES = 1000

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

WRONG_LAST_SEQUENCE_TEXT = re.compile(r"wrong last sequence: (\d+)")
NO_STREAM = "no stream stores the subject"
NO_DIRECT = "no stream answers direct gets (it does not exist or lacks allow_direct)"


# --- error mapping ------------------------------------------------------------------------------


def api_error(
    code: int | None, err_code: int | None, description: str | None, *, subject: str | None
) -> TransportError:
    text = description or "broker error"
    where = f" ({subject})" if subject else ""
    if err_code == ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT:
        return CompareAndSetBusyError(f"{text}{where}")
    if err_code == ERR_WRONG_LAST_SEQUENCE:
        match = WRONG_LAST_SEQUENCE_TEXT.search(text)
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


def map_error(exc: BaseException, *, subject: str | None, no_stream: str | None) -> TransportError:
    where = f" ({subject})" if subject else ""
    if isinstance(exc, nats.js.errors.APIError):
        return api_error(exc.code, exc.err_code, exc.description, subject=subject)
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return StreamNotFoundError(f"{NO_STREAM}{where}")
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
def translated(subject: str | None, *, no_stream: str | None = None) -> Iterator[None]:
    """Re-raise nats-py errors and timeouts as secsync transport errors.

    ``no_stream``: a "no responders" answer means that no stream serves the request, and this
    is the message of the :class:`StreamNotFoundError` it becomes.
    """
    try:
        yield
    except SecsyncError:
        raise
    except (nats.errors.Error, TimeoutError) as exc:
        raise map_error(exc, subject=subject, no_stream=no_stream) from exc


def validate_stream(stream: str) -> None:
    if not stream or any(ch in stream for ch in ".*> \t\r\n"):
        raise ValueError(f"invalid stream name: {stream!r}")


def header_dict(headers: Mapping[Any, Any] | None) -> dict[str, str]:
    """Headers as plain ``str`` keys (nats-py parses ``Description`` as an enum member)."""
    if not headers:
        return {}
    result: dict[str, str] = {}
    for key, value in headers.items():
        name = key.value if isinstance(key, Enum) else key
        result[str(name)] = str(value)
    return result


def json_reply(data: bytes, *, subject: str) -> dict[str, Any]:
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
        raise api_error(
            code if isinstance(code, int) else None,
            err_code if isinstance(err_code, int) else None,
            str(error.get("description") or ""),
            subject=subject,
        )
    return reply
