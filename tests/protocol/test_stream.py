"""The stream binding's rules, sans-IO: sessions on real CRDTs over an in-memory stream with
JetStream's semantics (tests.factories.MemoryStream), driven by secsync.protocol.stream."""

from __future__ import annotations

import pytest

from secsync.config import SecsyncConfig
from secsync.errors import (
    BrokerUnavailableError,
    CompareAndSetBusyError,
    DuplicateBatchError,
    SnapshotSearchError,
    TransportError,
    UpdateError,
    WrongKeyError,
    WrongLastSequenceError,
)
from secsync.protocol.events import SnapshotApplied, UpdateApplied
from secsync.protocol.messages import Snapshot, Update
from secsync.protocol.stream import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    MSG_ID,
    Accepted,
    Busy,
    CheckLanded,
    Conflict,
    Failed,
    Recheck,
    Resend,
    StreamBinding,
    Unanswered,
    VerifyDuplicate,
    Wake,
    holds,
    judge,
    landed,
)
from secsync.protocol.stream_search import (
    CountSnapshots,
    Latest,
    ReadSnapshots,
    SearchDone,
    SnapshotSearch,
    empty_subject,
    plan_after,
)
from secsync.protocol.stream_types import snapshot_msg_id
from tests.factories import MemoryBroker, MemoryStream, Participant, YPeer

CONFIG = SecsyncConfig()


def writer(broker: MemoryBroker, text: str = "hello") -> tuple[YPeer, Participant]:
    peer = YPeer()
    part = Participant(peer.session, broker)
    peer.type(0, text)
    part.sync()
    return peer, part


def snapshot_again(peer: YPeer, part: Participant, text: str) -> None:
    peer.type(0, text)
    part.sync()
    peer.session.request_snapshot()
    part.sync()


def search(
    broker: MemoryBroker, binding: StreamBinding, *, max_messages: int = 256
) -> tuple[Latest, SnapshotSearch | None]:
    """What transport.loading.fetch_latest does, over the in-memory stream."""
    subjects = broker.subjects
    last = broker.last(subjects.snapshot)
    if last is None:
        plan = empty_subject(subjects)
        found: SnapshotSearch | None = None
    else:
        found = SnapshotSearch(
            binding.session,
            last,
            decode=binding.decode,
            max_messages=max_messages,
            max_bytes=CONFIG.load_snapshot_bytes,
            chain_window=CONFIG.load_chain_window,
        )
        step = found.start()
        while not isinstance(step, SearchDone):
            if isinstance(step, ReadSnapshots):
                messages, count = broker.between(
                    subjects.snapshot,
                    step.first,
                    step.last,
                    stored_after=step.stored_after,
                    max_count=step.max_count,
                )
                step = found.found(messages, count)
            else:
                assert isinstance(step, CountSnapshots)
                step = found.counted(broker.count(subjects.snapshot))
        plan = plan_after(step.result, last.sequence, subjects)
    return plan.assemble([broker.read(s, start) for s, start in plan.reads]), found


def reader(broker: MemoryBroker) -> tuple[YPeer, StreamBinding]:
    peer = YPeer()
    return peer, StreamBinding(peer.session, broker.subjects, max_message_bytes=1 << 26)


def open_reader(broker: MemoryBroker) -> tuple[YPeer, StreamBinding, Latest]:
    peer, binding = reader(broker)
    latest, _ = search(broker, binding)
    peer.session.load(latest.snapshot, now=0.0)
    binding.adopt(latest, now=0.0)
    return peer, binding, latest


# --- the in-memory stream has JetStream's semantics ---------------------------------------------


def test_the_memory_stream_refuses_a_wrong_expectation_and_deduplicates_ids() -> None:
    stream = MemoryStream(duplicate_window=10.0)
    on = {EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: "d.*"}
    assert stream.put("d.a", b"1", {EXPECTED_LAST_SUBJECT_SEQ: "0", **on}) == (1, 1, False)
    assert stream.put("x.a", b"other document", {}) == (2, 2, False)
    refused = stream.put("d.b", b"2", {EXPECTED_LAST_SUBJECT_SEQ: "0", **on})
    assert isinstance(refused, WrongLastSequenceError) and refused.last_sequence == 1
    assert stream.put("d.b", b"2", {EXPECTED_LAST_SUBJECT_SEQ: "1", **on, MSG_ID: "m"}) == (
        3,
        3,
        False,
    )
    assert stream.put("d.b", b"2", {MSG_ID: "m"}, now=5.0) == (3, 3, True)
    assert stream.put("d.b", b"2", {MSG_ID: "m"}, now=20.0) == (4, 4, False)  # window passed
    # the expectation is checked first: a retry of a stored snapshot is refused, not "duplicate"
    assert isinstance(
        stream.put("d.b", b"2", {EXPECTED_LAST_SUBJECT_SEQ: "1", **on, MSG_ID: "m"}, now=21.0),
        WrongLastSequenceError,
    )


# --- publish outcomes -----------------------------------------------------------------------------


def test_judge_maps_every_outcome() -> None:
    peer = YPeer()
    peer.session.load(None, now=0.0)
    peer.type(0, "x")
    (snapshot,) = peer.session.data_to_send()
    assert isinstance(snapshot, Snapshot)
    assert judge(snapshot, (3, 3, True)) == Accepted(3, 3)
    assert judge(snapshot, (3, 5, False)) == Accepted(3, 5)
    assert judge(snapshot, CompareAndSetBusyError()) == Busy()
    conflict = WrongLastSequenceError(last_sequence=9)
    assert judge(snapshot, conflict) == Conflict(conflict)
    assert judge(snapshot, DuplicateBatchError()) == CheckLanded()
    unanswered = BrokerUnavailableError()
    assert judge(snapshot, unanswered) == Unanswered(unanswered)
    other = TransportError("odd")
    assert judge(snapshot, other) == Failed(other, retry=True)
    fatal = UpdateError("not the transport's")
    assert judge(snapshot, fatal) == Failed(fatal, retry=False)


def test_headers_carry_the_compare_and_set_preconditions() -> None:
    broker = MemoryBroker()
    peer, part = writer(broker)
    binding = part.binding
    peer.type(0, "more")
    (update,) = [m for m in peer.session.data_to_send() if isinstance(m, Update)]
    snapshot = peer.session.active_snapshot
    assert snapshot is not None
    headers = binding.headers(update)
    assert headers[EXPECTED_LAST_SUBJECT_SEQ] == str(
        binding.snapshot_sequences[snapshot.snapshot_id]
    )
    assert headers[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] == broker.subjects.snapshot
    snap = peer.session.create_snapshot()
    assert binding.headers(snap) == {
        MSG_ID: snapshot_msg_id(snap.snapshot_id),
        EXPECTED_LAST_SUBJECT_SEQ: str(binding.last_sequence),
        EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: broker.subjects.stored,
    }
    binding.unresolved.update({7, 9})  # refused snapshot messages being checked again
    assert binding.headers(snap)[EXPECTED_LAST_SUBJECT_SEQ] == "6"


# --- conflicts, lost acknowledgements, resends ---------------------------------------------------


def test_racing_snapshots_one_is_stored_and_the_other_rebases() -> None:
    broker = MemoryBroker()
    a, pa = writer(broker, "base")
    b = YPeer()
    pb = Participant(b.session, broker)
    pb.pull()
    a.type(4, " A")
    b.type(0, "B ")
    sa, sb = a.session.create_snapshot(), b.session.create_snapshot()
    ha, hb = pa.binding.headers(sa), pb.binding.headers(sb)
    assert ha[EXPECTED_LAST_SUBJECT_SEQ] == hb[EXPECTED_LAST_SUBJECT_SEQ]
    assert isinstance(judge(sa, broker.store(sa, ha)), Accepted)
    step = judge(sb, broker.store(sb, hb))
    assert isinstance(step, Conflict)
    # did an earlier attempt of b's land? no: the last snapshot is a's
    assert landed(hb[MSG_ID], broker.last(broker.subjects.snapshot)) is None
    pa._take(pa.binding.stored(sa, 2, 2, ha, now=0.0))
    pb._take(pb.binding.conflict(sb))
    for _ in range(3):
        pa.sync()
        pb.sync()
    assert a.content == b.content == "B base A"


def test_a_lost_acknowledgement_is_recognised_by_the_msg_id() -> None:
    broker = MemoryBroker()
    peer, part = writer(broker)
    snap = peer.session.create_snapshot()
    headers = part.binding.headers(snap)
    first = broker.store(snap, headers)
    assert isinstance(first, tuple)  # stored, but the answer never reached us
    retry = broker.store(snap, headers)
    assert isinstance(judge(snap, retry), Conflict)  # a single server: expectation first
    assert landed(headers[MSG_ID], broker.last(broker.subjects.snapshot)) == first[0]
    events = part.binding.stored(snap, first[0], first[0], headers, now=0.0)
    assert part.binding.last_sequence == first[0]
    assert peer.session.active_snapshot is not None
    assert peer.session.active_snapshot.snapshot_id == snap.snapshot_id
    assert events


def test_a_duplicate_counts_only_with_our_bytes() -> None:
    broker = MemoryBroker()
    peer, part = writer(broker)
    peer.type(0, "x")
    (update,) = [m for m in peer.session.data_to_send() if isinstance(m, Update)]
    headers = part.binding.headers(update)
    junk = broker.put(broker.subjects.update, b"junk", {MSG_ID: headers[MSG_ID]})
    assert isinstance(junk, tuple)
    outcome = broker.store(update, headers)
    step = judge(update, outcome)
    assert step == VerifyDuplicate(junk[0])
    found = broker.read(broker.subjects.update, step.sequence, limit=1)
    assert not holds(b"our bytes", step.sequence, found)
    assert holds(b"junk", step.sequence, found)
    assert part.binding.preempted(update) is not None


def test_an_update_refused_on_its_own_snapshot_corrects_its_expectation() -> None:
    broker = MemoryBroker()
    peer, part = writer(broker)
    binding = part.binding
    snapshot = peer.session.active_snapshot
    assert snapshot is not None
    peer.type(0, "x")
    (update,) = [m for m in peer.session.data_to_send() if isinstance(m, Update)]
    true_end = binding.snapshot_sequences[snapshot.snapshot_id]
    binding.snapshot_sequences[snapshot.snapshot_id] = 0  # our expectation was off
    headers = binding.headers(update)
    assert isinstance(judge(update, broker.store(update, headers)), Conflict)
    assert not binding.expectation_moved(update, headers)
    assert binding.still_latest(update, headers, broker.last(broker.subjects.snapshot))
    assert binding.snapshot_sequences[snapshot.snapshot_id] == true_end
    assert isinstance(judge(update, broker.store(update, binding.headers(update))), Accepted)


def test_an_update_on_a_replaced_snapshot_is_refused_and_rebased() -> None:
    broker = MemoryBroker()
    a, pa = writer(broker, "x")
    b = YPeer()
    pb = Participant(b.session, broker)
    pb.pull()
    b.type(0, "y")
    (stale,) = [m for m in b.session.data_to_send() if isinstance(m, Update)]
    snapshot_again(a, pa, "z")
    headers = pb.binding.headers(stale)
    assert isinstance(judge(stale, broker.store(stale, headers)), Conflict)
    assert not pb.binding.still_latest(stale, headers, broker.last(broker.subjects.snapshot))
    pb._take(pb.binding.conflict(stale))
    for _ in range(3):
        pb.sync()
        pa.sync()
    assert a.content == b.content
    assert "y" in a.content


# --- delivery: junk snapshots, rechecks ---------------------------------------------------------


def test_junk_on_the_snapshot_subject_is_checked_again_then_written_over() -> None:
    broker = MemoryBroker()
    _a, _pa = writer(broker)
    b = YPeer()
    pb = Participant(b.session, broker)
    pb.pull()
    junk_seq = broker.put(broker.subjects.snapshot, b"\x93junk", {})
    assert isinstance(junk_seq, tuple)
    pb.pull()
    (check,) = [x for x in pb.actions if isinstance(x, Recheck)]
    assert check == Recheck(junk_seq[0], junk_seq[0])
    assert pb.binding.unresolved == {junk_seq[0]}
    snap = b.session.create_snapshot()
    assert pb.binding.headers(snap)[EXPECTED_LAST_SUBJECT_SEQ] == str(junk_seq[0] - 1)
    out = pb.binding.rechecked(check, broker.read(broker.subjects.snapshot, check.first), now=0.0)
    assert any(isinstance(x, Resend) for x in out) and isinstance(out[-1], Wake)
    assert pb.binding.unresolved == set()
    active = b.session.active_snapshot
    assert active is not None
    assert pb.binding.snapshot_sequences[active.snapshot_id] == junk_seq[0]


def test_history_lost_when_the_stream_holds_other_bytes_or_nothing() -> None:
    broker = MemoryBroker()
    _peer, part = writer(broker)
    binding = part.binding
    at = broker.read(broker.subjects.stored, binding.last_sequence, limit=1)
    assert not binding.history_lost(at)
    assert binding.history_lost([])
    other = [type(at[0])(at[0].subject, at[0].sequence, b"other", {})]
    binding.last_data = at[0].data
    assert binding.history_lost(other)


# --- which snapshot to load ---------------------------------------------------------------------


def test_the_latest_snapshot_is_loaded_with_the_updates_after_it() -> None:
    broker = MemoryBroker()
    a, pa = writer(broker, "one ")
    snapshot_again(a, pa, "two ")
    a.type(0, "three ")
    pa.sync()
    b, binding, latest = open_reader(broker)
    assert latest.snapshot is not None
    assert latest.snapshot.snapshot_id == a.session.active_snapshot.snapshot_id  # type: ignore[union-attr]
    assert b.content == a.content
    assert binding.last_sequence == len(broker.messages)


def test_junk_stored_last_is_passed_over_for_the_real_snapshot() -> None:
    broker = MemoryBroker()
    _a, _pa = writer(broker, "real")
    broker.put(broker.subjects.snapshot, b"\xc1 not msgpack", {})
    b, _binding, latest = open_reader(broker)
    assert latest.snapshot is not None and b.content == "real"


def test_a_replayed_old_snapshot_stored_last_is_not_the_latest() -> None:
    broker = MemoryBroker()
    a, pa = writer(broker, "one ")
    first = broker.read(broker.subjects.snapshot, 1)[0]
    snapshot_again(a, pa, "two ")
    broker.put(broker.subjects.snapshot, first.data, {})  # a replay of the first snapshot
    b, _binding, latest = open_reader(broker)
    assert latest.snapshot is not None
    assert latest.snapshot.snapshot_id == a.session.active_snapshot.snapshot_id  # type: ignore[union-attr]
    assert b.content == a.content


def test_a_snapshot_under_another_key_does_not_open() -> None:
    broker = MemoryBroker()
    writer(broker, "secret")
    stranger = YPeer(key=bytes(32))
    binding = StreamBinding(stranger.session, broker.subjects, max_message_bytes=1 << 26)
    with pytest.raises(WrongKeyError):
        search(broker, binding)


def test_the_search_reads_back_in_doubling_windows_until_settled() -> None:
    broker = MemoryBroker()
    a, pa = writer(broker, "a")
    for n in range(3):
        snapshot_again(a, pa, str(n))
    for _ in range(40):  # updates push the previous snapshot message out of the first window
        a.type(0, "u")
        pa.sync()
    _b, binding = reader(broker)
    latest, found = search(broker, binding)
    assert found is not None and latest.snapshot is not None
    assert found.read.windows >= 2
    assert found.read.messages < len(broker.read(broker.subjects.snapshot, 1)) + 1


def test_the_search_gives_up_past_its_bound_with_nothing_to_load() -> None:
    broker = MemoryBroker()
    writer(broker, "a")
    for _ in range(30):
        broker.put(broker.subjects.snapshot, b"\xc1junk", {})
    _b, binding = reader(broker)
    with pytest.raises(SnapshotSearchError):
        search(broker, binding, max_messages=10)


def test_an_unchained_snapshot_past_the_bound_is_still_loaded() -> None:
    broker = MemoryBroker()
    a, pa = writer(broker, "a")
    for n in range(12):
        snapshot_again(a, pa, str(n))
    _b, binding = reader(broker)
    latest, found = search(broker, binding, max_messages=1)
    assert found is not None and latest.snapshot is not None  # the bound: taken unsettled
    assert latest.snapshot.snapshot_id == a.session.active_snapshot.snapshot_id  # type: ignore[union-attr]


def test_updates_delivered_after_loading_are_applied_in_one_run() -> None:
    broker = MemoryBroker()
    a, pa = writer(broker, "a")
    b, binding, _latest = open_reader(broker)
    for char in "bcd":
        a.type(0, char)
        pa.sync()
    out = binding.deliver(broker.read(broker.subjects.stored, binding.last_sequence + 1), now=0.0)
    assert sum(isinstance(e, UpdateApplied) for e in out) == 3
    assert not any(isinstance(e, SnapshotApplied) for e in out)
    assert b.content == a.content
    again = binding.deliver(broker.read(broker.subjects.stored, 1), now=0.0)
    assert again == [] and binding.redelivered == len(broker.messages)
