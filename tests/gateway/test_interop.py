"""Python and JS clients on one document through the gateway core: what Python clients store
natively reaches JS as secsync JSON, and what JS clients send is stored as native messages a
Python ``DocumentSession`` (secsync-json change encoding) accepts."""

from __future__ import annotations

import json

from secsync.config import SecsyncConfig
from secsync.protocol import sealing, wire
from secsync.protocol.encoding import b64decode
from secsync.protocol.events import SnapshotApplied, UpdateApplied
from secsync.protocol.messages import Snapshot, Update
from tests.factories import MemoryBroker, Participant, YPeer
from tests.gateway.helpers import DOC_ID, FIXTURES, KEY, Hub, text

JSON_CHANGES = SecsyncConfig(change_encoding="secsync-json")


def python_peer(broker: MemoryBroker) -> tuple[YPeer, Participant]:
    peer = YPeer(key=KEY, config=JSON_CHANGES, doc_id=DOC_ID)
    return peer, Participant(peer.session, broker)


def test_python_messages_reach_js_clients_as_secsync_json() -> None:
    broker = MemoryBroker(DOC_ID)
    peer, participant = python_peer(broker)
    peer.type(0, "from python")
    participant.sync()
    peer.type(0, "> ")
    participant.sync()
    assert [type(m) for m in broker.log] == [Snapshot, Update]
    hub = Hub(broker)
    c = hub.connect()
    (document,) = hub.sent[c]
    assert document["snapshot"] == wire.to_json_dict(broker.log[0])
    assert document["updates"] == [wire.to_json_dict(broker.log[1])]
    # what a JS client's deserializeChanges reads: a JSON array of base64url changes
    plaintext = sealing.open_message(wire.from_json_dict(document["updates"][0]), KEY)
    changes = json.loads(plaintext)
    assert isinstance(changes, list) and changes and all(b64decode(x) for x in changes)
    # live: the next Python update is broadcast to the JS connection
    peer.type(0, "!")
    participant.sync()
    hub.pull()
    assert hub.sent[c][-1] == {**wire.to_json_dict(broker.log[-1]), "type": "update"}


def test_js_messages_become_native_messages_a_python_session_accepts() -> None:
    broker = MemoryBroker(DOC_ID)
    hub = Hub(broker)
    c = hub.connect()
    for name in ("s1", "u1_a0", "u1_a1", "u1_b0"):
        hub.send(c, text(name))
    assert hub.types(c) == ["document", "snapshot-saved"] + ["update-saved"] * 3
    assert len(broker.messages) == 4
    assert b"additionalServerData" not in broker.messages[0].data
    peer, participant = python_peer(broker)
    participant.pull()
    assert [
        type(e) for e in participant.events if isinstance(e, SnapshotApplied | UpdateApplied)
    ] == [
        SnapshotApplied,
        UpdateApplied,
        UpdateApplied,
        UpdateApplied,
    ]
    assert peer.content == "hello from A, B"
    # the Python client builds on the JS history, and the JS connection is sent its update
    peer.type(len(peer.content), "!")
    participant.sync()
    assert len(broker.messages) == 5
    hub.pull()
    update = wire.decode(broker.messages[-1].data, doc_id=DOC_ID)
    assert isinstance(update, Update) and update.clock == 0
    assert hub.sent[c][-1] == {**wire.to_json_dict(update), "type": "update"}


def test_a_python_snapshot_on_js_history_chains_for_js_clients() -> None:
    broker = MemoryBroker(DOC_ID)
    hub = Hub(broker)
    c = hub.connect()
    for name in ("s1", "u1_a0", "u1_b0"):
        hub.send(c, text(name))
    peer, participant = python_peer(broker)
    participant.pull()
    peer.type(0, ">")
    peer.session.request_snapshot()
    participant.push()
    stored = wire.decode(broker.messages[-1].data, doc_id=DOC_ID)
    assert isinstance(stored, Snapshot)
    hub.pull()
    assert hub.view.active == stored
    assert hub.sent[c][-1] == {"type": "snapshot", "snapshot": wire.to_json_dict(stored)}
    # a JS client connecting now loads it
    later = hub.connect()
    assert hub.sent[later][0]["snapshot"] == wire.to_json_dict(stored)


def test_the_recorded_text_is_what_the_js_document_held() -> None:
    assert FIXTURES["text"].startswith("hello from A, B")
