"""Builders shared by the tests: keys, public data, sealed messages, sessions on real CRDTs."""

from __future__ import annotations

from collections.abc import Mapping

import pycrdt

from secsync.config import SecsyncConfig
from secsync.crdt.yjs import new_yjs_doc
from secsync.protocol import crypto, sealing
from secsync.protocol.changes import serialize_changes
from secsync.protocol.messages import (
    INITIAL_PARENT_PROOF,
    EphemeralPublicData,
    Snapshot,
    SnapshotPublicData,
    Update,
    UpdatePublicData,
)
from secsync.protocol.session import DocumentSession

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
    doc: pycrdt.Doc = pycrdt.Doc()
    t = doc.get("text", type=pycrdt.Text)
    if base:
        doc.apply_update(base)
    before = doc.get_state()
    t.insert(at, text)
    return doc.get_update(before), doc


class MemoryBroker:
    """An in-memory stand-in for the stream, with JetStream's compare-and-set rules.

    A snapshot is stored only if its author has seen every stored message and it names the
    latest snapshot as parent; an update only if it builds on the latest snapshot.
    """

    def __init__(self) -> None:
        self.log: list[Snapshot | Update] = []
        self.latest: bytes = b""

    def publish(self, message: object, seen: int) -> bool:
        if isinstance(message, Snapshot):
            ok = seen == len(self.log) and message.public_data.parent_snapshot_id == self.latest
            if ok:
                self.latest = message.snapshot_id
        elif isinstance(message, Update):
            ok = message.public_data.ref_snapshot_id == self.latest and self.latest != b""
        else:
            return True  # ephemeral messages are not stored
        if ok:
            self.log.append(message)
        return ok


class Participant:
    """A session wired to a :class:`MemoryBroker` the way the transport wires it to JetStream."""

    def __init__(self, session: DocumentSession, broker: MemoryBroker) -> None:
        self.session = session
        self.broker = broker
        self.seen = 0
        self.events: list[object] = []
        self.session.load(None, now=0.0)

    def pull(self) -> None:
        """Receive every stored message not seen yet, in stream order."""
        new = self.broker.log[self.seen :]
        self.seen = len(self.broker.log)
        self.events += self.session.receive_many(new, now=0.0)

    def push(self, max_rounds: int = 10) -> None:
        """Publish what the session has to send, rebasing on conflicts, until nothing is left."""
        for _ in range(max_rounds):
            outgoing = [m for m in self.session.data_to_send() if isinstance(m, Snapshot | Update)]
            if not outgoing:
                return
            for message in outgoing:
                before = len(self.broker.log)
                if self.broker.publish(message, self.seen):
                    if self.seen == before:
                        self.seen = len(self.broker.log)
                    if isinstance(message, Snapshot):
                        self.events += self.session.snapshot_stored(message.snapshot_id, now=0.0)
                    else:
                        self.events += self.session.update_stored(
                            message.public_data.ref_snapshot_id, message.clock
                        )
                elif isinstance(message, Snapshot):
                    self.events += self.session.snapshot_rejected(message.snapshot_id)
                    self.pull()
                    break
                else:
                    self.events += self.session.update_rejected(
                        message.public_data.ref_snapshot_id, message.clock
                    )
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
