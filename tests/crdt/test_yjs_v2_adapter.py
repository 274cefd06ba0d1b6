"""The Yjs adapter's content format: v2 out, v2 (or detected v1) in, v1 unchanged."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from secsync.crdt import adapter_for
from secsync.crdt.yjs import YjsAdapter, new_yjs_doc
from secsync.crdt.yjs_format import decode_state_vector
from secsync.crdt.yjs_v2 import EMPTY_V1, EMPTY_V2, decode_v2, v1_to_v2
from secsync.errors import SnapshotApplyError, UpdateApplyError
from secsync.protocol import crypto, sealing
from secsync.protocol.changes import deserialize_changes
from secsync.protocol.events import MessageRejected
from secsync.protocol.messages import Snapshot, Update
from secsync.protocol.session import DocumentSession
from tests.factories import DOC_ID, KEY, MemoryBroker, Participant, plain_yjs_doc

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "yjs_v2" / "cases.json.gz"


def _text(adapter: YjsAdapter) -> str:
    return str(adapter.doc.get("text", type=pycrdt.Text))


def _v2_adapter(text: str = "") -> YjsAdapter:
    adapter = YjsAdapter(plain_yjs_doc(), content_format="v2")
    if text:
        adapter.doc.get("text", type=pycrdt.Text).insert(0, text)
    return adapter


def test_a_v2_document_sends_v2_and_reads_v2() -> None:
    a = _v2_adapter()
    seen: list[bytes] = []
    a.doc.observe(lambda event: seen.append(event.update))
    text = a.doc.get("text", type=pycrdt.Text)
    text.insert(0, "héllo 😀")
    text.insert(1, "!")
    changes = a.take_local_changes()
    assert [decode_v2(c) for c in changes] == seen  # v2, and what pycrdt wrote
    state = a.encode_state()
    assert decode_v2(state) == a.doc.get_update()
    b = _v2_adapter()
    b.apply_changes(changes)
    assert _text(b) == "h!éllo 😀"
    c = _v2_adapter()
    c.apply_snapshot(state)
    assert _text(c) == "h!éllo 😀"
    assert c.take_local_changes() == []
    # what a snapshot lacks comes back in v2 too
    text.insert(0, ">")
    missing = a.missing_from(state)
    assert len(missing) == 1
    c.apply_changes(missing)
    assert _text(c) == ">h!éllo 😀"
    assert a.uncontained(state, a.take_local_changes()) != []
    assert not a.lacks(a.encode_state(), [])
    assert a.lacks(state, [])
    assert not a.lacks(state, missing)


def test_authors_are_found_in_v2_and_the_conversion_is_not_repeated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = pycrdt.Doc(client_id=4242)
    writer.get("text", type=pycrdt.Text).insert(0, "x")
    changes = [v1_to_v2(writer.get_update())]
    reader = _v2_adapter()
    import secsync.crdt.yjs as yjs

    calls: list[bytes] = []
    real = yjs.as_v1
    monkeypatch.setattr(yjs, "as_v1", lambda u, **kw: calls.append(u) or real(u, **kw))
    assert reader.authors_of(changes) == {4242}
    reader.apply_changes(changes)
    assert len(calls) == 1
    assert _text(reader) == "x"


def test_a_v2_document_reads_v1_and_the_empty_updates() -> None:
    writer = plain_yjs_doc()
    writer.get("text", type=pycrdt.Text).insert(0, "abc")
    before = writer.get_state()
    del writer.get("text", type=pycrdt.Text)[0:1]
    deletion_only = writer.get_update(before)  # v1 starting with 0: no structs
    assert deletion_only[0] == 0
    reader = _v2_adapter()
    reader.apply_changes([writer.get_update()])  # v1 detected
    reader.apply_changes([EMPTY_V1, EMPTY_V2, deletion_only, v1_to_v2(deletion_only)])
    assert _text(reader) == "bc"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"\x00\x05\x01", id="neither v2 nor v1"),
        pytest.param(EMPTY_V2[:-1], id="truncated v2"),
        pytest.param(b"\xff\xff\xff", id="garbage"),
    ],
)
def test_bad_content_is_the_typed_rejection_and_changes_nothing(bad: bytes) -> None:
    adapter = _v2_adapter("kept")
    before = adapter.doc.get_update()
    with pytest.raises(UpdateApplyError):
        adapter.apply_changes([bad])
    with pytest.raises(UpdateApplyError):
        adapter.authors_of([bad])
    with pytest.raises(SnapshotApplyError):
        adapter.apply_snapshot(bad)
    with pytest.raises(SnapshotApplyError):
        adapter.missing_from(bad)
    assert adapter.doc.get_update() == before


def test_the_default_stays_v1_and_refuses_v2() -> None:
    doc: pycrdt.Doc[Any] = plain_yjs_doc()
    adapter = adapter_for(doc)
    assert isinstance(adapter, YjsAdapter) and adapter.content_format == "v1"
    doc.get("text", type=pycrdt.Text).insert(0, "x")
    (change,) = adapter.take_local_changes()
    assert change[0] != 0 and adapter.encode_state() == doc.get_update()
    with pytest.raises(UpdateApplyError):
        YjsAdapter(plain_yjs_doc()).apply_changes([v1_to_v2(change)])
    with pytest.raises(ValueError, match="content_format"):
        YjsAdapter(plain_yjs_doc(), content_format="v3")  # type: ignore[arg-type]


def test_yjs_content_from_javascript_applies_through_the_adapter() -> None:
    cases = json.loads(gzip.decompress(FIXTURE.read_bytes()))["cases"]
    for case in cases[:40]:
        if case["hooks"]:
            continue
        by_state = _v2_adapter()
        by_state.apply_snapshot(bytes.fromhex(case["v2"]))
        by_updates = _v2_adapter()
        by_updates.apply_changes([bytes.fromhex(v2) for _, v2 in case["updates"]])
        vector = decode_state_vector(by_state.doc.get_state())
        assert decode_state_vector(by_updates.doc.get_state()) == vector
        again = _v2_adapter()
        again.apply_snapshot(by_state.encode_state())
        assert decode_state_vector(again.doc.get_state()) == vector


class _Peer:
    def __init__(self, broker: MemoryBroker, content_format: str) -> None:
        self.signer = crypto.SigningKeyPair.generate()
        self.doc = new_yjs_doc(self.signer)
        self.text = self.doc.get("text", type=pycrdt.Text)
        adapter = YjsAdapter(self.doc, content_format=content_format)  # type: ignore[arg-type]
        self.session = DocumentSession(DOC_ID, self.signer, KEY, adapter)
        self.p = Participant(self.session, broker)


def _contents(message: Snapshot | Update) -> list[bytes]:
    plain = sealing.open_sealed(message, KEY)
    return [plain] if isinstance(message, Snapshot) else deserialize_changes(plain)


def test_sessions_in_v2_converge_and_publish_v2() -> None:
    broker = MemoryBroker()
    a, b = _Peer(broker, "v2"), _Peer(broker, "v2")
    a.text.insert(0, "Hello")
    a.p.sync()
    b.p.sync()
    b.text.insert(5, " 🌍")
    b.p.sync()
    a.text.insert(0, ">")
    a.p.sync()
    b.p.sync()
    a.p.sync()
    assert str(a.text) == str(b.text) == ">Hello 🌍"
    assert len(broker.log) >= 3
    for message in broker.log:
        assert isinstance(message, Snapshot | Update)
        for content in _contents(message):
            decode_v2(content)  # v2, or this raises
    # a peer in v1 cannot read them: the typed rejection, not silence
    v1 = _Peer(broker, "v1")
    v1.p.pull()
    assert any(isinstance(e, MessageRejected) for e in v1.p.events)
    assert str(v1.text) == ""
