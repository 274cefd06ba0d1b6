"""Events only an open document on a broker reports: loading, the connection, publishing and the
local store. Frozen dataclasses, every one a :class:`~secsync.protocol.events.BaseEvent`;
:data:`DocumentEvent` is the union of these and of the session's
:data:`~secsync.protocol.events.Event`, what :meth:`Document.events` yields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from secsync.errors import SecsyncError
from secsync.protocol.events import BaseEvent, Event


@dataclass(frozen=True, slots=True, repr=False)
class DocumentLoaded(BaseEvent):
    """The document caught up with the broker: the latest snapshot and the updates stored
    after it (or after what the local store held)."""

    snapshot_id: bytes | None
    updates: int
    last_sequence: int


@dataclass(frozen=True, slots=True, repr=False)
class LoadProgress(BaseEvent):
    """How far loading (or catching up) has come: ``messages`` of the ``total`` stored after
    the snapshot have been read and applied (``total`` as the broker counted them when the read
    began). Given to the ``on_progress`` callback of :meth:`SecsyncClient.open` page by page;
    not queued with the other events."""

    doc_id: str
    messages: int
    total: int


@dataclass(frozen=True, slots=True, repr=False)
class DocumentRestored(BaseEvent):
    """The document was opened from the local store (the broker may still be away; a
    :class:`DocumentLoaded` follows once it caught up)."""

    snapshot_id: bytes | None
    last_sequence: int
    pending_changes: int
    """Local changes the store held that the broker has not confirmed yet."""


@dataclass(frozen=True, slots=True, repr=False)
class PublishFailed(BaseEvent):
    """The broker refused or did not acknowledge a publish; ``retrying`` says what happens."""

    error: SecsyncError
    subject: str
    retrying: bool


@dataclass(frozen=True, slots=True, repr=False)
class SyncFailed(BaseEvent):
    """The document could not catch up with the broker and stopped trying (e.g. access was
    revoked); it keeps working locally."""

    error: SecsyncError


@dataclass(frozen=True, slots=True, repr=False)
class StorageFailed(BaseEvent):
    """The local store could not be written; changes stay in memory until it can."""

    error: SecsyncError


@dataclass(frozen=True, slots=True, repr=False)
class ConnectionChanged(BaseEvent):
    """The connection to the broker was lost (``connected=False``) or restored."""

    connected: bool


DocumentEvent: TypeAlias = (
    Event
    | DocumentLoaded
    | DocumentRestored
    | LoadProgress
    | PublishFailed
    | ConnectionChanged
    | StorageFailed
    | SyncFailed
)

__all__ = [
    "ConnectionChanged",
    "DocumentEvent",
    "DocumentLoaded",
    "DocumentRestored",
    "LoadProgress",
    "PublishFailed",
    "StorageFailed",
    "SyncFailed",
]
