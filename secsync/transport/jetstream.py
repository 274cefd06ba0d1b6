"""Async helpers over nats-py's JetStream API, with secsync errors instead of nats-py's.

This module gathers their names; each responsibility lives in its own module:
:mod:`~secsync.transport.jetstream_errors` (the mapping below), :mod:`~secsync.transport.provision`,
:mod:`~secsync.transport.publish` and :mod:`~secsync.transport.reads`. Callers that a test may
stand in for go through this module's names (``jetstream.publish``, ``jetstream.messages_scoped``).

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

from secsync.errors import DuplicateBatchError
from secsync.protocol.stream_types import StoredMessage
from secsync.transport.jetstream_errors import (
    API_PREFIX,
    ERR_BATCH_DUPLICATE_MSG_ID,
    ERR_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT,
    MAX_BATCH_MESSAGES,
    api_error,
    header_dict,
    json_reply,
    translated,
    validate_stream,
)
from secsync.transport.provision import StreamSettings, ensure_mirror, ensure_stream
from secsync.transport.publish import Acknowledged, Publisher, publish, publish_batch
from secsync.transport.reads import (
    OnPage,
    count_scoped,
    delivered,
    get_message,
    last_message,
    last_scoped,
    messages_after,
    messages_between,
    messages_scoped,
)

__all__ = [
    "API_PREFIX",
    "ERR_BATCH_DUPLICATE_MSG_ID",
    "ERR_WRONG_LAST_SEQUENCE",
    "ERR_WRONG_LAST_SEQUENCE_IN_FLIGHT",
    "MAX_BATCH_MESSAGES",
    "Acknowledged",
    "DuplicateBatchError",
    "Publisher",
    "StoredMessage",
    "StreamSettings",
    "api_error",
    "count_scoped",
    "delivered",
    "ensure_mirror",
    "ensure_stream",
    "get_message",
    "header_dict",
    "json_reply",
    "last_message",
    "last_scoped",
    "messages_after",
    "messages_between",
    "OnPage",
    "messages_scoped",
    "publish",
    "publish_batch",
    "translated",
    "validate_stream",
]
