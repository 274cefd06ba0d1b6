"""The sans-IO protocol core: crypto, wire format, document session. No I/O in here.

The names below are imported on first use (PEP 562): ``secsync.protocol.crypto`` and the other
modules load without the document session and the CRDT libraries it brings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from secsync._lazy import lazy_names

if TYPE_CHECKING:
    from secsync.protocol.crypto import SigningKeyPair, generate_key
    from secsync.protocol.events import (
        EphemeralReceived,
        Event,
        GapDetected,
        IdentityCollision,
        IdentityInUse,
        MessageRejected,
        PresenceChanged,
        RecoveryNeeded,
        SnapshotApplied,
        SnapshotIncomplete,
        SnapshotStored,
        UpdateApplied,
        UpdateStored,
    )
    from secsync.protocol.keys import KeyProvider, StaticKey
    from secsync.protocol.messages import (
        EphemeralMessage,
        EphemeralPublicData,
        Message,
        MessageKind,
        ProofChainEntry,
        Snapshot,
        SnapshotInfo,
        SnapshotPublicData,
        Update,
        UpdatePublicData,
    )
    from secsync.protocol.policy import AllowAll, AllowList, AuthorPolicy
    from secsync.protocol.session import DocumentSession

__all__ = [
    "AllowAll",
    "AllowList",
    "AuthorPolicy",
    "DocumentSession",
    "EphemeralMessage",
    "EphemeralPublicData",
    "EphemeralReceived",
    "Event",
    "GapDetected",
    "IdentityCollision",
    "IdentityInUse",
    "KeyProvider",
    "Message",
    "MessageKind",
    "MessageRejected",
    "PresenceChanged",
    "ProofChainEntry",
    "RecoveryNeeded",
    "SigningKeyPair",
    "Snapshot",
    "SnapshotApplied",
    "SnapshotIncomplete",
    "SnapshotInfo",
    "SnapshotPublicData",
    "SnapshotStored",
    "StaticKey",
    "Update",
    "UpdateApplied",
    "UpdatePublicData",
    "UpdateStored",
    "generate_key",
]

_LAZY = {
    "AllowAll": "secsync.protocol.policy",
    "AllowList": "secsync.protocol.policy",
    "AuthorPolicy": "secsync.protocol.policy",
    "DocumentSession": "secsync.protocol.session",
    "EphemeralMessage": "secsync.protocol.messages",
    "EphemeralPublicData": "secsync.protocol.messages",
    "EphemeralReceived": "secsync.protocol.events",
    "Event": "secsync.protocol.events",
    "GapDetected": "secsync.protocol.events",
    "IdentityCollision": "secsync.protocol.events",
    "IdentityInUse": "secsync.protocol.events",
    "KeyProvider": "secsync.protocol.keys",
    "Message": "secsync.protocol.messages",
    "MessageKind": "secsync.protocol.messages",
    "MessageRejected": "secsync.protocol.events",
    "PresenceChanged": "secsync.protocol.events",
    "ProofChainEntry": "secsync.protocol.messages",
    "RecoveryNeeded": "secsync.protocol.events",
    "SigningKeyPair": "secsync.protocol.crypto",
    "Snapshot": "secsync.protocol.messages",
    "SnapshotApplied": "secsync.protocol.events",
    "SnapshotIncomplete": "secsync.protocol.events",
    "SnapshotInfo": "secsync.protocol.messages",
    "SnapshotPublicData": "secsync.protocol.messages",
    "SnapshotStored": "secsync.protocol.events",
    "StaticKey": "secsync.protocol.keys",
    "Update": "secsync.protocol.messages",
    "UpdateApplied": "secsync.protocol.events",
    "UpdatePublicData": "secsync.protocol.messages",
    "UpdateStored": "secsync.protocol.events",
    "generate_key": "secsync.protocol.crypto",
}


__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
