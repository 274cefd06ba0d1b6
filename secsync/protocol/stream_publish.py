"""What a publish outcome means for the stream binding (:mod:`secsync.protocol.stream`). Pure.

:func:`judge` maps what a compare-and-set publish came to (stored at a sequence, "duplicate",
a wrong-last-sequence conflict, busy, unanswered, a failure) to the next step;
:func:`landed` and :func:`holds` settle a lost acknowledgement and a duplicate from what the
stream holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from secsync.errors import (
    BrokerUnavailableError,
    CompareAndSetBusyError,
    DuplicateBatchError,
    SecsyncError,
    StreamNotFoundError,
    TransportError,
    WrongLastSequenceError,
)
from secsync.protocol.messages import Snapshot, Update
from secsync.protocol.stream_types import MSG_ID, StoredMessage

# What a publish attempt came to: (first sequence, last sequence, duplicate), or an error.
Outcome = tuple[int, int, bool] | SecsyncError


@dataclass(frozen=True, slots=True)
class Accepted:
    """Stored at ``first..last``."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class VerifyDuplicate:
    """An update answered "duplicate": it counts only if the stream holds exactly our bytes at
    ``sequence`` (:func:`holds`); otherwise ``update_preempted``."""

    sequence: int


@dataclass(frozen=True, slots=True)
class Busy:
    """Another compare-and-set on the subject is in process (10164): nothing was stored,
    nothing decided. The same bytes and headers again shortly."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """The expectation did not hold (10071). An update: is its snapshot the latest after all
    (:meth:`StreamBinding.still_latest`)? A snapshot: did an earlier attempt land
    (:func:`landed`)? Otherwise :meth:`StreamBinding.conflict`."""

    error: WrongLastSequenceError


@dataclass(frozen=True, slots=True)
class CheckLanded:
    """An earlier attempt of this batch was stored; where (:func:`landed`), a snapshot needs."""


@dataclass(frozen=True, slots=True)
class Unanswered:
    """No answer, or no responder: report it (a permission the connection saw denied says
    more), retry with backoff and fresh headers."""

    error: TransportError


@dataclass(frozen=True, slots=True)
class Failed:
    """Any other transport failure: report it, retry after the longest backoff. An error
    outside the transport's is not retried (``retry`` False): it is raised."""

    error: SecsyncError
    retry: bool


PublishStep = Accepted | VerifyDuplicate | Busy | Conflict | CheckLanded | Unanswered | Failed


def judge(message: Snapshot | Update, outcome: Outcome) -> PublishStep:
    """What a publish of ``message`` that came to ``outcome`` means."""
    if isinstance(outcome, tuple):
        first, last, duplicate = outcome
        if duplicate and isinstance(message, Update):
            return VerifyDuplicate(first)
        return Accepted(first, last)
    if isinstance(outcome, CompareAndSetBusyError):
        return Busy()
    if isinstance(outcome, WrongLastSequenceError):
        return Conflict(outcome)
    if isinstance(outcome, DuplicateBatchError):
        return CheckLanded()
    if isinstance(outcome, BrokerUnavailableError | StreamNotFoundError):
        return Unanswered(outcome)
    return Failed(outcome, retry=isinstance(outcome, TransportError))


def landed(msg_id: str, last: StoredMessage | None) -> int | None:
    """After a compare-and-set refusal of a snapshot: did an earlier attempt land after all?
    ``last`` is the snapshot subject's last message. A single server checks the expectation
    before the duplicate window, so a retry of a publish that was stored is refused as a
    conflict; a cluster answers "duplicate"."""
    if last is not None and last.headers.get(MSG_ID) == msg_id:
        return last.sequence
    return None


def holds(payload: bytes, sequence: int, found: Sequence[StoredMessage]) -> bool:
    """After a "duplicate" answer: the first message on the update subject from ``sequence``
    on is exactly ``payload``, at ``sequence``."""
    stored = found[0] if found else None
    return stored is not None and stored.sequence == sequence and stored.data == payload
