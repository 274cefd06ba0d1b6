"""Subject layout on the broker. Pure functions: no NATS import.

Stored messages of a document live on ``{root}.s.{shard}.{token}.{kind}`` with ``kind`` one
of ``snap`` and ``upd``; ephemeral messages travel on core NATS as ``{root}.e.{token}`` and are
never stored. ``token`` is an opaque, fixed-length digest of the document id, so the broker sees
neither the id nor its length, and any id fits in one subject token. ``shard`` is the token's
first hex digit: one stream captures ``{root}.s.>`` today; sixteen streams can capture
``{root}.s.<h>.>`` each tomorrow, without changing a subject.
"""

from __future__ import annotations

from dataclasses import dataclass

from secsync.protocol import crypto
from secsync.protocol.stream_types import snapshot_msg_id, update_msg_id

__all__ = [
    "DocumentSubjects",
    "document_token",
    "snapshot_msg_id",
    "stream_subjects",
    "update_msg_id",
]

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
