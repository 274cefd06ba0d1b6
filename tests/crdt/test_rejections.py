"""Through a document session: hostile content from a member with the key is one rejected
message (the typed event), whatever the CRDT library raises, and the document is unchanged."""

from __future__ import annotations

from collections.abc import Sequence

import pycrdt
import pytest

from secsync.crdt.yjs import YjsAdapter
from secsync.errors import SnapshotApplyError, UpdateApplyError
from secsync.protocol import crypto
from secsync.protocol.events import MessageRejected, UpdateApplied
from secsync.protocol.session import DocumentSession
from tests.crdt.yjs_build import deep_any_update
from tests.factories import DOC_ID, KEY, make_snapshot, make_update, plain_yjs_doc, yjs_change


class Exploding(YjsAdapter):
    """A Yjs adapter whose library fails on the next apply with ``failure``."""

    def __init__(self, doc: pycrdt.Doc) -> None:
        super().__init__(doc)
        self.failure: BaseException | None = None

    def apply_changes(self, changes: Sequence[bytes]) -> None:
        if self.failure is not None:
            raise self.failure
        super().apply_changes(changes)


def _reader(adapter: object) -> DocumentSession:
    return DocumentSession(DOC_ID, crypto.SigningKeyPair.generate(), KEY, adapter)


def _rejections(events: list[object]) -> list[int]:
    return [e.error.code for e in events if isinstance(e, MessageRejected)]


def test_poison_update_and_snapshot_are_rejected_and_honest_ones_follow() -> None:
    member, other = crypto.SigningKeyPair.generate(), crypto.SigningKeyPair.generate()
    base, _ = yjs_change("base")
    root = make_snapshot(member, base)
    doc: pycrdt.Doc = plain_yjs_doc()
    reader = _reader(doc)
    reader.receive(root, now=0.0)
    before = doc.get_state()
    poison = make_update(member, root, 0, [deep_any_update(28_000)])
    honest, _ = yjs_change("!", at=4, base=base)
    events = reader.receive_many([poison, make_update(other, root, 0, [honest])], now=0.0)
    assert _rejections(events) == [UpdateApplyError.code]
    assert any(isinstance(e, UpdateApplied) and e.author == other.public_key for e in events)
    assert str(doc.get("text", type=pycrdt.Text)) == "base!"
    # the poison spends its author's clock (signed for it): the author's next update follows
    assert reader.update_clocks == {member.public_key: 0, other.public_key: 0}
    assert before != doc.get_state()

    state = doc.get_state()
    clocks = {other.public_key: 0}
    bad_snapshot = make_snapshot(member, deep_any_update(28_000), parent=root, clocks=clocks)
    events = reader.receive(bad_snapshot, now=0.0)
    assert _rejections(events) == [SnapshotApplyError.code]
    assert doc.get_state() == state
    more, _ = yjs_change("?", at=5, base=doc.get_update())
    events = reader.receive(make_update(other, root, 1, [more]), now=0.0)
    assert _rejections(events) == [] and str(doc.get("text", type=pycrdt.Text)) == "base!?"


def _exploding_reader(
    failure: BaseException,
) -> tuple[DocumentSession, Exploding, list[object]]:
    member = crypto.SigningKeyPair.generate()
    base, _ = yjs_change("base")
    root = make_snapshot(member, base)
    adapter = Exploding(plain_yjs_doc())
    reader = _reader(adapter)
    reader.receive(root, now=0.0)
    change, _ = yjs_change("!", at=4, base=base)
    adapter.failure = failure
    return reader, adapter, [make_update(member, root, 0, [change])]


def test_a_library_panic_is_a_rejection_of_that_message() -> None:
    panic = type("PanicException", (BaseException,), {})
    reader, adapter, (update,) = _exploding_reader(panic("called `Option::unwrap()` on None"))
    before = adapter.doc.get_state()
    events = reader.receive(update, now=0.0)
    assert _rejections(events) == [UpdateApplyError.code]
    rejected = next(e for e in events if isinstance(e, MessageRejected))
    assert "PanicException" in rejected.error.message
    assert adapter.doc.get_state() == before


@pytest.mark.parametrize("control", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_control_flow_propagates(control: type[BaseException]) -> None:
    reader, _, (update,) = _exploding_reader(control())
    with pytest.raises(control):
        reader.receive(update, now=0.0)


def test_cancellation_propagates() -> None:
    import asyncio

    reader, _, (update,) = _exploding_reader(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        reader.receive(update, now=0.0)
