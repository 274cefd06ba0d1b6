"""Which stored snapshot to load: the bounded search back over a document's snapshot subject.

Pure (sans-IO). :class:`SnapshotSearch` is fed what the stream holds and answers with the next
read to make (:class:`ReadSnapshots`, :class:`CountSnapshots`) or the choice
(:class:`SearchDone`); :func:`plan_after` says what to read after the chosen snapshot.

The last message on the snapshot subject is only a hint: anyone who may write there can store
junk, replay an old snapshot, or seal one under another key. So the subject is read back from
its end, in windows of stream sequences that double (16, 32, 64, ...), until the session
chooses (:meth:`DocumentSession.choose`) a snapshot among those read that is *settled*: its
parent was read too (or the whole subject was), so an earlier copy of it, which would make it a
replay, would have been seen; with membership chains, at least ``load_chain_window`` snapshot
messages before it were weighed as well. Past ``load_snapshot_messages`` messages or
``load_snapshot_bytes`` bytes without a settled choice, the choice made so far is taken if
there is one; otherwise :class:`SnapshotSearchError` (119).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from secsync.errors import AccessError, SecsyncError, SnapshotSearchError, WrongKeyError
from secsync.logs import get_logger
from secsync.protocol.messages import Message, Snapshot
from secsync.protocol.stream_parts import PART_HEADER, Reassembler
from secsync.protocol.stream_types import StoredMessage, Subjects

if TYPE_CHECKING:
    from secsync.protocol.session import DocumentSession, SnapshotChoice

log = get_logger("secsync.stream")

# Sequences in the first window read back before the last snapshot message; each next one
# doubles, so a snapshot n sequences back is found after about log2(n) windows.
FIRST_SPAN = 16


@dataclass(slots=True)
class SearchRead:
    """What looking back over the snapshot subject read, for its bound (and for tests)."""

    messages: int
    bytes: int
    windows: int


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The session's choice among the snapshots read, with where each one ends."""

    choice: SnapshotChoice
    candidates: list[Snapshot]
    sequences: list[int]
    read: SearchRead


@dataclass(frozen=True, slots=True)
class ReadSnapshots:
    """Read the snapshot messages stored at ``first..last``: at most ``max_count`` of them,
    and how many there are (``stored_after`` are already read after ``last``); answer with
    :meth:`SnapshotSearch.found`."""

    first: int
    last: int
    stored_after: int
    max_count: int


@dataclass(frozen=True, slots=True)
class CountSnapshots:
    """Count the snapshot messages stored; answer with :meth:`SnapshotSearch.counted`."""


@dataclass(frozen=True, slots=True)
class SearchDone:
    result: SearchResult


SearchStep = ReadSnapshots | CountSnapshots | SearchDone


def part_index(message: StoredMessage) -> int:
    """A stored part's 1-based index (1 for a whole message, or a malformed header)."""
    value = message.headers.get(PART_HEADER)
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 9:
        return 1
    return max(1, int(value))


def decode_window(
    messages: Sequence[StoredMessage], decode: Callable[[bytes], Message | None]
) -> list[tuple[int, Snapshot]]:
    """The snapshots among ``messages`` (in stream order, starting where a message starts)."""
    assembler = Reassembler()
    out: list[tuple[int, Snapshot]] = []
    for message in messages:
        try:
            data = assembler.feed(message.sequence, message.data, message.headers)
        except SecsyncError:
            continue  # broken parts: not a snapshot
        if data is None:
            continue
        decoded = decode(data)
        if isinstance(decoded, Snapshot):
            out.append((message.sequence, decoded))
    return out


def weigh(
    session: DocumentSession,
    decoded: list[tuple[int, Snapshot]],
    passed_over: frozenset[bytes],
    read: SearchRead,
) -> SearchResult:
    """The session's choice among the snapshots read: each id at its first place in the
    stream (a later copy is a replay, never the latest), without those ``passed_over``."""
    seen: set[bytes] = set()
    candidates: list[Snapshot] = []
    sequences: list[int] = []
    for sequence, snapshot in decoded:
        if snapshot.snapshot_id in seen:
            continue
        seen.add(snapshot.snapshot_id)
        if snapshot.snapshot_id in passed_over:
            continue  # its content did not apply: not a snapshot to load
        candidates.append(snapshot)
        sequences.append(sequence)
    return SearchResult(session.choose(candidates), candidates, sequences, read)


def settled(
    result: SearchResult, decoded: list[tuple[int, Snapshot]], chains: bool, chain_window: int
) -> bool:
    """Whether reading further back could not change the choice: its parent was read before
    it, and with membership chains ``chain_window`` snapshot messages before it too."""
    index = result.choice.index
    if index is None:
        return False
    chosen, sequence = result.candidates[index], result.sequences[index]
    parent = chosen.public_data.parent_snapshot_id
    before = [s for seq, s in decoded if seq < sequence]
    if not parent or not any(s.snapshot_id == parent for s in before):
        return False  # a first snapshot, or a parent not read yet: only the start settles it
    return not chains or len(before) >= chain_window


@dataclass(slots=True)
class _Asked:
    read: ReadSnapshots
    widening: bool  # back to the first part of a chunked snapshot the window cut


class SnapshotSearch:
    """The search back from ``last``, the snapshot subject's last message.

    Call :meth:`start`, perform the step it returns, and feed the answer to :meth:`found` or
    :meth:`counted`, until a :class:`SearchDone`. Raises :class:`SnapshotSearchError` when the
    bound is reached with nothing chosen.
    """

    def __init__(
        self,
        session: DocumentSession,
        last: StoredMessage,
        *,
        decode: Callable[[bytes], Message | None],
        passed_over: frozenset[bytes] = frozenset(),
        max_messages: int,
        max_bytes: int,
        chain_window: int,
    ) -> None:
        self._session = session
        self._decode = decode
        self._passed_over = passed_over
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._chain_window = chain_window
        self._chains = getattr(session.keys, "membership_chain", None) is not None
        self.read = SearchRead(messages=1, bytes=len(last.data), windows=1)
        self._lowest = last.sequence  # [lowest, last] is read
        self._fresh: list[StoredMessage] = [last]  # read and not decoded yet, in stream order
        self._decoded: list[tuple[int, Snapshot]] = []  # (sequence of its last part, snapshot)
        self._span = FIRST_SPAN
        self._result: SearchResult | None = None
        self._total: int | None = None  # snapshot messages stored, once counted
        self._asked: _Asked | None = None

    def start(self) -> SearchStep:
        return self._run()

    def found(self, messages: list[StoredMessage], count: int) -> SearchStep:
        """The answer to :class:`ReadSnapshots`: what was read, and how many lie there."""
        asked, self._asked = self._asked, None
        assert asked is not None, "found() answers a ReadSnapshots step"
        read = self.read
        left = self._max_messages - read.messages
        read.windows += 1
        if count > left:
            read.messages += count
            error = self._search_error()
            if asked.widening:
                raise error
            return self._unsettled()
        read.messages += len(messages)
        read.bytes += sum(len(m.data) for m in messages)
        self._lowest = asked.read.first
        if asked.widening:
            self._fresh = messages + self._fresh
        else:
            self._fresh = list(messages)
            self._span *= 2
        return self._run()

    def counted(self, total: int) -> SearchStep:
        """The answer to :class:`CountSnapshots`."""
        self._total = total
        assert self._result is not None
        if self.read.messages >= total:
            return SearchDone(self._result)
        return self._beyond()

    def _run(self) -> SearchStep:
        fresh = self._fresh
        # A window starts where a message starts: fetch the first parts of a chunked one.
        index = part_index(fresh[0]) if fresh else 1
        start = fresh[0].sequence - index + 1 if fresh else self._lowest
        if index > 1 and 1 <= start < self._lowest:
            return self._ask(start, widening=True)
        if fresh or self._result is None:  # an empty window changes nothing to weigh
            self._decoded = decode_window(fresh, self._decode) + self._decoded
            self._result = weigh(self._session, self._decoded, self._passed_over, self.read)
        self._fresh = []
        result = self._result
        complete = self._lowest <= 1 or (
            self._total is not None and self.read.messages >= self._total
        )
        if complete or settled(result, self._decoded, self._chains, self._chain_window):
            return SearchDone(result)
        if self._total is None and self.read.windows > 1:
            # Read back to the subject's first message, without counting down the sequences
            # to 1 (a compacted document starts far into the stream).
            return CountSnapshots()
        return self._beyond()

    def _beyond(self) -> SearchStep:
        read = self.read
        if read.messages >= self._max_messages or read.bytes >= self._max_bytes:
            return self._unsettled()
        return self._ask(max(1, self._lowest - self._span), widening=False)

    def _ask(self, first: int, *, widening: bool) -> ReadSnapshots:
        step = ReadSnapshots(
            first,
            self._lowest - 1,
            stored_after=self.read.messages,
            max_count=max(0, self._max_messages - self.read.messages),
        )
        self._asked = _Asked(step, widening)
        return step

    def _unsettled(self) -> SearchDone:
        """The bound is reached. A snapshot that verifies and opens was chosen, but its parent
        (or, for a group, enough earlier chains) lies further back: it is loaded, so that a
        long run of snapshots stored after a parent (a flood, the repair after it) never
        makes a document unopenable. Only a replayed old snapshot stored last, with more
        than the bound after its parent, goes unnoticed then; readers that hold the document
        see it lack content and repair it. Nothing chosen: ``SnapshotSearchError``."""
        result = self._result
        if result is None or result.choice.index is None:
            raise self._search_error()
        read = self.read
        log.warning(
            "snapshot_search_unsettled",
            messages=read.messages,
            bytes=read.bytes,
            windows=read.windows,
        )
        return SearchDone(result)

    def _search_error(self) -> SnapshotSearchError:
        read = self.read
        log.warning(
            "snapshot_search_bound", messages=read.messages, bytes=read.bytes, windows=read.windows
        )
        return SnapshotSearchError(
            f"no snapshot to load among the last {read.messages} snapshot message(s) "
            f"({read.bytes} bytes) of this document: more was stored after the latest loadable "
            "one than loading reads (load_snapshot_messages, load_snapshot_bytes); "
            "nothing was written"
        )


@dataclass(frozen=True, slots=True)
class Latest:
    """The snapshot to load and what was stored after it."""

    snapshot: Snapshot | None
    sequence: int  # where the chosen snapshot's message ends (0: none)
    judged: int  # the last snapshot-subject sequence weighed when choosing
    after: list[StoredMessage]  # stored after the chosen snapshot, in order


@dataclass(frozen=True, slots=True)
class AfterPlan:
    """What to read after the chosen snapshot: each ``(subject, first sequence)`` of
    :attr:`reads`, then :meth:`assemble` the answers, in the same order."""

    snapshot: Snapshot | None
    sequence: int
    judged: int
    reads: tuple[tuple[str, int], ...]
    snapshot_subject: str = field(default="")

    def assemble(self, answers: Sequence[list[StoredMessage]]) -> Latest:
        if len(answers) == 1:
            rest = answers[0]
        else:
            rest = sorted((m for answer in answers for m in answer), key=lambda m: m.sequence)
        if self.snapshot is not None:
            # snapshot messages up to `judged` were weighed already: not a thing to apply
            rest = [
                m for m in rest if m.subject != self.snapshot_subject or m.sequence > self.judged
            ]
        return Latest(self.snapshot, self.sequence, self.judged, rest)


def empty_subject(subjects: Subjects) -> AfterPlan:
    """No snapshot message is stored: read everything stored for the document."""
    return AfterPlan(None, 0, 0, ((subjects.stored, 1),))


def plan_after(result: SearchResult, judged: int, subjects: Subjects) -> AfterPlan:
    """What to read once ``result`` is chosen, ``judged`` being the last snapshot message
    weighed. Raises :class:`WrongKeyError` (or the key provider's own :class:`AccessError`,
    e.g. ``NotAMemberError``) when nothing is chosen and a candidate did not open with our
    key: the document has history this client cannot read."""
    choice, candidates, sequences = result.choice, result.candidates, result.sequences
    if choice.index is None:
        if choice.unreadable:
            # the key provider's own verdict says most (not a member, a forged roster)
            for rejection in choice.rejected:
                if isinstance(rejection.error, AccessError):
                    raise rejection.error
            raise WrongKeyError(
                "the key does not open this document: none of its "
                f"{len(candidates)} stored snapshot(s) decrypts with it; nothing was written"
            )
        return AfterPlan(None, 0, judged, ((subjects.stored, 1),))
    snapshot, sequence = candidates[choice.index], sequences[choice.index]
    if sequence >= judged:
        reads: tuple[tuple[str, int], ...] = ((subjects.stored, sequence + 1),)
    else:
        # Snapshot messages up to `judged` were weighed above and passed over: not read
        # again; the updates after the chosen one and what followed `judged` are.
        reads = ((subjects.update, sequence + 1), (subjects.snapshot, judged + 1))
    return AfterPlan(snapshot, sequence, judged, reads, subjects.snapshot)
