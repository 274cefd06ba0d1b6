"""Events a document session reports. Frozen dataclasses, all of them here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from secsync.errors import SecsyncError
from secsync.protocol.messages import MessageKind


@dataclass(frozen=True, slots=True)
class SnapshotApplied:
    """A snapshot became the active one and its content was merged into the document."""

    snapshot_id: bytes
    author: bytes
    recovered: bool = False
    """True when accepted by recovery, without proof that it descends from the known one."""
    rebased_changes: int = 0
    """Local changes not in the snapshot, queued again to be sent on top of it."""


@dataclass(frozen=True, slots=True)
class UpdateApplied:
    """A remote update was verified, decrypted and applied."""

    snapshot_id: bytes
    author: bytes
    clock: int


@dataclass(frozen=True, slots=True)
class EphemeralReceived:
    """A verified ephemeral (presence) payload from a peer."""

    author: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """A peer's presence state changed; ``state`` is ``None`` when the peer left or timed out."""

    author: bytes
    state: Any
    yjs_client_id: int | None = None
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A message was refused; the document and session state are unchanged."""

    error: SecsyncError
    kind: MessageKind | None = None
    author: bytes | None = None


@dataclass(frozen=True, slots=True)
class SnapshotStored:
    """The broker stored a snapshot of ours."""

    snapshot_id: bytes


@dataclass(frozen=True, slots=True)
class UpdateStored:
    """The broker stored an update of ours."""

    snapshot_id: bytes
    clock: int


@dataclass(frozen=True, slots=True)
class GapDetected:
    """Updates of ``author`` wait for a predecessor; the transport should fetch it."""

    snapshot_id: bytes
    author: bytes
    expected_clock: int
    queued: int


@dataclass(frozen=True, slots=True)
class RecoveryNeeded:
    """The session cannot go on from what it has; load the latest snapshot and ``recover``."""

    reason: str


@dataclass(frozen=True, slots=True)
class DocumentLoaded:
    """A document finished loading: the latest snapshot and the updates stored after it."""

    snapshot_id: bytes | None
    updates: int
    last_sequence: int
    from_local_store: bool = False
    """True when loaded from the local store (the broker may be catching up after it)."""


@dataclass(frozen=True, slots=True)
class PublishFailed:
    """The broker refused or did not acknowledge a publish; ``retrying`` says what happens."""

    error: SecsyncError
    subject: str
    retrying: bool


@dataclass(frozen=True, slots=True)
class SyncFailed:
    """The document could not catch up with the broker and stopped trying (e.g. access was
    revoked); it keeps working locally."""

    error: SecsyncError


@dataclass(frozen=True, slots=True)
class StorageFailed:
    """The local store could not be written; changes stay in memory until it can."""

    error: SecsyncError


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    """The connection to the broker was lost (``connected=False``) or restored."""

    connected: bool


Event: TypeAlias = (
    SnapshotApplied
    | UpdateApplied
    | EphemeralReceived
    | PresenceChanged
    | MessageRejected
    | SnapshotStored
    | UpdateStored
    | GapDetected
    | RecoveryNeeded
    | DocumentLoaded
    | PublishFailed
    | ConnectionChanged
    | StorageFailed
    | SyncFailed
)
