"""Splitting a payload into parts and putting it back together. Pure: no NATS import.

A message too large for one broker message is stored as ``n`` parts written by one atomic batch,
so its parts have consecutive stream sequences. Every part carries two headers:
:data:`PARTS_HEADER` (the total ``n``) and :data:`PART_HEADER` (its 1-based index). A message
without these headers is complete by itself.

:class:`Reassembler` is fed the stored messages of a subject filter in stream order and returns
each complete message once its last part arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from secsync.errors import MalformedMessageError

PARTS_HEADER = "Secsync-Parts"
PART_HEADER = "Secsync-Part"

DEFAULT_MAX_PARTS = 1000  # the broker's limit of messages in one atomic batch
DEFAULT_MAX_BYTES = 128 * 1024 * 1024


def split(payload: bytes, max_part: int) -> list[bytes]:
    """``payload`` cut into parts of at most ``max_part`` bytes; at least one (maybe empty) part."""
    if max_part < 1:
        raise ValueError(f"max_part must be at least 1, not {max_part}")
    if not payload:
        return [b""]
    view = memoryview(payload)
    return [bytes(view[start : start + max_part]) for start in range(0, len(payload), max_part)]


def part_headers(index: int, count: int) -> dict[str, str]:
    """The headers of part ``index`` (1-based) of ``count``."""
    if not 1 <= index <= count:
        raise ValueError(f"part index {index} is not within 1..{count}")
    return {PARTS_HEADER: str(count), PART_HEADER: str(index)}


def _parse_count(value: str, name: str) -> int:
    # Strict decimal: no sign, no whitespace, no leading zeros, at most 9 digits.
    if not (value.isascii() and value.isdigit()) or len(value) > 9 or value.startswith("0"):
        raise MalformedMessageError(f"header {name} is not a positive decimal integer")
    return int(value)


class Reassembler:
    """Joins the parts of chunked messages, fed in stream order.

    :meth:`feed` returns a complete message or ``None`` while parts are missing. Anything
    inconsistent (a part index out of order, a changing part count, a gap in the stream
    sequences, a message without part headers in the middle of a chunked one, more than
    ``max_parts`` parts, or a message of more than ``max_bytes`` in total) raises
    :class:`~secsync.errors.MalformedMessageError`. The state is then reset, and the message that
    revealed the problem is *not* consumed: feeding it again starts clean (a message without part
    headers is then returned, a first part starts a new message).
    """

    __slots__ = (
        "_count",
        "_first_sequence",
        "_last_sequence",
        "_max_bytes",
        "_max_parts",
        "_parts",
        "_size",
        "first_sequence",
    )

    def __init__(
        self, *, max_parts: int = DEFAULT_MAX_PARTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_parts < 1:
            raise ValueError(f"max_parts must be at least 1, not {max_parts}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, not {max_bytes}")
        self._max_parts = max_parts
        self._max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._count = 0
        self._size = 0
        self._first_sequence = 0
        self._last_sequence = 0
        #: Stream sequence of the first part of the message :meth:`feed` returned last
        #: (its own sequence for a message in one piece); ``None`` before the first one.
        self.first_sequence: int | None = None

    @property
    def pending(self) -> bool:
        """Whether parts of an incomplete message are held."""
        return self._count > 0

    @property
    def pending_first_sequence(self) -> int | None:
        """Stream sequence of the first held part of the incomplete message, if any."""
        return self._first_sequence if self._count else None

    def reset(self) -> None:
        """Drop the parts of an incomplete message."""
        self._parts = []
        self._count = 0
        self._size = 0
        self._first_sequence = 0
        self._last_sequence = 0

    def feed(self, sequence: int, data: bytes, headers: Mapping[str, str] | None) -> bytes | None:
        """Take the next stored message; the complete message, or ``None`` while parts miss."""
        total = headers.get(PARTS_HEADER) if headers else None
        index_value = headers.get(PART_HEADER) if headers else None
        if total is None and index_value is None:
            if self._count:
                self._fail(
                    f"message at sequence {sequence} has no part headers, but part "
                    f"{len(self._parts) + 1} of {self._count} was expected"
                )
            self._check_size(len(data))
            return self._complete(sequence, data)
        if total is None or index_value is None:
            self._fail(f"message at sequence {sequence} carries only one of the part headers")
        try:
            count = _parse_count(total, PARTS_HEADER)
            index = _parse_count(index_value, PART_HEADER)
        except MalformedMessageError:
            self.reset()
            raise
        if count > self._max_parts:
            self._fail(f"message in {count} parts exceeds the bound of {self._max_parts}")
        if index > count:
            self._fail(f"part {index} of {count} is out of range")
        if not self._count:
            if index != 1:
                self._fail(f"part {index} of {count} at sequence {sequence} without part 1")
            if count == 1:
                self._check_size(len(data))
                return self._complete(sequence, data)
            self._check_size(len(data))
            self._count = count
            self._parts = [data]
            self._size = len(data)
            self._first_sequence = sequence
            self._last_sequence = sequence
            return None
        if count != self._count:
            self._fail(f"part count changed from {self._count} to {count}")
        expected = len(self._parts) + 1
        if index != expected:
            self._fail(f"part {index} of {count} where part {expected} was expected")
        if sequence != self._last_sequence + 1:
            self._fail(
                f"part {index} of {count} at sequence {sequence}, "
                f"expected at {self._last_sequence + 1}"
            )
        self._check_size(self._size + len(data))
        self._parts.append(data)
        self._size += len(data)
        self._last_sequence = sequence
        if index < count:
            return None
        first = self._first_sequence
        joined = b"".join(self._parts)
        self.reset()
        return self._complete(first, joined)

    def _complete(self, first_sequence: int, data: bytes) -> bytes:
        self.first_sequence = first_sequence
        return data

    def _check_size(self, size: int) -> None:
        if size > self._max_bytes:
            self._fail(f"message exceeds the bound of {self._max_bytes} bytes")

    def _fail(self, reason: str) -> NoReturn:
        self.reset()
        raise MalformedMessageError(reason)
