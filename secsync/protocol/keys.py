"""Where document keys come from: one key per snapshot epoch, chosen by a key provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from secsync.protocol.crypto import check_key
from secsync.protocol.encoding import JsonValue
from secsync.protocol.messages import SnapshotInfo


@runtime_checkable
class KeyProvider(Protocol):
    """Chooses the key of each snapshot epoch.

    The counterpart of secsync JS's ``getSnapshotKey`` and ``getNewSnapshotData``.

    Updates and ephemeral messages use the key of the snapshot they build on.
    """

    def snapshot_key(self, snapshot: SnapshotInfo) -> bytes:
        """The key of an existing snapshot; may read key ids from ``snapshot.extra``."""
        ...

    def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, Mapping[str, JsonValue]]:
        """The key for a snapshot about to be written, and public data extras to sign with it."""
        ...


class StaticKey:
    """One document key for every snapshot (secsync's simplest deployment)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = check_key(key)

    def snapshot_key(self, snapshot: SnapshotInfo) -> bytes:
        return self._key

    def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, Mapping[str, JsonValue]]:
        return self._key, {}

    def __repr__(self) -> str:
        return "StaticKey(<hidden>)"
