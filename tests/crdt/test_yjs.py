import pycrdt
import pytest

from secsync.crdt import adapter_for
from secsync.crdt.yjs import YjsAdapter
from secsync.errors import CrdtAdapterError, UpdateApplyError
from tests.factories import plain_yjs_doc


def test_local_transactions_become_changes_remote_ones_do_not() -> None:
    a_doc: pycrdt.Doc = plain_yjs_doc()
    b_doc: pycrdt.Doc = plain_yjs_doc()
    a, b = adapter_for(a_doc), adapter_for(b_doc)
    assert isinstance(a, YjsAdapter)
    text = a_doc.get("t", type=pycrdt.Text)
    text.insert(0, "hi")
    with a_doc.transaction():
        text.insert(2, "!")
        text.insert(0, ">")
    changes = a.take_local_changes()
    assert len(changes) == 2 and a.take_local_changes() == []
    b.apply_changes(changes[::-1])  # Yjs updates commute
    assert str(b_doc.get("t", type=pycrdt.Text)) == ">hi!"
    assert b.take_local_changes() == []


def test_existing_content_is_a_local_change_and_snapshot_merges() -> None:
    doc: pycrdt.Doc = plain_yjs_doc()
    doc.get("t", type=pycrdt.Text).insert(0, "before open")
    adapter = adapter_for(doc)
    assert len(adapter.take_local_changes()) == 1
    other: pycrdt.Doc = plain_yjs_doc()
    other.get("t", type=pycrdt.Text).insert(0, "remote ")
    adapter.apply_snapshot(other.get_update())
    assert "remote" in str(doc.get("t", type=pycrdt.Text))
    assert adapter.take_local_changes() == []
    fresh: pycrdt.Doc = plain_yjs_doc()
    adapter_for(fresh).apply_snapshot(adapter.encode_state())
    assert str(fresh.get("t", type=pycrdt.Text)) == str(doc.get("t", type=pycrdt.Text))


def test_close_stops_observing() -> None:
    doc: pycrdt.Doc = plain_yjs_doc()
    adapter = adapter_for(doc)
    adapter.close()
    doc.get("t", type=pycrdt.Text).insert(0, "x")
    assert adapter.take_local_changes() == []


def test_bad_update_raises_and_unknown_documents_are_refused() -> None:
    adapter = adapter_for(plain_yjs_doc())
    with pytest.raises(UpdateApplyError):
        adapter.apply_changes([b"\xff\xff"])
    with pytest.raises(CrdtAdapterError):
        adapter_for(object())


def test_missing_from_is_what_the_state_lacks() -> None:
    mine: pycrdt.Doc = plain_yjs_doc()
    adapter = adapter_for(mine)
    mine.get("t", type=pycrdt.Text).insert(0, "mine")
    theirs: pycrdt.Doc = plain_yjs_doc()
    theirs.get("t", type=pycrdt.Text).insert(0, "theirs")
    adapter.apply_snapshot(theirs.get_update())
    (missing,) = adapter.missing_from(theirs.get_update())
    theirs.apply_update(missing)
    assert str(theirs.get("t", type=pycrdt.Text)) == str(mine.get("t", type=pycrdt.Text))
    assert adapter.missing_from(mine.get_update()) == []
