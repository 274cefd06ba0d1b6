"""The document view: the exact view of stored messages a JS client may be served."""

from __future__ import annotations

from dataclasses import replace

from secsync.errors import (
    MalformedMessageError,
    SnapshotDocumentIdError,
    SnapshotMissesUpdatesError,
    SnapshotParentError,
    SnapshotReplayError,
    SnapshotSignatureError,
    UpdateClockGapError,
    UpdateReplayError,
    UpdateSignatureError,
    UpdateSnapshotMismatchError,
)
from secsync.gateway import DocumentView, Dropped, Released
from secsync.protocol import wire
from secsync.protocol.messages import ProofChainEntry, Snapshot, Update
from secsync.protocol.stream_parts import part_headers, split
from tests.factories import MemoryStream
from tests.gateway.helpers import DOC_ID, SUBJECTS, A, B, message, store


def fed(*names: str) -> tuple[DocumentView, list[Released | Dropped]]:
    stream = MemoryStream()
    store(stream, *names)
    view = DocumentView(DOC_ID, SUBJECTS)
    return view, view.feed(stream.read(SUBJECTS.stored, 1))


def forged(name: str) -> Snapshot | Update:
    m = message(name)
    assert isinstance(m, Snapshot | Update)
    return replace(m, ciphertext=m.ciphertext[:-1] + bytes([m.ciphertext[-1] ^ 1]))


def dropped(events: list[Released | Dropped]) -> list[type]:
    return [type(e.error) for e in events if isinstance(e, Dropped)]


def test_a_chain_of_snapshots_with_their_updates() -> None:
    view, events = fed("s1", "u1_a0", "u1_a1", "u1_b0", "s2", "u2_a0", "u2_b0", "u2_a1", "s3")
    assert all(isinstance(e, Released) for e in events)
    assert [e.sequence for e in events] == list(range(1, 10))
    s1, s2, s3 = message("s1"), message("s2"), message("s3")
    assert isinstance(s3, Snapshot)
    assert view.active == s3 and view.active_sequence == 9 and view.last_sequence == 9
    assert [e.snapshot_id for e in view.chain] == [m.public_data.snapshot_id for m in (s1, s2, s3)]  # type: ignore[union-attr]
    assert view.chain[-1] == ProofChainEntry.of(s3)
    assert view.updates == [] and dict(view.clocks) == {}
    assert view.chain_after(s1.public_data.snapshot_id) == view.chain[1:]  # type: ignore[union-attr]
    assert view.chain_after(s3.snapshot_id) == []
    assert view.chain_after(b"\0" * 24) is None


def test_clocks_and_updates_of_the_active_snapshot() -> None:
    view, _ = fed("s1", "u1_a0", "u1_a1", "u1_b0")
    assert dict(view.clocks) == {A: 1, B: 0}
    assert view.updates == [message(n) for n in ("u1_a0", "u1_a1", "u1_b0")]
    assert view.updates_after({A: 0}) == [message("u1_a1"), message("u1_b0")]


def test_an_update_arriving_early_is_held_until_its_predecessor_is_stored() -> None:
    view, events = fed("s1", "u1_a1", "u1_b0")
    assert [type(e) for e in events] == [Released, Released]
    assert view.held == 1 and dict(view.clocks) == {B: 0}
    stream = MemoryStream()
    store(stream, "s1", "u1_a1", "u1_b0", "u1_a0")
    later = view.feed(stream.read(SUBJECTS.stored, 4))
    assert [(type(e), e.sequence) for e in later] == [(Released, 4), (Released, 2)]
    assert [e.message for e in later] == [message("u1_a0"), message("u1_a1")]
    assert view.held == 0 and dict(view.clocks) == {A: 1, B: 0}


def test_held_updates_are_bounded_and_dropped_when_their_snapshot_is_replaced() -> None:
    stream = MemoryStream()
    store(stream, "s1", "u1_a1")
    view = DocumentView(DOC_ID, SUBJECTS, max_held=0)
    assert dropped(view.feed(stream.read(SUBJECTS.stored, 1))) == [UpdateClockGapError]
    view, _ = fed("s1", "u1_a1")
    assert view.held == 1
    # s2 expects A at 1: a snapshot that does not chain leaves the held update held
    stream = MemoryStream()
    store(stream, "s1", "u1_a1", "s2_misses_b")
    events = view.feed(stream.read(SUBJECTS.stored, 3))
    assert dropped(events) == [SnapshotMissesUpdatesError] and view.held == 1


def test_junk_never_reaches_the_view() -> None:
    stream = MemoryStream()
    store(
        stream,
        forged("s1"),  # 1: forged
        "s1",  # 2
        "u1_a0_other_doc",  # 3: signed for another document, stored without its doc id
        forged("u1_a0"),  # 4
        "u1_a0",  # 5
        "u1_a0",  # 6: replay
        "s2",  # 7: misses B's update: parentSnapshotUpdateClocks differ
        "s2_misses_b",  # 8: misses B's update (clocks {A: 1})
        "u1_b0",  # 9
        "s2_wrong_proof",  # 10
        "s1",  # 11: replayed snapshot
    )
    stream.put(SUBJECTS.update, b"\x93junk", {})  # 12
    view = DocumentView(DOC_ID, SUBJECTS)
    events = view.feed(stream.read(SUBJECTS.stored, 1))
    released = [e.sequence for e in events if isinstance(e, Released)]
    assert released == [2, 5, 9]
    assert dropped(events) == [
        SnapshotSignatureError,
        UpdateSignatureError,
        UpdateSignatureError,
        UpdateReplayError,
        SnapshotMissesUpdatesError,
        SnapshotMissesUpdatesError,
        SnapshotParentError,
        SnapshotReplayError,
        MalformedMessageError,
    ]
    # the stored form leaves the doc id to the subject: signed for another one, it fails
    assert view.active == message("s1")
    assert view.fate(3) is not None and not isinstance(view.fate(3), Released)


def test_a_snapshot_of_another_document_and_an_update_on_an_old_snapshot() -> None:
    other = replace(message("s1"), public_data=replace(message("s1").public_data, doc_id="x"))  # type: ignore[arg-type]
    stream = MemoryStream()
    stream.put(SUBJECTS.snapshot, wire.encode(other), {})
    view = DocumentView(DOC_ID, SUBJECTS)
    assert dropped(view.feed(stream.read(SUBJECTS.stored, 1))) == [SnapshotSignatureError]
    stream = MemoryStream()
    stream.put(SUBJECTS.snapshot, wire.encode(message("s1")), {})  # names its doc id: fine
    view = DocumentView("another document", SUBJECTS)
    assert dropped(view.feed(stream.read(SUBJECTS.stored, 1))) == [SnapshotDocumentIdError]
    view, events = fed(
        "s1", "u1_a0", "u1_a1", "u1_b0", "s2", "u2_a0", "u2_b0", "u2_a1", "s3", "u2_b1_late"
    )
    assert dropped(events) == [UpdateSnapshotMismatchError]


def test_a_snapshot_stored_in_parts_is_put_together() -> None:
    s1 = message("s1")
    assert isinstance(s1, Snapshot)
    parts = split(wire.encode(s1, include_doc_id=False), 40)
    stream = MemoryStream()
    for index, part in enumerate(parts, 1):
        stream.put(SUBJECTS.snapshot, part, part_headers(index, len(parts)))
    view = DocumentView(DOC_ID, SUBJECTS)
    events = view.feed(stream.read(SUBJECTS.stored, 1))
    assert len(parts) > 2
    assert [(type(e), e.sequence) for e in events] == [(Released, len(parts))]
    assert view.active == s1 and view.active_sequence == len(parts)


def test_redelivered_messages_are_skipped() -> None:
    stream = MemoryStream()
    store(stream, "s1", "u1_a0")
    view = DocumentView(DOC_ID, SUBJECTS)
    view.feed(stream.read(SUBJECTS.stored, 1))
    assert view.feed(stream.read(SUBJECTS.stored, 1)) == []
    assert view.updates == [message("u1_a0")]


def test_a_js_client_fed_only_what_the_view_releases_never_fails() -> None:
    """Junk, replays, early arrivals and unchained snapshots interleaved with the real history:
    every connection, opened at any point and in either mode, sees a history a JS client takes."""
    from tests.gateway.helpers import Hub, JsClientModel, params

    history = [
        "s1", forged("u1_a0"), "u1_a1", "u1_b0", "u1_a0_other_doc", "u1_a0", "u1_a1",
        "s2_wrong_proof", "s2_misses_b", forged("s2"), "s2", "u1_b0", "u2_b0", "u2_a1",
        "u2_a0", "u2_b0", "s1", "s3", "u2_b1_late", "u3_b0",
    ]  # fmt: skip
    hub = Hub()
    models = []
    for index, item in enumerate(history):
        c = hub.connect(params("delta" if index % 2 else "complete"))
        models.append((c, JsClientModel()))
        store(hub.stream, item)
        hub.pull()
    for c, model in models:
        model.feed(hub.sent[c])
        assert model.active == message("s3"), c
        assert model.clocks == {B: 0}
    # a known snapshot two behind, in delta mode: the chain carries the client forward
    model = JsClientModel()
    s1 = message("s1")
    assert isinstance(s1, Snapshot)
    model.active, model.clocks = s1, {A: 1, B: 0}
    model.feed(hub.sent[hub.connect(params("delta", s1.snapshot_id, {A: 1, B: 0}))])
    assert model.active == message("s3") and model.clocks == {B: 0}


def test_the_model_catches_what_a_js_client_fails_on() -> None:
    """The model of the JS client's checks fails where the client would (so that the test above
    can fail)."""
    import pytest

    from tests.gateway.helpers import JsClientError, JsClientModel, frame

    def upd(name: str) -> dict[str, object]:
        return {**frame(name), "type": "update"}

    for frames, code in (
        ([{"type": "snapshot", "snapshot": frame("s1")}, upd("u1_a1")], "202"),
        ([{"type": "snapshot", "snapshot": frame("s1")}, upd("u1_a0"), upd("u1_a0")], "214"),
        ([{"type": "snapshot", "snapshot": frame("s1")}, upd("u2_a0")], "213"),
        (
            [
                {"type": "snapshot", "snapshot": frame("s1")},
                {"type": "snapshot", "snapshot": frame("s3")},
            ],
            "112",
        ),
    ):
        with pytest.raises(JsClientError, match=code):
            JsClientModel().feed(frames)  # type: ignore[arg-type]


def test_a_view_can_begin_at_the_snapshot_the_load_search_chose() -> None:
    stream = MemoryStream()
    store(stream, "s1", "u1_a0", "u1_a1", "u1_b0", "s2", "u2_a0")
    s2 = message("s2")
    assert isinstance(s2, Snapshot)
    view = DocumentView(DOC_ID, SUBJECTS)
    assert view.begin(s2, 5) == [Released(s2, 5)]
    events = view.feed(stream.read(SUBJECTS.stored, 1))
    assert events == [Released(message("u2_a0"), 6)]  # type: ignore[arg-type]
    assert view.active == s2 and view.chain_after(message("s1").public_data.snapshot_id) is None  # type: ignore[union-attr]
    forged_view = DocumentView(DOC_ID, SUBJECTS)
    assert dropped(forged_view.begin(forged("s2"), 5)) == [SnapshotSignatureError]  # type: ignore[arg-type]
    assert forged_view.active is None
