"""Publishing one document's stored messages: pipelined updates, and each message until the
broker stores it or refuses it for good.

What an outcome means (stored, a duplicate to check, busy, a conflict, unanswered) and which
headers a publish carries is decided by :mod:`secsync.protocol.stream`; this module performs
it: the publishes, the reads that settle a duplicate or a conflict, the waits between retries.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from secsync.config import SecsyncConfig
from secsync.errors import (
    BrokerRequestError,
    BrokerUnavailableError,
    DocumentClosedError,
    DuplicateMismatchError,
    SecsyncError,
    StreamNotFoundError,
    TransportError,
)
from secsync.logs import get_logger
from secsync.protocol import wire
from secsync.protocol.messages import Snapshot, Update
from secsync.protocol.stream import (
    MSG_ID,
    Accepted,
    Busy,
    CheckLanded,
    Conflict,
    Outcome,
    StreamBinding,
    Unanswered,
    VerifyDuplicate,
    holds,
    judge,
    landed,
)
from secsync.transport.events import DocumentEvent, PublishFailed
from secsync.transport.stream_io import JetStreamLink
from secsync.transport.waiting import Signal, backoff_delay

log = get_logger("secsync.document")

# Failures of a read that say nothing about the document: try again later.
BROKER_SIDE = (BrokerUnavailableError, StreamNotFoundError, BrokerRequestError, TimeoutError)


class Sender:
    """Publishes for one document (see the module docstring). ``emit`` reports events,
    ``closed`` tells whether the document is closed, ``progress`` is set when a publish ends
    and ``wake`` when the sender loop has work."""

    def __init__(
        self,
        binding: StreamBinding,
        io: JetStreamLink,
        config: SecsyncConfig,
        *,
        emit: Callable[[Sequence[DocumentEvent]], None],
        closed: Callable[[], bool],
        progress: Signal,
        wake: Signal,
    ) -> None:
        self._binding = binding
        self._io = io
        self._config = config
        self._emit = emit
        self._closed = closed
        self._progress = progress
        self._wake = wake
        self._subjects = binding.subjects
        self._window = asyncio.Semaphore(config.max_in_flight)
        self.tasks: set[asyncio.Future[Any]] = set()
        # Updates whose pipelined publish did not settle (no answer, 10164, refused, duplicate),
        # with that outcome; one task publishes them again one at a time, lowest clock first.
        # Concurrent retries on a cluster would only keep each other busy (10164).
        self._retries: list[tuple[Update, Outcome | None, dict[str, str] | None]] = []
        self._retrier: asyncio.Future[None] | None = None
        self.unanswered = 0  # updates published whose acknowledgement is still awaited

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self._config.retry_initial, self._config.retry_max)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    # --- pipelined updates ------------------------------------------------------------------

    async def pipeline(self, update: Update) -> None:
        """Publish without waiting for the acknowledgement (up to ``max_in_flight`` at once).

        Updates on one snapshot carry the same compare-and-set expectation, so they need not
        wait for each other; receivers order them by clock. Whatever did not end in a plain
        acknowledgement is settled by the retry task, and while it has work, new updates
        queue behind it.
        """
        await self._window.acquire()
        if self._retries:
            self._retry_later(update)  # behind the retries, not racing them
            return
        payload = wire.encode(update, include_doc_id=False)
        headers = self._binding.headers(update)
        if len(payload) <= self._io.part_limit():
            try:
                await self._io.pipeline(
                    self._subjects.update,
                    payload,
                    headers,
                    functools.partial(self._acknowledged, update, headers),
                )
            except SecsyncError as exc:
                self._emit([PublishFailed(exc, self._subjects.update, retrying=True)])
            else:
                self._binding.sent(headers[MSG_ID], payload, update)
                self.unanswered += 1
                return
        self._retry_later(update)

    async def resend(self, updates: tuple[Update, ...]) -> None:
        for update in updates:
            await self.pipeline(update)

    def _acknowledged(
        self,
        update: Update,
        headers: dict[str, str],
        result: tuple[int, bool] | None,
        error: SecsyncError | None,
    ) -> None:
        self.unanswered -= 1
        if self._closed():
            self._window.release()
            return
        if error is None and result is not None and not result[1]:
            self._emit(self._binding.stored(update, result[0], result[0], now=time.monotonic()))
            self._published()
            return
        outcome: Outcome
        if error is None and result is not None:
            outcome = (result[0], result[0], True)  # a duplicate: checked before it counts
        elif error is None:
            outcome = TransportError("publish settled without a result")
        else:
            outcome = error
        step = judge(update, outcome)
        if isinstance(step, Unanswered):
            outcome = self._io.denied(self._subjects.update) or step.error
        if not isinstance(step, VerifyDuplicate | Busy | Conflict):
            assert isinstance(outcome, SecsyncError)
            self._emit([PublishFailed(outcome, self._subjects.update, retrying=True)])
        self._retry_later(update, outcome, headers)

    def _retry_later(
        self,
        update: Update,
        outcome: Outcome | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Settle ``update`` in the retry task, after the others waiting there (window held).

        ``outcome``: what its last attempt, published with ``headers``, came to.
        """
        self._retries.append((update, outcome, headers))
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.ensure_future(self._retry_all())
            self.tasks.add(self._retrier)
            self._retrier.add_done_callback(self.tasks.discard)

    async def _retry_all(self) -> None:
        """Publish the waiting updates again one at a time, lowest clock first, until each is
        stored or refused for good (or the document is closed)."""
        while self._retries and not self._closed():
            index = min(range(len(self._retries)), key=lambda i: self._retries[i][0].clock)
            update, outcome, headers = self._retries.pop(index)
            try:
                await self.publish_stored(update, outcome, headers)
            except DocumentClosedError:
                return
            finally:
                self._published()

    def _published(self) -> None:
        """One publish of the window is over (stored, refused, or given up on close)."""
        self._window.release()
        self._progress.set()
        if self._binding.session.snapshot_requested and not self.unanswered and not self.tasks:
            self._wake.set()  # a requested snapshot may go now that the rest is stored

    async def drain(self) -> None:
        """Wait until nothing is in flight (a snapshot follows what is in flight)."""
        while self.unanswered or self.tasks:
            if self.tasks:  # retries; a failed publish is replaced by its retry
                await asyncio.wait(list(self.tasks))
            else:
                self._progress.clear()
                if self.unanswered:
                    await self._progress.wait()

    # --- one message until settled ----------------------------------------------------------

    async def publish_stored(
        self,
        message: Snapshot | Update,
        outcome: Outcome | None = None,
        sent: dict[str, str] | None = None,
    ) -> None:
        """Publish until the broker stores ``message`` or refuses it for good.

        ``outcome``: what an earlier attempt, published with the headers ``sent``, came to
        (then it is settled first, not resent). Transient answers are retried with the same
        bytes and message id: no answer (backoff up to ``retry_max``), 10164
        (``busy_retry_*``, the same headers too). A duplicate counts only once the stored
        bytes are ours; a compare-and-set mismatch only once the document's latest snapshot is
        established not to be the one the update builds on. A snapshot the session gave up on
        meanwhile (it applied another one) is not sent again.
        """
        binding, config = self._binding, self._config
        subjects = self._subjects
        subject = subjects.snapshot if isinstance(message, Snapshot) else subjects.update
        payload = wire.encode(message, include_doc_id=False)
        delay = config.retry_initial
        busy = config.busy_retry_initial
        headers = sent if sent is not None and outcome is not None else binding.headers(message)
        while True:
            if self._closed():
                raise DocumentClosedError()
            if isinstance(message, Snapshot) and binding.abandoned(message):
                return  # its changes were queued again on the snapshot applied instead
            if outcome is None:
                outcome = await self._attempt(subject, payload, headers)
            step, outcome = judge(message, outcome), None
            if isinstance(step, Accepted):
                first, last = step.first, step.last
                break
            if isinstance(step, VerifyDuplicate):
                assert isinstance(message, Update)
                if not await self._holds(message, payload, step.sequence):
                    self._emit(binding.preempted(message))
                    return
                first = last = step.sequence
                break
            if isinstance(step, Busy):
                # not evaluated: the same publish again shortly (nothing was stored)
                await asyncio.sleep(busy * (0.5 + random.random()))
                busy = min(config.busy_retry_max, busy * 2)
                continue
            if isinstance(step, Conflict):
                if isinstance(message, Update):
                    if await self._still_latest(message, headers):
                        headers = binding.headers(message)
                        continue  # our expectation was off, not the document: send again
                    self._conflict(message, step)
                    return
                found = landed(headers[MSG_ID], await self._io.last_direct(subject))
                if found is None:
                    self._conflict(message, step)
                    return
                first = last = found
                break
            if isinstance(step, CheckLanded):
                # An earlier attempt of this batch was stored; where, only a snapshot needs.
                found = None
                if isinstance(message, Snapshot):
                    found = landed(headers[MSG_ID], await self._io.last_direct(subject))
                first = last = found if found is not None else -1
                break
            if isinstance(step, Unanswered):
                # no answer, or no responder (a cluster between stream leaders says so too)
                error: SecsyncError = self._io.denied(subject) or step.error
                self._emit([PublishFailed(error, subject, retrying=True)])
            elif step.retry:
                self._emit([PublishFailed(step.error, subject, retrying=True)])
                delay = config.retry_max
            else:
                raise step.error
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(config.retry_max, delay * 2)
            headers = binding.headers(message)
        self._emit(binding.stored(message, first, last, headers, now=time.monotonic()))

    async def _attempt(self, subject: str, payload: bytes, headers: dict[str, str]) -> Outcome:
        try:
            return await self._io.store(subject, payload, headers)
        except SecsyncError as exc:
            return exc

    def _conflict(self, message: Snapshot | Update, step: Conflict) -> None:
        log.info(
            "publish_conflict",
            kind="snapshot" if isinstance(message, Snapshot) else "update",
            last_sequence=step.error.last_sequence,
        )
        self._emit(self._binding.conflict(message))

    async def _holds(self, update: Update, payload: bytes, sequence: int) -> bool:
        """After a "duplicate" answer: does the stream hold exactly ``payload`` at ``sequence``?

        Read from the stream itself (not a mirror), through a consumer scoped to the update
        subject, until the read succeeds.
        """
        attempt = 0
        while True:
            if self._closed():
                raise DocumentClosedError()
            try:
                found = await self._io.read(self._subjects.update, sequence, limit=1, origin=True)
            except BROKER_SIDE as exc:
                log.info("duplicate_check_failed", reason=str(exc))
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            if holds(payload, sequence, found):
                return True
            log.warning(
                "duplicate_mismatch",
                sequence=sequence,
                clock=update.clock,
                found=found[0].sequence if found else None,
            )
            error = DuplicateMismatchError(f"other bytes under our message id at {sequence}")
            self._emit([PublishFailed(error, self._subjects.update, retrying=True)])
            return False

    async def _still_latest(self, update: Update, headers: dict[str, str]) -> bool:
        """After a compare-and-set mismatch of ``update``: is its snapshot the document's latest
        after all (then the expectation we sent was off, and is corrected)?"""
        if self._binding.expectation_moved(update, headers):
            return True  # a snapshot checked as junk meanwhile
        try:
            last = await self._io.last_direct(self._subjects.snapshot)
        except BROKER_SIDE:
            await asyncio.sleep(self._backoff(0))
            return True  # undecided: the same publish again decides it
        return self._binding.still_latest(update, headers, last)
