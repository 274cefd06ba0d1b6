"""The saved session state: typed, versioned, strict, and readable from earlier releases."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import pycrdt
import pytest

from secsync.errors import LocalStoreError, SessionError, SessionStateError
from secsync.protocol import crypto, wire
from secsync.protocol.session import DocumentSession
from secsync.protocol.state import STATE_VERSION, SessionState
from secsync.store import LocalState, LocalStore
from tests.factories import DOC_ID, YPeer, plain_yjs_doc

# Written by the release before the typed state (a session with an active snapshot, another
# author's update applied, confirmed, in-flight and pending changes; then one with a snapshot
# in flight on top of a superseded one): what its local stores hold.
FIXTURE = Path(__file__).parent / "fixtures" / "session_state_v1.msgpack"


def fixture() -> dict[str, Any]:
    data: dict[str, Any] = msgpack.unpackb(FIXTURE.read_bytes(), raw=False, strict_map_key=False)
    return data


def restored(saved: dict[str, Any], state: object) -> tuple[DocumentSession, pycrdt.Text]:
    doc: pycrdt.Doc = plain_yjs_doc()
    text = doc.get("text", type=pycrdt.Text)
    signer = crypto.SigningKeyPair.from_secret(fixture()["secret"])
    session = DocumentSession(DOC_ID, signer, fixture()["key"], doc)
    session.crdt.apply_snapshot(saved["crdt"])  # as the transport restores the content
    session.restore_state(state)  # type: ignore[arg-type]
    return session, text


def plain(value: object) -> object:
    """As msgpack gives it back (tuples become lists)."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False, strict_map_key=False)


@pytest.mark.parametrize("index", [0, 1])
def test_a_state_written_by_the_earlier_release_loads_and_encodes_the_same(index: int) -> None:
    saved = fixture()["states"][index]
    old = saved["session"]
    state = SessionState.decode(old)
    session, text = restored(saved, old)
    assert str(text) == saved["text"]
    assert session.active_snapshot is not None
    assert session.active_snapshot.snapshot_id == old["active"]["id"]
    assert session.update_clocks == old["active"]["clocks"]
    sent = [wire.encode(m) for m in session.unacknowledged_messages()]
    if old["snapshot_in_flight"] is not None:
        assert sent == [old["snapshot_in_flight"][0]]
    else:
        assert sent == [data for _, data, _ in old["in_flight"]]
    # nothing is lost or changed on the way: the state saved again is the one read
    assert plain(session.export_state().encode()) == old
    assert plain(state.encode()) == old
    # and the typed value restores the same session as the plain data did
    again, _ = restored(saved, state)
    assert again.export_state() == session.export_state()


def test_the_typed_state_is_frozen_and_versioned() -> None:
    saved = fixture()["states"][0]
    state = SessionState.decode(saved["session"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.local_clock = 5  # type: ignore[misc]
    assert state.encode()["v"] == STATE_VERSION == 1
    assert SessionState.decode(state) is state


def broken(change: dict[str, Any]) -> dict[str, Any]:
    state = dict(fixture()["states"][0]["session"])
    state.update(change)
    return {k: v for k, v in state.items() if v is not ...}


@pytest.mark.parametrize(
    "data",
    [
        None,
        b"not a state",
        [1, 2, 3],
        {},
        broken({"v": 2}),
        broken({"v": ...}),
        broken({"colour": "blue"}),
        broken({"active": ...}),
        broken({"local_clock": "3"}),
        broken({"local_clock": -2}),
        broken({"loaded": 1}),
        broken({"pending": [b"ok", "not bytes"]}),
        broken({"in_flight": [[0, b"\x93garbage", []]]}),
        broken({"in_flight": [[0, b"", []]]}),
        broken({"confirmed": [[0]]}),
        broken({"active": {"id": b"x"}}),
        broken({"superseded": [[b"s", {b"a": "1"}]]}),
        broken({"digests": [[b"a", 1]]}),
        broken({"identity_in_use": 805}),
    ],
)
def test_a_damaged_or_foreign_state_raises_a_typed_error(data: object) -> None:
    with pytest.raises(SessionStateError):
        SessionState.decode(data)
    peer = YPeer()
    with pytest.raises(SessionStateError):
        peer.session.restore_state(data)  # type: ignore[arg-type]
    assert issubclass(SessionStateError, LocalStoreError)
    assert issubclass(SessionStateError, SessionError)


def test_an_in_flight_update_saved_under_another_clock_is_refused() -> None:
    state = fixture()["states"][0]["session"]
    clock, data, changes = state["in_flight"][0]
    with pytest.raises(SessionStateError):
        SessionState.decode({**state, "in_flight": [[clock + 1, data, changes]]})


def test_the_store_round_trips_the_typed_state_and_refuses_a_foreign_one(tmp_path: Path) -> None:
    key = crypto.generate_key()
    state = SessionState.decode(fixture()["states"][1]["session"])
    store = LocalStore(tmp_path / "s.db")
    store.save("t", key, LocalState(b"crdt", state, 3))
    loaded = store.load("t", key)
    assert loaded is not None and loaded.session == state
    foreign = dataclasses.replace(state, identity_in_use=None)
    object.__setattr__(foreign, "identity_in_use", 7)  # what a foreign writer might store
    with pytest.raises(SessionStateError):
        store.save("u", key, LocalState(b"crdt", foreign, 3))
        store.load("u", key)
    store.close()
