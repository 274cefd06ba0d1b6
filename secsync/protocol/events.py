"""Events a document session reports: frozen dataclasses, all of them here, every one a
:class:`BaseEvent`. :data:`Event` is their union. What only an open document on a broker
reports (loading, connection, publishing, local storage) is :mod:`secsync.transport.events`.

A refused message is reported as :class:`MessageRejected`, whose :attr:`~MessageRejected.reason`
is an :class:`~secsync.errors.ErrorCode` (the numeric code of its error's class)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, TypeAlias

from secsync.errors import ErrorCode, SecsyncError
from secsync.protocol.encoding import b64encode
from secsync.protocol.messages import MessageKind

_SHORT = 8  # base64url characters of an id or a public key shown in a repr


class BaseEvent:
    """Base class of every event. Its ``repr`` is made to be read: ids and public keys as the
    first characters of their base64url form, payloads by their size only (they are
    plaintext), errors with their code."""

    __slots__ = ()

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name == "user" and value is None:
                continue  # the author signs as itself: nothing to add
            if f.name == "payload" and isinstance(value, bytes):
                shown = f"<{len(value)} bytes>"
            elif isinstance(value, bytes):
                shown = b64encode(value)[:_SHORT] if value else "''"
            elif isinstance(value, Enum):
                shown = value.name.lower()
            elif isinstance(value, SecsyncError):
                shown = f"{type(value).__name__}({value})"
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True, repr=False)
class SnapshotApplied(BaseEvent):
    """A snapshot became the active one and its content was merged into the document."""

    snapshot_id: bytes
    author: bytes
    recovered: bool = False
    """True when accepted by recovery, without proof that it descends from the known one."""
    rebased_changes: int = 0
    """Local changes not in the snapshot, queued again to be sent on top of it."""
    user: bytes | None = None
    """The user whose certified device ``author`` is (``None``: the author signs as itself)."""


@dataclass(frozen=True, slots=True, repr=False)
class SnapshotIncomplete(BaseEvent):
    """An applied snapshot lacks content this client holds that an honest snapshot would have
    included (not explained by updates concurrent with it, nor by our own changes not yet in
    it): ``author`` wrote a lossy snapshot. What it lacks of ours is sent again as updates on
    it (``resent_changes``); when it lacks other authors' content too (``repair``), this client
    writes a complete snapshot on top of it (anyone's complete snapshot ends the repair)."""

    snapshot_id: bytes
    author: bytes
    resent_changes: int = 0
    """Changes of ours the snapshot lacks although it claims to include them."""
    repair: bool = False
    """It lacks content of other authors: a complete snapshot is requested on top of it."""


@dataclass(frozen=True, slots=True, repr=False)
class UpdateApplied(BaseEvent):
    """A remote update was verified, decrypted and applied."""

    snapshot_id: bytes
    author: bytes
    clock: int
    user: bytes | None = None
    """The user whose certified device ``author`` is (``None``: the author signs as itself)."""


@dataclass(frozen=True, slots=True, repr=False)
class IdentityCollision(BaseEvent):
    """Another update of ``author`` with a clock one of its updates already holds on this
    snapshot, with other content: one identity was used by two clients at once. Its content
    was applied like any update's (every reader does the same, in any order, and converges);
    nothing was dropped."""

    snapshot_id: bytes
    author: bytes
    clock: int
    user: bytes | None = None
    """The user whose certified device ``author`` is (``None``: the author signs as itself)."""


@dataclass(frozen=True, slots=True, repr=False)
class IdentityInUse(BaseEvent):
    """An update signed with this client's own key, that this client did not write, brought
    content this client did not have: another client writes under the same identity. This
    client stopped writing (``error`` is an :class:`~secsync.errors.IdentityInUseError`); its
    unsent changes are kept (``kept_changes``), to be sent once the document is opened again
    as another device or identity."""

    error: SecsyncError
    snapshot_id: bytes
    clock: int
    kept_changes: int


@dataclass(frozen=True, slots=True, repr=False)
class EphemeralReceived(BaseEvent):
    """A verified ephemeral (presence) payload from a peer."""

    author: bytes
    payload: bytes
    user: bytes | None = None
    """The user whose certified device ``author`` is (``None``: the author signs as itself)."""


@dataclass(frozen=True, slots=True, repr=False)
class PresenceChanged(BaseEvent):
    """A peer's presence state changed; ``state`` is ``None`` when the peer left or timed out."""

    author: bytes
    state: Any
    yjs_client_id: int | None = None
    timed_out: bool = False
    user: bytes | None = None
    """The user whose certified device ``author`` is (``None``: the author signs as itself)."""


@dataclass(frozen=True, slots=True, repr=False)
class MessageRejected(BaseEvent):
    """A message was refused; the document and session state are unchanged, except that an
    update refused for its content (203, 204, 218) spends its author's clock."""

    error: SecsyncError
    kind: MessageKind | None = None
    author: bytes | None = None

    @property
    def reason(self) -> ErrorCode:
        """Why, as a code of the table in ``docs/protocol.md`` (``error.code``)."""
        return ErrorCode(self.error.code)


@dataclass(frozen=True, slots=True, repr=False)
class SnapshotStored(BaseEvent):
    """The broker stored a snapshot of ours."""

    snapshot_id: bytes


@dataclass(frozen=True, slots=True, repr=False)
class UpdateStored(BaseEvent):
    """The broker stored an update of ours."""

    snapshot_id: bytes
    clock: int


@dataclass(frozen=True, slots=True, repr=False)
class GapDetected(BaseEvent):
    """Updates of ``author`` wait for a predecessor; the transport should fetch it."""

    snapshot_id: bytes
    author: bytes
    expected_clock: int
    queued: int


@dataclass(frozen=True, slots=True, repr=False)
class RecoveryNeeded(BaseEvent):
    """The session cannot go on from what it has; load the latest snapshot and ``recover``."""

    reason: str


Event: TypeAlias = (
    SnapshotApplied
    | SnapshotIncomplete
    | UpdateApplied
    | IdentityCollision
    | IdentityInUse
    | EphemeralReceived
    | PresenceChanged
    | MessageRejected
    | SnapshotStored
    | UpdateStored
    | GapDetected
    | RecoveryNeeded
)
