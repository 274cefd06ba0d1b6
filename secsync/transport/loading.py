"""Finding the snapshot to load: the reads :class:`~secsync.protocol.stream_search.SnapshotSearch`
asks for, performed on the stream (the rules, bound and settling are in that pure module)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from secsync.config import SecsyncConfig
from secsync.protocol.stream import StreamBinding
from secsync.protocol.stream_search import (
    AfterPlan,
    CountSnapshots,
    Latest,
    ReadSnapshots,
    SearchDone,
    SearchRead,
    SnapshotSearch,
    empty_subject,
    plan_after,
)
from secsync.transport.events import DocumentEvent
from secsync.transport.stream_io import JetStreamLink


async def find_latest(
    io: JetStreamLink,
    binding: StreamBinding,
    config: SecsyncConfig,
    *,
    emit: Callable[[Sequence[DocumentEvent]], None],
    searched: Callable[[SearchRead], None],
    passed_over: frozenset[bytes] = frozenset(),
    progress: Callable[[], None] = lambda: None,
) -> AfterPlan:
    """The snapshot to load, and what to read after it (see
    :mod:`secsync.protocol.stream_search`). ``searched`` learns what the search read;
    ``emit`` the reasons the newer candidates were passed over; ``progress`` is called after
    each read. Raises :class:`SnapshotSearchError` past the bound, :class:`WrongKeyError` (or
    the key provider's ``NotAMemberError``) when no stored snapshot opens with our key."""
    subjects = binding.subjects
    last = await io.last(subjects.snapshot)
    progress()
    if last is None:
        return empty_subject(subjects)
    search = SnapshotSearch(
        binding.session,
        last,
        decode=binding.decode,
        passed_over=passed_over,
        max_messages=config.load_snapshot_messages,
        max_bytes=config.load_snapshot_bytes,
        chain_window=config.load_chain_window,
    )
    step = search.start()
    while not isinstance(step, SearchDone):
        if isinstance(step, ReadSnapshots):
            found, count = await io.between(
                subjects.snapshot,
                step.first,
                step.last,
                stored_after=step.stored_after,
                max_count=step.max_count,
            )
            step = search.found(found, count)
        else:
            assert isinstance(step, CountSnapshots)
            step = search.counted(await io.count(subjects.snapshot))
        progress()
    result = step.result
    searched(result.read)
    emit(list(result.choice.rejected))
    return plan_after(result, last.sequence, subjects)


async def fetch_latest(
    io: JetStreamLink,
    binding: StreamBinding,
    config: SecsyncConfig,
    *,
    emit: Callable[[Sequence[DocumentEvent]], None],
    searched: Callable[[SearchRead], None],
    passed_over: frozenset[bytes] = frozenset(),
) -> Latest:
    """:func:`find_latest`, and what was stored after the snapshot, read in full."""
    plan = await find_latest(
        io, binding, config, emit=emit, searched=searched, passed_over=passed_over
    )
    answers = [await io.read(subject, start) for subject, start in plan.reads]
    return plan.assemble(answers)
