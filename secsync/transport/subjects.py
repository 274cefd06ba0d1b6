"""Subject layout on the broker. Pure functions: no NATS import.

Stored messages of a document live on ``{root}.s.{shard}.{token}.{kind}`` with ``kind`` one
of ``snap`` and ``upd``; ephemeral messages travel on core NATS as ``{root}.e.{token}`` and are
never stored. ``token`` is an opaque, fixed-length digest of the document id, so the broker sees
neither the id nor its length, and any id fits in one subject token. ``shard`` is the token's
first hex digit: one stream captures ``{root}.s.>`` today; sixteen streams can capture
``{root}.s.<h>.>`` each tomorrow, without changing a subject.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from secsync.protocol import crypto
from secsync.protocol.encoding import b64encode
from secsync.protocol.messages import Update

TOKEN_BYTES = 20
SNAPSHOT = "snap"
UPDATE = "upd"


def document_token(doc_id: str) -> str:
    """A 40-hex-digit token standing for ``doc_id`` in subjects."""
    return crypto.document_token(doc_id, TOKEN_BYTES)


@dataclass(frozen=True, slots=True)
class DocumentSubjects:
    """The subjects of one document under ``root``."""

    root: str
    token: str

    @classmethod
    def of(cls, doc_id: str, root: str = "secsync") -> DocumentSubjects:
        return cls(root, document_token(doc_id))

    @property
    def shard(self) -> str:
        return self.token[0]

    @property
    def prefix(self) -> str:
        return f"{self.root}.s.{self.shard}.{self.token}"

    @property
    def snapshot(self) -> str:
        return f"{self.prefix}.{SNAPSHOT}"

    @property
    def update(self) -> str:
        return f"{self.prefix}.{UPDATE}"

    @property
    def stored(self) -> str:
        """Wildcard over every stored subject of the document (compare-and-set, consumers)."""
        return f"{self.prefix}.*"

    @property
    def ephemeral(self) -> str:
        return f"{self.root}.e.{self.token}"


def stream_subjects(root: str = "secsync") -> list[str]:
    """What the stream captures: every stored document subject, nothing ephemeral."""
    return [f"{root}.s.>"]


def snapshot_msg_id(snapshot_id: bytes) -> str:
    """``Nats-Msg-Id`` of a snapshot: retries of it are deduplicated by the broker."""
    return "s." + b64encode(snapshot_id)


def update_msg_id(update: Update) -> str:
    """``Nats-Msg-Id`` of an update: derived from its signature, so from the signed bytes.

    A retry of the same update (byte for byte, after a restart too) is deduplicated, while
    nobody can claim an author's id before the author has published: an id made of the
    snapshot, author and clock would let junk stored first under it make the broker drop the
    real update as a duplicate.
    """
    digest = hashlib.blake2b(update.signature, digest_size=18, person=b"secsync-msg-id").digest()
    return "u." + b64encode(digest)
