from automerge import core
from automerge import document as amdoc

from secsync.crdt import adapter_for
from secsync.crdt.automerge import AutomergeAdapter, changes_sync_message
from tests.factories import automerge_text, automerge_type


def test_changes_flow_and_out_of_order_delivery_converges() -> None:
    a_doc, b_doc = core.Document(), core.Document()
    a, b = adapter_for(a_doc), adapter_for(b_doc)
    assert isinstance(a, AutomergeAdapter)
    automerge_type(a_doc, 0, "ab")
    automerge_type(a_doc, 2, "cd")
    automerge_type(a_doc, 4, "ef")
    changes = a.take_local_changes()
    assert len(changes) == 3 and a.take_local_changes() == []
    b.apply_changes([changes[2]])  # held back by Automerge until its dependencies arrive
    assert automerge_text(b_doc) == ""
    b.apply_changes([changes[0], changes[1]])
    assert automerge_text(b_doc) == "abcdef"
    assert b.take_local_changes() == []


def test_local_change_made_before_a_remote_apply_is_kept() -> None:
    a_doc, b_doc = core.Document(), core.Document()
    a, b = adapter_for(a_doc), adapter_for(b_doc)
    automerge_type(a_doc, 0, "remote")
    b.apply_snapshot(a.encode_state())
    a.take_local_changes()
    found = b_doc.get(core.ROOT, "text")
    assert found is not None
    automerge_type(b_doc, 0, "L")  # local, not yet taken
    automerge_type(a_doc, 6, "!")
    b.apply_changes(a.take_local_changes())
    local = b.take_local_changes()
    assert len(local) == 1
    a.apply_changes(local)
    assert automerge_text(a_doc) == automerge_text(b_doc) == "Lremote!"


def test_wrapper_document_is_unwrapped_and_sync_message_layout() -> None:
    wrapped = amdoc.Document()
    adapter = adapter_for(wrapped)
    assert isinstance(adapter, AutomergeAdapter) and adapter.doc is wrapped._doc
    assert changes_sync_message([b"xy"]) == b"\x42\x00\x00\x00\x01\x02xy"
    assert changes_sync_message([b"a" * 200])[5:7] == b"\xc8\x01"  # LEB128 length


def test_missing_from_is_what_the_state_lacks() -> None:
    mine, theirs = core.Document(), core.Document()
    adapter = adapter_for(mine)
    automerge_type(theirs, 0, "theirs")
    adapter.apply_snapshot(theirs.save())
    automerge_type(mine, 0, ">")
    missing = adapter.missing_from(theirs.save())
    assert len(missing) == 1
    adapter_for(theirs).apply_changes(missing)
    assert automerge_text(theirs) == automerge_text(mine) == ">theirs"
    assert adapter.missing_from(mine.save()) == []
