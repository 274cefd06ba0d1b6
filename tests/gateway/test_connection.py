"""One JS connection's decisions: the document frame, frames in, publishes, acks, access."""

from __future__ import annotations

import json
from typing import Any

from secsync.gateway import GatewayConnection, Publish, Send, Stored
from secsync.gateway.connection import Access, AskAccess, Close, Ignored
from secsync.protocol import wire
from secsync.protocol.encoding import b64encode
from secsync.protocol.messages import ProofChainEntry, Snapshot, Update
from secsync.protocol.stream_types import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    MSG_ID,
    snapshot_msg_id,
    update_msg_id,
)
from tests.gateway.helpers import DOC_ID, KEY, SUBJECTS, A, Hub, frame, message, params, store, text

ALL = ("s1", "u1_a0", "u1_a1", "u1_b0", "s2", "u2_a0", "u2_b0", "u2_a1")


def stored_frame(name: str) -> dict[str, Any]:
    """A recorded frame as any server sends it back: without ``additionalServerData``."""
    f = frame(name)
    f.pop("additionalServerData", None)
    return f


def hub_with(*names: str) -> Hub:
    hub = Hub()
    store(hub.stream, *names)
    hub.pull()
    return hub


def chain_entry(name: str) -> dict[str, str]:
    m = message(name)
    assert isinstance(m, Snapshot)
    e = ProofChainEntry.of(m)
    return {
        "snapshotId": b64encode(e.snapshot_id),
        "parentSnapshotProof": b64encode(e.parent_snapshot_proof),
        "snapshotCiphertextHash": b64encode(e.snapshot_ciphertext_hash),
    }


def sid(name: str) -> bytes:
    m = message(name)
    assert isinstance(m, Snapshot)
    return m.snapshot_id


# --- the document frame -------------------------------------------------------------------


def test_a_new_document_and_the_read_check() -> None:
    hub = Hub()
    c = hub.connect(params(key="the-key"))
    assert hub.sent[c] == [{"type": "document", "updates": [], "snapshotProofChain": []}]
    ask = hub.asked[0]
    assert (ask.action, ask.document_id, ask.session_key.reveal(), ask.public_key) == (
        "read",
        DOC_ID,
        "the-key",
        None,
    )


def test_no_read_access_is_unauthorized_and_closes() -> None:
    hub = hub_with(*ALL)
    hub.deny = {"read"}
    c = hub.connect()
    assert hub.sent[c] == [{"type": "unauthorized"}] and c in hub.closed


def test_complete_mode_serves_the_active_snapshot_and_all_its_updates() -> None:
    hub = hub_with(*ALL)
    c = hub.connect()
    assert hub.sent[c] == [
        {
            "type": "document",
            "snapshot": stored_frame("s2"),
            "updates": [stored_frame(n) for n in ("u2_a0", "u2_b0", "u2_a1")],
            "snapshotProofChain": [],
        }
    ]


def test_delta_mode_with_the_known_snapshot_active_serves_the_updates_after_its_clocks() -> None:
    hub = hub_with(*ALL)
    c = hub.connect(params("delta", sid("s2"), {A: 0}))
    assert hub.sent[c] == [
        {"type": "document", "updates": [stored_frame("u2_b0"), stored_frame("u2_a1")]},
        # sets the client's own clock, which a delta reload leaves at -1, before it writes
        {
            "type": "update-save-failed",
            "snapshotId": b64encode(sid("s2")),
            "requiresNewSnapshot": False,
        },
    ]
    # complete mode, same known position: the snapshot too, and the same updates
    d = hub.connect(params("complete", sid("s2"), {A: 0}))
    assert hub.sent[d][0]["snapshot"] == stored_frame("s2")
    assert hub.sent[d][0]["updates"] == [stored_frame("u2_b0"), stored_frame("u2_a1")]


def test_an_older_known_snapshot_gets_the_proof_chain_from_after_it() -> None:
    hub = hub_with(*ALL, "s3", "u3_b0")
    c = hub.connect(params("delta", sid("s1"), {A: 1}))
    document = hub.sent[c][0]
    assert document["snapshot"] == stored_frame("s3")
    assert document["updates"] == [stored_frame("u3_b0")]
    assert document["snapshotProofChain"] == [chain_entry("s2"), chain_entry("s3")]
    # the chain a JS client checks: its first link is the known snapshot's child
    s1 = message("s1")
    assert isinstance(s1, Snapshot)
    assert document["snapshotProofChain"][0]["parentSnapshotProof"] == b64encode(
        s1.info().child_proof()
    )
    unknown = hub.connect(params("delta", b"\1" * 24, {A: 1}))
    assert hub.sent[unknown][0]["snapshotProofChain"] == []


# --- frames in: publishing ------------------------------------------------------------------


def test_a_first_snapshot_is_published_natively_with_the_python_preconditions() -> None:
    hub = Hub()
    c = hub.connect()
    other = hub.connect()
    outputs = hub.connections[c].receive(text("s1"))
    (ask,) = outputs
    assert isinstance(ask, AskAccess) and ask.action == "write-snapshot" and ask.public_key == A
    (publish,) = hub.connections[c].answer(ask, Access.GRANTED)
    assert isinstance(publish, Publish)
    s1 = message("s1")
    assert publish.subject == SUBJECTS.snapshot
    assert publish.payload == wire.encode(s1, include_doc_id=False)
    assert publish.headers == {
        MSG_ID: snapshot_msg_id(sid("s1")),
        EXPECTED_LAST_SUBJECT_SEQ: "0",
        EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: SUBJECTS.stored,
    }
    hub.run(c, [publish])
    assert hub.sent[c][1:] == [{"type": "snapshot-saved", "snapshotId": b64encode(sid("s1"))}]
    assert hub.sent[other][1:] == [{"type": "snapshot", "snapshot": stored_frame("s1")}]


def test_updates_sent_before_their_acks_are_published_and_acked_in_order() -> None:
    hub = hub_with("s1")
    c, other = hub.connect(), hub.connect()
    connection = hub.connections[c]
    publishes = []
    for name in ("u1_a0", "u1_a1"):
        (ask,) = connection.receive(text(name))
        (publish,) = connection.answer(ask, True)
        assert isinstance(publish, Publish)
        publishes.append(publish)
    u = message("u1_a1")
    assert isinstance(u, Update)
    assert publishes[1].subject == SUBJECTS.update
    assert publishes[1].headers == {
        MSG_ID: update_msg_id(u),
        EXPECTED_LAST_SUBJECT_SEQ: "1",
        EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: SUBJECTS.snapshot,
    }
    for publish in publishes:
        hub.run(c, [publish])
    snapshot_id = b64encode(sid("s1"))
    assert hub.sent[c][1:] == [
        {"type": "update-saved", "snapshotId": snapshot_id, "clock": 0},
        {"type": "update-saved", "snapshotId": snapshot_id, "clock": 1},
    ]
    assert hub.sent[other][1:] == [
        {**stored_frame("u1_a0"), "type": "update"},
        {**stored_frame("u1_a1"), "type": "update"},
    ]


def test_the_ack_waits_for_the_view_so_a_broadcast_before_it_comes_first() -> None:
    hub = hub_with("s1")
    c = hub.connect()
    connection = hub.connections[c]
    (ask,) = connection.receive(text("u1_a0"))
    (publish,) = connection.answer(ask, True)
    assert isinstance(publish, Publish)
    store(hub.stream, "u1_b0")  # stored by someone else first
    hub.stream.put(publish.subject, publish.payload, publish.headers)
    assert connection.outcome(publish, Stored(3)) == []
    assert hub.types(c) == ["document"]
    hub.pull()
    assert hub.types(c) == ["document", "update", "update-saved"]


# --- frames in: refusals --------------------------------------------------------------------


def sent_after(hub: Hub, c: int, raw: str) -> list[dict[str, Any]]:
    before = len(hub.sent[c])
    hub.send(c, raw)
    return hub.sent[c][before:]


def forged_text(name: str) -> str:
    f = frame(name)
    f["ciphertext"] = ("B" if f["ciphertext"][0] != "B" else "C") + f["ciphertext"][1:]
    return json.dumps(f)


def test_update_refusals_ask_for_a_snapshot_never_a_resend() -> None:
    # A resend (requiresNewSnapshot false) would make the JS client reuse clocks of updates
    # still on their way, and lose changes when their acks come back (see _refusal).
    hub = hub_with("s1", "u1_a0")
    c = hub.connect()
    ref = b64encode(sid("s1"))

    def failed(clock: int, ref: str = ref) -> list[dict[str, Any]]:
        return [
            {
                "type": "update-save-failed",
                "snapshotId": ref,
                "clock": clock,
                "requiresNewSnapshot": True,
            }
        ]

    assert sent_after(hub, c, text("u1_a0")) == failed(0)  # stale clock 0 (a delta reconnect)
    # until the client sends the snapshot asked for, which holds them, later refusals are
    # silent: each failure frame would make it write one more snapshot
    assert sent_after(hub, c, forged_text("u1_a1")) == []
    for raw, expected in [
        (forged_text("u1_a1"), failed(1)),  # bad signature
        (text("u1_a0_other_doc"), failed(0)),  # another document
        (text("u2_a0"), failed(0, b64encode(sid("s2")))),  # not on the active snapshot
    ]:
        assert sent_after(hub, hub.connect(), raw) == expected
    hub2 = hub_with("s1")
    d = hub2.connect()
    assert sent_after(hub2, d, text("u1_a1")) == failed(1)  # a gap
    assert len(hub.stream.messages) == 2 and len(hub2.stream.messages) == 1


def test_snapshot_refusals_in_the_three_shapes() -> None:
    hub = hub_with("s1", "u1_a0", "u1_a1", "u1_b0")
    c = hub.connect()
    # misses B's update: what it lacks and was not sent (its document held B's update)
    assert sent_after(hub, c, text("s2_misses_b")) == [
        {"type": "snapshot-save-failed", "updates": []}
    ]

    # a wrong proof, a bad signature, an unknown shape: the bare failure
    assert sent_after(hub, c, text("s2_wrong_proof")) == [{"type": "snapshot-save-failed"}]
    assert sent_after(hub, c, forged_text("s2")) == [{"type": "snapshot-save-failed"}]
    shapeless = json.dumps({"publicData": {"snapshotId": "x"}, "nonce": 1})
    assert sent_after(hub, c, shapeless) == [{"type": "snapshot-save-failed"}]
    # a snapshot on an outdated parent: the client has been sent the active snapshot (every
    # release is queued to it before this answer), so only the updates it lacks on it
    store(hub.stream, "s2", "u2_a0", "u2_b0", "u2_a1", "s3")
    hub.pull()
    before = len(hub.sent[c])
    assert sent_after(hub, c, text("s2")) == [{"type": "snapshot-save-failed", "updates": []}]
    assert before > 1 and len(hub.stream.messages) == 9


def test_a_non_initial_snapshot_on_an_empty_document_is_refused() -> None:
    hub = Hub()
    c = hub.connect()
    assert sent_after(hub, c, text("s2")) == [{"type": "snapshot-save-failed"}]
    assert hub.stream.messages == []


def test_oversized_and_shapeless_frames() -> None:
    hub = hub_with("s1")
    view = hub.view
    connection = GatewayConnection(params(), view, ephemeral_subject="e", max_frame_bytes=100)
    assert connection.receive("{}") == [Ignored("connection not open")]
    (ask,) = connection.open()
    connection.answer(ask, True)
    out = connection.receive(text("s1"))
    assert out[0] == Send({"type": "document-error"}) and isinstance(out[1], Close)
    c = hub.connect()
    assert sent_after(hub, c, "not json") == []
    assert sent_after(hub, c, "[1, 2]") == []
    assert sent_after(hub, c, json.dumps({"publicData": {"refSnapshotId": "r", "clock": 3}})) == [
        {"type": "update-save-failed", "snapshotId": "r", "clock": 3, "requiresNewSnapshot": True}
    ]
    assert sent_after(hub, c, json.dumps({"publicData": {}})) == []  # ephemeral-shaped junk
    assert len(hub.stream.messages) == 1


def test_publish_failures_answer_the_failure_frames() -> None:
    hub = hub_with("s1", "u1_a0", "u1_a1", "u1_b0")
    c = hub.connect()
    hub.fail_next = "conflict"
    assert sent_after(hub, c, text("s2")) == [{"type": "snapshot-save-failed"}]
    hub2 = hub_with("s1")
    d = hub2.connect()
    hub2.fail_next = "failed"
    assert sent_after(hub2, d, text("u1_a0"))[-1]["type"] == "update-save-failed"
    # the client re-sends the same clock: accepted this time
    assert sent_after(hub2, d, text("u1_a0"))[-1]["type"] == "update-saved"


def test_a_compare_and_set_conflict_on_the_real_preconditions() -> None:
    hub = hub_with("s1")
    c = hub.connect()
    connection = hub.connections[c]
    (ask,) = connection.receive(text("u1_a0"))
    (publish,) = connection.answer(ask, True)
    assert isinstance(publish, Publish)
    store(hub.stream, "s2_wrong_proof")  # a snapshot message lands on the subject first
    before = len(hub.sent[c])
    hub.run(c, [publish])
    assert hub.sent[c][before:] == [
        {
            "type": "update-save-failed",
            "snapshotId": b64encode(sid("s1")),
            "clock": 0,
            "requiresNewSnapshot": True,
        }
    ]


def test_refused_updates_are_acknowledged_once_a_later_snapshot_of_theirs_is_stored() -> None:
    hub = hub_with("s1", "u1_a0", "u1_a1", "u1_b0")
    c = hub.connect()
    ref = b64encode(sid("s1"))
    refused = sent_after(hub, c, text("u1_a0"))  # a replay: refused, a snapshot asked for
    assert refused[-1]["requiresNewSnapshot"] is True
    # the snapshot the client writes then holds the refused changes: once it is stored, the
    # refused update is acknowledged after snapshot-saved (the client stops counting it)
    assert sent_after(hub, c, text("s2")) == [
        {"type": "snapshot-saved", "snapshotId": b64encode(sid("s2"))},
        {"type": "update-saved", "snapshotId": ref, "clock": 0},
    ]
    # a refusal after the snapshot waits for the next one
    assert sent_after(hub, c, text("u2_b1_late"))[-1]["type"] == "update-save-failed"
    assert hub.connections[c]._refused != []


def test_write_access_refused_and_a_new_snapshot_required() -> None:
    hub = hub_with("s1")
    c = hub.connect()
    hub.new_snapshot_required = True
    assert sent_after(hub, c, text("u1_a0")) == [
        {
            "type": "update-save-failed",
            "snapshotId": b64encode(sid("s1")),
            "clock": 0,
            "requiresNewSnapshot": True,
        }
    ]
    hub.deny = {"write-update"}
    assert sent_after(hub, c, text("u1_a0")) == [{"type": "unauthorized"}]
    assert c in hub.closed and hub.stream.count(SUBJECTS.update) == 0
    assert [a.action for a in hub.asked] == ["read", "write-update", "write-update"]
    assert hub.asked[-1].public_key == A


def test_a_refused_broadcast_is_unauthorized() -> None:
    hub = hub_with("s1")
    c = hub.connect()
    hub.deny = {"broadcast"}
    store(hub.stream, "u1_a0")
    hub.pull()
    assert hub.types(c) == ["document", "unauthorized"] and c in hub.closed


def test_ephemeral_messages_go_to_core_nats_and_to_the_others() -> None:
    hub = hub_with("s1")
    c, other = hub.connect(), hub.connect()
    (ask,) = hub.connections[c].receive(text("eph_initialize"))
    assert isinstance(ask, AskAccess) and ask.action == "send-ephemeral-message"
    (publish,) = hub.connections[c].answer(ask, True)
    assert isinstance(publish, Publish)
    assert publish.subject == SUBJECTS.ephemeral and publish.headers == {}
    hub.run(c, [publish])
    received = wire.decode(publish.payload, doc_id=DOC_ID)
    assert hub.connections[c].ephemeral(received) == []  # our own, back from the broker
    hub.run(other, hub.connections[other].ephemeral(received))
    assert hub.sent[other][-1] == {**stored_frame("eph_initialize"), "type": "ephemeral-message"}
    (ask,) = hub.connections[c].receive(forged_text("eph_message"))
    assert isinstance(ask, AskAccess)
    assert hub.connections[c].answer(ask, True) == [Ignored("ephemeral signature invalid")]


def test_a_stored_update_the_view_drops_gets_the_failure_frame_not_the_ack() -> None:
    """Two connections of one author race for clock 0 with different updates: both pass the
    preconditions (an update's covers only its snapshot); the view takes the first."""
    from secsync.protocol.crypto import SigningKeyPair
    from tests.factories import make_update

    signer = SigningKeyPair.from_secret(bytes([1]) * 32)
    assert signer.public_key == A
    s1 = message("s1")
    assert isinstance(s1, Snapshot)
    rival = make_update(signer, s1, 0, [b"\0"], key=KEY, doc_id=DOC_ID)
    hub = hub_with("s1")
    c, d = hub.connect(), hub.connect()
    publishes = []
    for index, raw in ((c, text("u1_a0")), (d, json.dumps(wire.to_json_dict(rival)))):
        (ask,) = hub.connections[index].receive(raw)
        (publish,) = hub.connections[index].answer(ask, True)
        assert isinstance(publish, Publish)
        publishes.append((index, publish))
    for index, publish in publishes:
        hub.stream.put(publish.subject, publish.payload, publish.headers)
        assert hub.connections[index].outcome(publish, Stored(len(hub.stream.messages))) == []
    hub.pull()
    ref = b64encode(s1.snapshot_id)
    assert hub.sent[c][1:] == [{"type": "update-saved", "snapshotId": ref, "clock": 0}]
    assert hub.sent[d][1:] == [
        {**stored_frame("u1_a0"), "type": "update"},
        {"type": "update-save-failed", "snapshotId": ref, "clock": 0, "requiresNewSnapshot": True},
    ]


def test_a_bad_url_and_a_missing_document_end_the_connection() -> None:
    from secsync.gateway import BadConnection, parse_connection, refuse

    bad = parse_connection("/doc")
    assert isinstance(bad, BadConnection)
    assert refuse(bad) == [Send({"type": "document-error"}), Close("no session key")]
    hub = Hub()
    c = hub.connect()
    assert hub.connections[c].not_found() == [
        Send({"type": "document-not-found"}),
        Close("document not found"),
    ]
    assert hub.connections[c].receive(text("s1")) == [Ignored("connection not open")]
