"""Decoding, signature checks and opening of a received batch, ahead of the session.

What is computed here is a pure function of each message and of the key it is opened with:
its decoding, its AAD, whether its signature verifies, and, for an update with a valid
signature on the active snapshot, its commitment tag and AEAD and its change list. The session
then processes the batch in order and makes every decision itself, in the same order as
without this; where it would decode, check a signature or open an update, it takes the result
computed here for that very message (and, to open it, that very key) instead. A message it
handles again later (after queueing it) is checked again as it always was. So the outcome
(events, errors, state) is the one of processing each message alone.

Two things are gained: each step runs over several messages in a row (faster than mixing
libsodium and the decoder per message), and the steps can run on worker threads, since
libsodium releases the GIL. The core starts no thread: whoever runs the session passes a pool
(``DocumentSession(..., verify_executor=pool)``, a :class:`TaskPool` such as a
``concurrent.futures.ThreadPoolExecutor``); the transport shares one per client.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from secsync.errors import SecsyncError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.changes import deserialize_changes
from secsync.protocol.messages import Message, Snapshot, Update

DEFAULT_STEP: Final = 16
"""Items one thread checks at a time, each step over all of them (see check_messages)."""

Item = TypeVar("Item")


class TaskHandle(Protocol):
    """What :meth:`TaskPool.submit` returns (a ``concurrent.futures.Future`` is one)."""

    def cancel(self) -> bool:
        """Drop the task if it has not started; whether it was dropped."""
        ...

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task to end."""
        ...


class TaskPool(Protocol):
    """Runs tasks on other threads (a ``concurrent.futures.Executor`` is one).

    The core only submits pure work to it; owning and ending the threads is the caller's.
    ``submit`` may raise ``RuntimeError`` (a pool that was shut down): the work is then done on
    the calling thread.
    """

    def submit(self, fn: Callable[[], None], /) -> TaskHandle: ...


class Prepared:
    """What was computed ahead for one item of a batch (the class attributes are the defaults:
    an instance sets only what it learnt)."""

    message: Message | None = None
    """The decoded (or given) message; ``None`` when decoding failed or was not tried."""
    error: SecsyncError | None = None
    """The decoder's error, when it refused the bytes."""
    aad: bytes | None = None
    """The message's AAD when its signature was checked; ``None`` when it was not."""
    valid: bool = False
    """Whether the signature verifies (meaningful when ``aad`` is set)."""
    cipher: crypto.Cipher | None = None
    """The key an update with a valid signature was opened with, if it was."""
    failure: str | None = None
    """Why opening failed (commitment tag or AEAD), when it did."""
    changes: list[bytes] | None = None
    """The opened update's change list (``None`` if it was not opened or did not deserialize)."""


UNPREPARED: Final = Prepared()
"""Nothing computed ahead: the session handles the item as it would without workers."""

_decode = wire.decode
_signature_valid = sealing.signature_valid


def decode_messages(items: Sequence[object], doc_id: str, max_bytes: int) -> list[Prepared]:
    """Decode ``items`` (native wire bytes, or messages already), for :func:`check_messages`.

    Only immutable input is taken ahead (``bytes`` and messages); an item the decoder raises
    anything else for than its errors is left to the session, which raises it where it always
    did.
    """
    out: list[Prepared] = []
    for item in items:
        result = Prepared()
        if type(item) is bytes:
            try:
                message = _decode(item, doc_id=doc_id, max_bytes=max_bytes)
            except SecsyncError as exc:
                result.error = exc
                out.append(result)
                continue
            except Exception:
                out.append(UNPREPARED)
                continue
        elif isinstance(item, Update | Snapshot):
            message = item
        else:
            out.append(UNPREPARED)
            continue
        result.message = message
        out.append(result)
    return out


def check_messages(
    prepared: Sequence[Prepared],
    snapshot_id: bytes | None = None,
    cipher: crypto.Cipher | None = None,
) -> list[Prepared]:
    """Check the signatures of what :func:`decode_messages` gave; updates on ``snapshot_id``
    with a valid signature are also opened with ``cipher`` (the key the session will most
    likely open them with: it checks that it is) and their changes read.

    Each step (AAD, signature, opening, change list) runs over all the items before the next
    one: the libsodium calls one after the other run faster than mixed with Python. A step
    that raises leaves the rest of that item to the session.
    """
    checked: list[Prepared] = []
    messages: list[Update | Snapshot] = []
    for result in prepared:
        message = result.message
        if isinstance(message, Update | Snapshot):
            checked.append(result)
            messages.append(message)
    aads: list[bytes | None] = []
    for message in messages:
        aad: bytes | None
        try:
            aad = message.public_data.aad_b64()
        except Exception:
            aad = None
        aads.append(aad)
    opened: list[tuple[Prepared, Update, bytes]] = []
    for result, message, aad in zip(checked, messages, aads, strict=True):
        if aad is None:
            continue
        valid: bool | None
        try:
            valid = _signature_valid(message, aad)
        except Exception:
            valid = None
        if valid is None:
            continue
        result.aad = aad
        if valid:
            result.valid = True
            if (
                cipher is not None
                and isinstance(message, Update)
                and message.public_data.ref_snapshot_id == snapshot_id
            ):
                opened.append((result, message, aad))
    if cipher is None:
        return list(prepared)
    plaintexts: list[tuple[Prepared, bytes]] = []
    for result, update, aad in opened:
        try:
            plaintext = cipher.decrypt(update.ciphertext, update.nonce, aad)
        except crypto.CryptoFailure as exc:
            result.failure = str(exc)
            result.cipher = cipher
        except Exception:
            result.cipher = None
        else:
            result.cipher = cipher
            plaintexts.append((result, plaintext))
    for result, plaintext in plaintexts:
        try:
            result.changes = deserialize_changes(plaintext)
        except Exception:
            result.changes = None  # the session reads it again, and refuses it then
    return list(prepared)


def prepare_all(
    items: Sequence[Item],
    work: Callable[[Sequence[Item]], list[Prepared]],
    executor: TaskPool | None = None,
    workers: int = 0,
    *,
    step: int = DEFAULT_STEP,
) -> list[Prepared]:
    """``work`` over ``items``, ``step`` items at a time, on the calling thread and on
    ``workers`` tasks of ``executor``; the results in the order of ``items``.

    The calling thread takes part and never waits for a task that has not started (on a busy
    shared pool it does everything itself). Only the end of the batch is a meeting point: a
    worker needs the GIL after each libsodium call, and waking a sleeping thread costs tens of
    microseconds (more on virtual machines), so the session processes what was prepared after
    the workers are done rather than alongside them.
    """
    count = len(items)
    results: list[Prepared] = [UNPREPARED] * count
    ranges = _ranges(count, max(1, step), 1 + (workers if executor is not None else 0))
    claims = itertools.count()

    def run() -> None:
        for claim in claims:  # next() on a count is atomic: each range is claimed once
            if claim >= len(ranges):
                return
            start, end = ranges[claim]
            try:
                part = work(items[start:end])
            except Exception:  # left to the session, which raises it where it always did
                part = []
            if len(part) != end - start:
                part = [UNPREPARED] * (end - start)
            results[start:end] = part

    futures: list[TaskHandle] = []
    if executor is not None and len(ranges) > 1:
        for _ in range(workers):
            try:
                futures.append(executor.submit(run))
            except RuntimeError:  # the executor was shut down: prepare it all here
                break
    run()
    for future in futures:
        if not future.cancel():  # a task not started yet (a busy shared pool) has nothing left
            future.result()
    return results


def _ranges(count: int, step: int, threads: int) -> list[tuple[int, int]]:
    """``step`` items at a time, in smaller ranges towards the end when several threads share
    them, so that none waits long for the last one."""
    ranges = []
    start = 0
    while start < count:
        size = step if threads == 1 else max(1, min(step, (count - start) // (2 * threads)))
        ranges.append((start, min(start + size, count)))
        start += size
    return ranges
