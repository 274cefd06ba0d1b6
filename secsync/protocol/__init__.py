"""The sans-IO protocol core: crypto, wire format, document session. No I/O in here."""

from secsync.protocol.crypto import SigningKeyPair, generate_key
from secsync.protocol.events import (
    EphemeralReceived,
    Event,
    GapDetected,
    MessageRejected,
    RecoveryNeeded,
    SnapshotApplied,
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
    "KeyProvider",
    "Message",
    "MessageKind",
    "MessageRejected",
    "ProofChainEntry",
    "RecoveryNeeded",
    "Snapshot",
    "SnapshotApplied",
    "SnapshotInfo",
    "SnapshotPublicData",
    "SnapshotStored",
    "SigningKeyPair",
    "StaticKey",
    "Update",
    "UpdateApplied",
    "UpdatePublicData",
    "UpdateStored",
    "generate_key",
]
