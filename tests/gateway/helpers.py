"""The recorded JS frames, and a pump over an in-memory stream that drives the gateway core
the way the ASGI app will: publish what it asks, feed the view what the stream stores."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secsync.errors import WrongLastSequenceError
from secsync.gateway import (
    Access,
    AskAccess,
    CasConflict,
    Close,
    ConnectionParams,
    DocumentView,
    GatewayConnection,
    Output,
    Publish,
    PublishFailed,
    Send,
    SessionKey,
    Stored,
)
from secsync.protocol import wire
from secsync.protocol.encoding import b64decode
from secsync.protocol.messages import Message, Snapshot, Update, child_proof
from secsync.transport.subjects import DocumentSubjects
from tests.factories import MemoryStream

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "js_frames.json").read_text("utf-8"))
DOC_ID: str = FIXTURES["docId"]
KEY = bytes.fromhex(FIXTURES["documentKeyHex"])
A = b64decode(FIXTURES["authors"]["A"])
B = b64decode(FIXTURES["authors"]["B"])
SUBJECTS = DocumentSubjects.of(DOC_ID)


def frame(name: str) -> dict[str, Any]:
    """A recorded client frame (a fresh copy)."""
    copied: dict[str, Any] = json.loads(json.dumps(FIXTURES["frames"][name]))
    return copied


def message(name: str) -> Message:
    return wire.from_json_dict(frame(name))


def text(name: str) -> str:
    return json.dumps(frame(name))


def store(stream: MemoryStream, *names_or_messages: str | Message) -> None:
    """Store messages natively, as a Python client does (no preconditions)."""
    for item in names_or_messages:
        m = message(item) if isinstance(item, str) else item
        subject = SUBJECTS.snapshot if isinstance(m, Snapshot) else SUBJECTS.update
        assert isinstance(m, Snapshot | Update)
        stream.put(subject, wire.encode(m, include_doc_id=False), {})


def params(
    mode: str = "complete",
    known: bytes | None = None,
    clocks: Mapping[bytes, int] | None = None,
    key: str = "k",
) -> ConnectionParams:
    return ConnectionParams(
        DOC_ID, SessionKey(key), "delta" if mode == "delta" else "complete", known, clocks
    )


class Hub:
    """A document's view over a :class:`MemoryStream`, with JS connections on it; access is
    granted unless ``deny`` names the action."""

    def __init__(self, stream: MemoryStream | None = None) -> None:
        self.stream = stream or MemoryStream()
        self.view = DocumentView(DOC_ID, SUBJECTS)
        self.connections: list[GatewayConnection] = []
        self.sent: dict[int, list[dict[str, Any]]] = {}
        self.closed: dict[int, str] = {}
        self.deny: set[str] = set()
        self.new_snapshot_required = False
        self.asked: list[AskAccess] = []
        self.fail_next: str | None = None  # "conflict" or "failed"
        self.pull()

    def pull(self) -> None:
        new = self.stream.read(SUBJECTS.stored, self.view.last_sequence + 1)
        events = self.view.feed(new)
        for index, connection in enumerate(self.connections):
            self.run(index, connection.released(events))

    def connect(self, p: ConnectionParams | None = None) -> int:
        connection = GatewayConnection(
            p or params(), self.view, ephemeral_subject=SUBJECTS.ephemeral
        )
        self.connections.append(connection)
        index = len(self.connections) - 1
        self.sent[index] = []
        self.run(index, connection.open())
        return index

    def send(self, index: int, raw: str) -> None:
        self.run(index, self.connections[index].receive(raw))

    def run(self, index: int, outputs: list[Output]) -> None:
        connection = self.connections[index]
        pending = list(outputs)
        while pending:
            item = pending.pop(0)
            if isinstance(item, Send):
                self.sent[index].append(json.loads(item.text()))
            elif isinstance(item, Close):
                self.closed[index] = item.reason
            elif isinstance(item, AskAccess):
                self.asked.append(item)
                if item.action in self.deny:
                    answer = Access.DENIED
                elif item.action == "write-update" and self.new_snapshot_required:
                    answer = Access.NEW_SNAPSHOT_REQUIRED
                else:
                    answer = Access.GRANTED
                pending[:0] = connection.answer(item, answer)
            elif isinstance(item, Publish):
                pending[:0] = connection.outcome(item, self.publish(item))
                self.pull()

    def publish(self, item: Publish) -> Stored | CasConflict | PublishFailed:
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            return CasConflict() if failure == "conflict" else PublishFailed("broker down")
        if not item.headers:
            return Stored(0)  # ephemeral: core NATS
        outcome = self.stream.put(item.subject, item.payload, item.headers)
        if isinstance(outcome, WrongLastSequenceError):
            return CasConflict()
        assert isinstance(outcome, tuple)
        return Stored(outcome[1])

    def types(self, index: int) -> list[str]:
        return [f["type"] for f in self.sent[index]]


class JsClientError(AssertionError):
    """What a secsync JS client would fail with (its error code)."""


class JsClientModel:
    """The checks a secsync JS client makes on the frames it is sent, the fatal ones included:
    clock replay (214) and gap (202) per author, the update's snapshot (213), the direct parent
    check (112) and the proof chain (115). Fed the frames one connection was sent."""

    def __init__(self) -> None:
        self.active: Snapshot | None = None
        self.clocks: dict[bytes, int] = {}

    def _snapshot(self, obj: dict[str, Any], chain: list[dict[str, str]]) -> None:
        snapshot = wire.from_json_dict(obj)
        assert isinstance(snapshot, Snapshot)
        if self.active is not None and snapshot.snapshot_id == self.active.snapshot_id:
            return  # already known: skipped
        if self.active is not None and chain:
            proof = self.active.info().child_proof()
            for entry in chain:
                if b64decode(entry["parentSnapshotProof"]) != proof:
                    raise JsClientError("115")
                proof = child_proof(
                    b64decode(entry["parentSnapshotProof"]),
                    b64decode(entry["snapshotCiphertextHash"]),
                    b64decode(entry["snapshotId"]),
                )
            if chain[-1]["snapshotId"] != obj["publicData"]["snapshotId"]:
                raise JsClientError("115")
        elif self.active is not None and (
            snapshot.public_data.parent_snapshot_id != self.active.snapshot_id
            or snapshot.public_data.parent_snapshot_proof != self.active.info().child_proof()
        ):
            raise JsClientError("112")
        self.active, self.clocks = snapshot, {}

    def _update(self, obj: dict[str, Any]) -> None:
        update = wire.from_json_dict({k: v for k, v in obj.items() if k != "type"})
        assert isinstance(update, Update)
        if self.active is None or update.public_data.ref_snapshot_id != self.active.snapshot_id:
            raise JsClientError("213")
        current = self.clocks.get(update.author, -1)
        if update.clock <= current:
            raise JsClientError("214")
        if update.clock != current + 1:
            raise JsClientError("202")
        self.clocks[update.author] = update.clock

    def feed(self, frames: list[dict[str, Any]]) -> None:
        for f in frames:
            if f["type"] in ("document", "snapshot-save-failed"):
                if "snapshot" in f:
                    self._snapshot(f["snapshot"], f.get("snapshotProofChain", []))
                for u in f.get("updates", []):
                    self._update(u)
            elif f["type"] == "snapshot":
                self._snapshot(f["snapshot"], [])
            elif f["type"] == "update":
                self._update(f)
