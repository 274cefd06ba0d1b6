"""Reading whose CRDT ids a change writes under: Yjs struct clients, Automerge change actors."""

from __future__ import annotations

import zlib

import pycrdt
import pytest
from automerge import core
from hypothesis import given, settings
from hypothesis import strategies as st

from secsync.crdt import adapter_for, yjs_format
from secsync.crdt.automerge import (
    CHUNK_COMPRESSED_CHANGE,
    MAGIC,
    AutomergeAdapter,
    change_actor,
)
from secsync.crdt.yjs import YjsAdapter, decode_state_vector, encode_state_vector
from secsync.crdt.yjs_format import YjsFormatError, check_update
from secsync.errors import UpdateApplyError
from tests.crdt.yjs_build import root_item, update, var_string, var_uint
from tests.factories import plain_yjs_doc


def two_writers() -> tuple[bytes, int, int]:
    a: pycrdt.Doc = pycrdt.Doc(client_id=11)
    b: pycrdt.Doc = pycrdt.Doc(client_id=2**52 + 5)
    a.get("t", type=pycrdt.Text).insert(0, "aaa")
    b.apply_update(a.get_update())
    text = b.get("t", type=pycrdt.Text)
    text.insert(1, "b")
    del text[0:1]  # b deletes one of a's characters: a delete set entry for client 11
    return b.get_update(), a.client_id, b.client_id


def test_the_summary_names_the_clients_whose_structs_an_update_carries() -> None:
    state, a, b = two_writers()
    assert sorted(check_update(state).client_ids) == sorted([a, b])
    only_b = pycrdt.Doc(client_id=b)
    only_b.apply_update(state)
    before = only_b.get_state()
    text = only_b.get("t", type=pycrdt.Text)
    del text[0:2]  # deletes only: no struct, the delete set names a and b
    deletes = only_b.get_update(before)
    assert check_update(deletes).client_ids == []
    assert check_update(deletes).delete_ranges >= 1


def test_sections_without_structs_and_gc_structs_are_counted_as_written() -> None:
    empty_section = var_uint(1) + var_uint(0) + var_uint(77) + var_uint(0) + b"\x00"
    assert check_update(empty_section).client_ids == []
    gc = update(bytes([yjs_format.GC]) + var_uint(3), client=99)
    assert check_update(gc).client_ids == [99]  # GC ranges claim the clock range too
    two = (
        var_uint(2)
        + var_uint(1)
        + var_uint(5)
        + var_uint(0)
        + root_item(yjs_format.STRING, var_string("x"))
        + var_uint(1)
        + var_uint(2**53 - 1)
        + var_uint(0)
        + root_item(yjs_format.STRING, var_string("y"))
        + b"\x00"
    )
    assert check_update(two).client_ids == [5, 2**53 - 1]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",  # a section declared, none there
        update(root_item(yjs_format.STRING, var_string("x")), client=2**53),  # beyond 53 bits
        update(root_item(yjs_format.STRING, var_string("x")))[:-3],  # truncated
        var_uint(2) + var_uint(1) + var_uint(5) + var_uint(0) + b"\x04",  # a lie
    ],
)
def test_malformed_updates_name_no_clients_they_are_refused(data: bytes) -> None:
    with pytest.raises(YjsFormatError):
        check_update(data)
    adapter = adapter_for(plain_yjs_doc())
    assert isinstance(adapter, YjsAdapter)
    with pytest.raises(UpdateApplyError):
        adapter.authors_of([data])


def test_authors_of_checks_once_for_the_apply_that_follows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, a, b = two_writers()
    doc: pycrdt.Doc = plain_yjs_doc()
    adapter = YjsAdapter(doc)
    calls = []
    real = yjs_format.check_updates

    def counting(updates: list[bytes], **options: bool) -> list[yjs_format.UpdateSummary]:
        calls.append(len(updates))
        return real(updates, **options)

    monkeypatch.setattr("secsync.crdt.yjs.check_updates", counting)
    changes = [state]
    assert adapter.authors_of(changes) == {a, b}
    adapter.apply_changes(changes)
    assert calls == [1]
    adapter.apply_changes([bytes(state)])  # other objects: checked again
    assert calls == [1, 1]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**53 - 1), unique=True, max_size=8), st.data())
def test_state_vectors_round_trip(clients: list[int], data: st.DataObject) -> None:
    vector = {c: data.draw(st.integers(0, 2**32 - 1)) for c in clients}
    assert decode_state_vector(encode_state_vector(vector)) == vector


# --- Automerge ------------------------------------------------------------------------------


def changes_of(actor: bytes, big: bool) -> list[core.Change]:
    doc = core.Document(actor)
    with doc.transaction() as tx:
        text = tx.put_object(core.ROOT, "text", core.ObjType.Text)
        tx.insert(text, 0, core.ScalarType.Str, "x" * (3000 if big else 3))
    return doc.get_changes([])


@pytest.mark.parametrize("big", [False, True])
def test_the_actor_of_a_change_is_read_from_its_header(big: bool) -> None:
    actor = bytes(range(28))
    (change,) = changes_of(actor, big)
    assert change_actor(change.bytes) == actor
    assert change_actor(change.raw_bytes) == actor
    if big:
        assert change.bytes[8] == CHUNK_COMPRESSED_CHANGE  # Automerge deflated it
    adapter = AutomergeAdapter(core.Document())
    assert adapter.authors_of([change.bytes]) == {actor}


def test_a_change_with_many_dependencies_still_names_its_actor() -> None:
    base = core.Document()
    for i in range(2500):  # concurrent branches: a header of 80 KB, beyond the first inflate
        fork = core.Document(i.to_bytes(16, "big"))
        with fork.transaction() as tx:
            tx.put(core.ROOT, f"k{i}", core.ScalarType.Int, i)
        base.merge(fork)
    base.set_actor(b"\xaa" * 16)
    with base.transaction() as tx:
        tx.put(core.ROOT, "k", core.ScalarType.Str, "x" * 5000)
    (mine,) = [c for c in base.get_changes([]) if c.actor_id == b"\xaa" * 16]
    assert len(mine.deps) == 2500 and mine.bytes[8] == CHUNK_COMPRESSED_CHANGE
    assert change_actor(mine.bytes) == b"\xaa" * 16


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:9],  # header cut
        lambda b: b"\x00" + b[1:],  # no magic
        lambda b: b[:8] + b"\x00" + b[9:],  # a document chunk
        lambda b: b[:9] + b"\xff\xff\xff\x0f" + b[10:],  # a length beyond the data
        lambda b: b[:12],  # body cut before the actor
    ],
)
def test_malformed_changes_are_refused(mutate: object) -> None:
    (change,) = changes_of(bytes(16), False)
    assert callable(mutate)
    data = mutate(change.raw_bytes)
    with pytest.raises(ValueError):
        change_actor(data)
    with pytest.raises(UpdateApplyError):
        AutomergeAdapter(core.Document()).authors_of([data])


def test_a_compressed_change_of_junk_is_refused() -> None:
    body = b"\x00garbage"
    junk = MAGIC + b"\x00" * 4 + bytes([CHUNK_COMPRESSED_CHANGE, len(body)]) + body
    with pytest.raises(ValueError):
        change_actor(junk)
    deflated = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = deflated.compress(b"\x00\x05ab") + deflated.flush()
    junk = MAGIC + b"\x00" * 4 + bytes([CHUNK_COMPRESSED_CHANGE, len(body)]) + body
    with pytest.raises(ValueError):
        change_actor(junk)  # actor of 5 bytes declared, 2 there


def test_a_bound_document_made_from_a_saved_state_takes_a_fresh_id() -> None:
    from secsync.crdt.yjs import new_yjs_doc
    from secsync.protocol import crdt_identity as ci
    from secsync.protocol.crypto import SigningKeyPair

    me = SigningKeyPair.generate()
    user = me.public_key
    # every suffix but one already wrote into the saved state
    saved: pycrdt.Doc = plain_yjs_doc()
    text = saved.get("t", type=pycrdt.Text)
    for suffix in range(4095):
        writer: pycrdt.Doc = pycrdt.Doc(client_id=ci.bound_yjs_id(user, suffix))
        writer.get("t", type=pycrdt.Text).insert(0, "x")
        saved.apply_update(writer.get_update())
    doc = new_yjs_doc(me, state=saved.get_update())
    assert doc.client_id == ci.bound_yjs_id(user, 4095)
    assert str(doc.get("t", type=pycrdt.Text)) == str(text)
    with pytest.raises(UpdateApplyError):
        new_yjs_doc(me, state=b"\x01")
