"""Builders shared by the tests: keys, public data, sealed messages, sessions on real CRDTs."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import pycrdt

from secsync.config import SecsyncConfig
from secsync.crdt.yjs import new_yjs_doc
from secsync.errors import WrongLastSequenceError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.changes import serialize_changes
from secsync.protocol.crdt_identity import is_bound_yjs_id
from secsync.protocol.messages import (
    INITIAL_PARENT_PROOF,
    EphemeralPublicData,
    Snapshot,
    SnapshotPublicData,
    Update,
    UpdatePublicData,
)
from secsync.protocol.session import DocumentSession
from secsync.protocol.stream import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    MSG_ID,
    Accepted,
    Conflict,
    Outcome,
    StoredMessage,
    StreamAction,
    StreamBinding,
    is_action,
    judge,
)
from secsync.protocol.stream_types import snapshot_msg_id, update_msg_id
from secsync.transport.subjects import DocumentSubjects


def plain_yjs_doc() -> pycrdt.Doc[Any]:
    """A ``pycrdt.Doc`` with a random unbound client id, as an application that does not bind
    its ids would have. ``pycrdt.Doc()`` picks a 53-bit id that looks bound to some other user
    one time in 65,536 (refused at open with 219, as it must be); tests of plain documents use
    this so that they never meet that case by chance."""
    while True:
        client_id = secrets.randbits(53)
        if not is_bound_yjs_id(client_id):
            return pycrdt.Doc(client_id=client_id)


DOC_ID = "6e46c006-5541-11ec-bf63-0242ac130002"
KEY = bytes.fromhex("724b092810ec86d7e35c9d067702b31ef90bc43a7b598626749914d6a3e033ed")


def make_snapshot(
    signer: crypto.SigningKeyPair,
    content: bytes,
    *,
    parent: Snapshot | None = None,
    clocks: Mapping[bytes, int] | None = None,
    key: bytes = KEY,
    doc_id: str = DOC_ID,
    snapshot_id: bytes | None = None,
) -> Snapshot:
    public = SnapshotPublicData(
        doc_id=doc_id,
        pub_key=signer.public_key,
        snapshot_id=snapshot_id or crypto.generate_id(),
        parent_snapshot_id=parent.snapshot_id if parent else b"",
        parent_snapshot_proof=parent.info().child_proof() if parent else INITIAL_PARENT_PROOF,
        parent_snapshot_update_clocks=dict(clocks or {}),
    )
    return sealing.seal(public, content, key, signer)


def make_update(
    signer: crypto.SigningKeyPair,
    snapshot: Snapshot,
    clock: int,
    changes: list[bytes],
    *,
    key: bytes = KEY,
    doc_id: str = DOC_ID,
) -> Update:
    public = UpdatePublicData(
        doc_id=doc_id, pub_key=signer.public_key, ref_snapshot_id=snapshot.snapshot_id, clock=clock
    )
    return sealing.seal(public, serialize_changes(changes), key, signer)


def ephemeral_public(signer: crypto.SigningKeyPair, doc_id: str = DOC_ID) -> EphemeralPublicData:
    return EphemeralPublicData(doc_id=doc_id, pub_key=signer.public_key)


class YPeer:
    """A participant: a real pycrdt document behind a document session."""

    def __init__(
        self,
        signer: crypto.SigningKeyPair | None = None,
        *,
        key: bytes = KEY,
        config: SecsyncConfig | None = None,
        doc_id: str = DOC_ID,
    ) -> None:
        self.signer = signer or crypto.SigningKeyPair.generate()
        self.doc: pycrdt.Doc = new_yjs_doc(self.signer)
        self.text = self.doc.get("text", type=pycrdt.Text)
        self.session = DocumentSession(doc_id, self.signer, key, self.doc, config=config)

    def type(self, at: int, text: str) -> None:
        self.text.insert(min(at, len(self.text)), text)

    @property
    def content(self) -> str:
        return str(self.text)


def yjs_change(text: str, *, at: int = 0, base: bytes | None = None) -> tuple[bytes, pycrdt.Doc]:
    """A real Yjs update inserting ``text`` (on top of ``base`` state if given)."""
    doc: pycrdt.Doc = plain_yjs_doc()
    t = doc.get("text", type=pycrdt.Text)
    if base:
        doc.apply_update(base)
    before = doc.get_state()
    t.insert(at, text)
    return doc.get_update(before), doc


class MemoryStream:
    """An in-memory stream with JetStream's semantics, for one or more documents.

    Sequences shared by every subject; ``Nats-Expected-Last-Subject-Sequence`` refused with
    :class:`WrongLastSequenceError` when the last sequence on the filter it names (or the
    subject) differs, checked before the duplicate window as a single server does; a
    ``Nats-Msg-Id`` seen within ``duplicate_window`` answered "duplicate" with the sequence it
    was stored at. ``now`` is the caller's clock.
    """

    def __init__(self, duplicate_window: float = 120.0) -> None:
        self.messages: list[StoredMessage] = []
        self.duplicate_window = duplicate_window
        self._ids: dict[str, tuple[int, float]] = {}

    @staticmethod
    def matches(subject: str, subject_filter: str) -> bool:
        tokens, wanted = subject.split("."), subject_filter.split(".")
        if wanted[-1] == ">":
            return len(tokens) >= len(wanted) and all(
                w in ("*", t) for w, t in zip(wanted[:-1], tokens, strict=False)
            )
        return len(tokens) == len(wanted) and all(
            w in ("*", t) for w, t in zip(wanted, tokens, strict=True)
        )

    def last_sequence(self, subject_filter: str) -> int:
        for message in reversed(self.messages):
            if self.matches(message.subject, subject_filter):
                return message.sequence
        return 0

    def put(
        self, subject: str, data: bytes, headers: Mapping[str, str], *, now: float = 0.0
    ) -> Outcome:
        """Store one message: ``(first, last, duplicate)``, or the broker's refusal."""
        expected = headers.get(EXPECTED_LAST_SUBJECT_SEQ)
        if expected is not None:
            last = self.last_sequence(headers.get(EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, subject))
            if last != int(expected):
                return WrongLastSequenceError(f"wrong last sequence: {last}", last_sequence=last)
        msg_id = headers.get(MSG_ID)
        if msg_id is not None:
            seen = self._ids.get(msg_id)
            if seen is not None and now - seen[1] <= self.duplicate_window:
                return seen[0], seen[0], True
        sequence = len(self.messages) + 1
        self.messages.append(StoredMessage(subject, sequence, data, dict(headers)))
        if msg_id is not None:
            self._ids[msg_id] = (sequence, now)
        return sequence, sequence, False

    def read(
        self, subject_filter: str, start: int, limit: int | None = None
    ) -> list[StoredMessage]:
        found = [
            m for m in self.messages[max(0, start - 1) :] if self.matches(m.subject, subject_filter)
        ]
        return found if limit is None else found[:limit]

    def last(self, subject: str) -> StoredMessage | None:
        found = self.read(subject, 1)
        return found[-1] if found else None

    def between(
        self, subject: str, first: int, last: int, *, stored_after: int, max_count: int
    ) -> tuple[list[StoredMessage], int]:
        """What ``jetstream.messages_between`` answers: nothing fetched past ``max_count``."""
        found = [m for m in self.read(subject, first) if m.sequence <= last]
        return (found if len(found) <= max_count else []), len(found)

    def count(self, subject: str) -> int:
        return len(self.read(subject, 1))


class MemoryBroker(MemoryStream):
    """A :class:`MemoryStream` holding one document (``DOC_ID`` unless told), with the
    messages it stores decoded in :attr:`log`."""

    def __init__(self, doc_id: str = DOC_ID) -> None:
        super().__init__()
        self.doc_id = doc_id
        self.subjects = DocumentSubjects.of(doc_id)
        self.log: list[Snapshot | Update] = []

    def store(self, message: object, headers: Mapping[str, str]) -> Outcome:
        if not isinstance(message, Snapshot | Update):
            return 0, 0, False  # ephemeral messages are not stored
        subject = self.subjects.snapshot if isinstance(message, Snapshot) else self.subjects.update
        outcome = self.put(subject, wire.encode(message, include_doc_id=False), headers)
        if isinstance(outcome, tuple) and not outcome[2]:
            self.log.append(message)
        return outcome

    def publish(self, message: object, seen: int) -> bool:
        """Store ``message`` as an author who applied the first ``seen`` stored messages would:
        with the headers :class:`StreamBinding` gives it there (a snapshot expects ``seen``;
        an update, the end of the latest snapshot if it builds on that one)."""
        if isinstance(message, Snapshot):
            expected, on = seen, self.subjects.stored
        elif isinstance(message, Update):
            last = self.last(self.subjects.snapshot)
            ref = snapshot_msg_id(message.public_data.ref_snapshot_id)
            expected = last.sequence if last and last.headers.get(MSG_ID) == ref else -1
            on = self.subjects.snapshot
        else:
            return True
        msg_id = (
            snapshot_msg_id(message.snapshot_id)
            if isinstance(message, Snapshot)
            else update_msg_id(message)
        )
        headers = {
            MSG_ID: msg_id,
            EXPECTED_LAST_SUBJECT_SEQ: str(expected),
            EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: on,
        }
        return isinstance(self.store(message, headers), tuple)


class Participant:
    """A session bound to a :class:`MemoryBroker` by the same rules the transport binds it to
    JetStream with (:class:`secsync.protocol.stream.StreamBinding`)."""

    def __init__(self, session: DocumentSession, broker: MemoryBroker) -> None:
        self.session = session
        self.broker = broker
        self.binding = StreamBinding(session, broker.subjects, max_message_bytes=1 << 26)
        self.events: list[object] = []
        self.actions: list[StreamAction] = []
        self.session.load(None, now=0.0)

    @property
    def seen(self) -> int:
        return self.binding.last_sequence

    @seen.setter
    def seen(self, value: int) -> None:
        self.binding.last_sequence = value

    def _take(self, output: list[Any]) -> None:
        for item in output:
            (self.actions if is_action(item) else self.events).append(item)

    def pull(self) -> None:
        """Receive every stored message not seen yet, in stream order."""
        new = self.broker.read(self.broker.subjects.stored, self.binding.last_sequence + 1)
        self._take(self.binding.deliver(new, now=0.0))

    def publish(self, message: Snapshot | Update) -> bool:
        """Publish one message of this session's as the transport does (the binding's headers,
        its outcome fed back); whether it was stored."""
        headers = self.binding.headers(message)
        step = judge(message, self.broker.store(message, headers))
        if isinstance(step, Accepted):
            self._take(self.binding.stored(message, step.first, step.last, headers, now=0.0))
            return True
        assert isinstance(step, Conflict), step
        self._take(self.binding.conflict(message))
        return False

    def push(self, max_rounds: int = 10) -> None:
        """Publish what the session has to send, rebasing on conflicts, until nothing is left."""
        for _ in range(max_rounds):
            outgoing = [m for m in self.session.data_to_send() if isinstance(m, Snapshot | Update)]
            if not outgoing:
                return
            for message in outgoing:
                headers = self.binding.headers(message)
                step = judge(message, self.broker.store(message, headers))
                if isinstance(step, Accepted):
                    self._take(
                        self.binding.stored(message, step.first, step.last, headers, now=0.0)
                    )
                    continue
                assert isinstance(step, Conflict), step
                self._take(self.binding.conflict(message))
                self.pull()
                break
        raise AssertionError("push did not settle")

    def sync(self) -> None:
        self.pull()
        self.push()


class AMPeer:
    """A participant editing a real Automerge text."""

    def __init__(
        self,
        signer: crypto.SigningKeyPair | None = None,
        *,
        key: bytes = KEY,
        config: SecsyncConfig | None = None,
        doc_id: str = DOC_ID,
    ) -> None:
        from automerge import core

        self._core = core
        self.signer = signer or crypto.SigningKeyPair.generate()
        self.doc = core.Document()
        self.session = DocumentSession(doc_id, self.signer, key, self.doc, config=config)

    def _text(self) -> bytes | None:
        found = self.doc.get(self._core.ROOT, "text")
        return found[1] if found else None

    def type(self, at: int, text: str) -> None:
        core = self._core
        with self.doc.transaction() as tx:
            obj = self._text()
            if obj is None:
                obj = tx.put_object(core.ROOT, "text", core.ObjType.Text)
            at = min(at, tx.length(obj))
            for offset, char in enumerate(text):
                tx.insert(obj, at + offset, core.ScalarType.Str, char)

    @property
    def content(self) -> str:
        obj = self._text()
        return self.doc.text(obj) if obj is not None else ""


def automerge_text(doc: object) -> str:
    """The text under ROOT["text"] of an automerge core document ("" before it exists)."""
    from automerge import core

    assert isinstance(doc, core.Document)
    found = doc.get(core.ROOT, "text")
    return doc.text(found[1]) if found else ""


def automerge_type(doc: object, at: int, chars: str) -> None:
    """Insert ``chars`` at ``at`` into ROOT["text"], creating the text when missing."""
    from automerge import core

    assert isinstance(doc, core.Document)
    with doc.transaction() as tx:
        found = doc.get(core.ROOT, "text")
        obj = found[1] if found else tx.put_object(core.ROOT, "text", core.ObjType.Text)
        for i, char in enumerate(chars):
            tx.insert(obj, at + i, core.ScalarType.Str, char)
