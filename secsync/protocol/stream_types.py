"""What the stream binding (:mod:`secsync.protocol.stream`) speaks: stored messages, subjects,
the compare-and-set headers and message ids of JetStream. Pure data, no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from secsync.protocol.encoding import b64encode
from secsync.protocol.messages import Update

EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
MSG_ID = "Nats-Msg-Id"
# Headers and framing of a stored message, kept free below the broker's payload limit.
HEADER_ROOM = 4096


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored in the stream, with its stream sequence and headers.

    Read by direct get, ``headers`` holds the broker's (``Nats-Stream``, ``Nats-Subject``,
    ``Nats-Sequence``, ``Nats-Time-Stamp``, in batches ``Nats-Num-Pending`` and
    ``Nats-Last-Sequence``) next to the stored ones (``Nats-Msg-Id``, user headers).
    """

    subject: str
    sequence: int
    data: bytes
    headers: Mapping[str, str]


class Subjects(Protocol):
    """The stored subjects of one document (``transport.subjects.DocumentSubjects``)."""

    @property
    def snapshot(self) -> str: ...

    @property
    def update(self) -> str: ...

    @property
    def stored(self) -> str:
        """Wildcard over both: what the document's compare-and-set and consumers cover."""
        ...


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


def snapshot_headers(snapshot_id: bytes, expected: int, subjects: Subjects) -> dict[str, str]:
    """The compare-and-set preconditions and msg id of a snapshot publish: stored only if the
    last message of the document (any stored subject) is still at ``expected``."""
    return {
        MSG_ID: snapshot_msg_id(snapshot_id),
        EXPECTED_LAST_SUBJECT_SEQ: str(expected),
        EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: subjects.stored,
    }


def update_headers(update: Update, snapshot_sequence: int, subjects: Subjects) -> dict[str, str]:
    """The compare-and-set preconditions and msg id of an update publish: stored only if the
    snapshot it builds on, whose message ends at ``snapshot_sequence``, is still the last one."""
    return {
        MSG_ID: update_msg_id(update),
        EXPECTED_LAST_SUBJECT_SEQ: str(snapshot_sequence),
        EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: subjects.snapshot,
    }
