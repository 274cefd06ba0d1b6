"""secsync: end-to-end encrypted CRDT documents (Yjs, Automerge) over NATS JetStream.

Everything an application uses is a name of this package (see ``__all__``):

* connecting and documents: :func:`connect` (which returns :class:`Connecting`),
  :class:`SecsyncClient`, :class:`Document`, :class:`SecsyncConfig`, :data:`CrdtDocument`,
  :func:`new_yjs_doc`, and the sans-IO :class:`DocumentSession`;
* keys and identities: :func:`generate_key`, :func:`encode_key`, :func:`decode_key`,
  :class:`StaticKey`, :class:`KeyProvider`, :class:`SigningKeyPair`, :class:`UserIdentity`,
  :class:`Device`, :class:`DeviceCertificate`;
* access: :class:`ShareLink` and :func:`open_shared`, :class:`Group` (closed groups), the
  author policies :class:`AuthorPolicy`, :class:`AllowAll`, :class:`AllowList`;
* every event a document reports (``DocumentEvent`` is their union, ``Event`` the session's);
* :class:`SecsyncError`, the base class of every category (``EncodingError``,
  ``SnapshotError``, ``UpdateError``, ``EphemeralError``, ``SessionError``,
  ``TransportError``, ``AccessError``), and the errors the calls above raise. The errors of
  received messages, which arrive in ``MessageRejected`` events, are told apart by their
  ``code``; every class is in :mod:`secsync.errors`.

The names are imported on first use (PEP 562), so that ``import secsync`` and the command
line do not pay for nats, asyncio and the CRDT libraries until they are needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from secsync._lazy import lazy_names

if TYPE_CHECKING:
    from secsync.access.group import Group
    from secsync.access.share import ShareLink, open_shared
    from secsync.config import SecsyncConfig
    from secsync.crdt import CrdtAdapter, CrdtDocument
    from secsync.crdt.yjs import new_yjs_doc
    from secsync.errors import (
        AccessError,
        BrokerUnavailableError,
        ConfigurationError,
        CrdtAdapterError,
        DeviceCertificateError,
        DocumentClosedError,
        DocumentNotFoundError,
        EncodingError,
        EphemeralError,
        ErrorCode,
        GroupTooLargeError,
        IdentityInUseError,
        InvalidKeyError,
        InvalidShareLinkError,
        LocalError,
        LocalIdentityError,
        LocalStoreError,
        MembershipError,
        NotAMemberError,
        PermissionDeniedError,
        RemoteInputError,
        SecsyncError,
        SessionError,
        SnapshotError,
        SnapshotSearchError,
        StorageLimitError,
        StreamNotFoundError,
        TransportError,
        UpdateError,
        WrongKeyError,
        WrongPassphraseError,
    )
    from secsync.protocol import DocumentSession, SigningKeyPair, StaticKey, generate_key
    from secsync.protocol.devices import Device, DeviceCertificate, UserIdentity
    from secsync.protocol.events import (
        BaseEvent,
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
    from secsync.protocol.keys import KeyProvider, decode_key, encode_key
    from secsync.protocol.policy import AllowAll, AllowList, AuthorPolicy
    from secsync.transport import Connecting, Document, SecsyncClient, connect
    from secsync.transport.events import (
        ConnectionChanged,
        DocumentEvent,
        DocumentLoaded,
        DocumentRestored,
        LoadProgress,
        PublishFailed,
        StorageFailed,
        SyncFailed,
    )

__version__ = "0.1.0"

# Module -> the public names it defines.
_MODULES = {
    "secsync.config": ["SecsyncConfig"],
    "secsync.crdt": ["CrdtAdapter", "CrdtDocument"],
    "secsync.crdt.yjs": ["new_yjs_doc"],
    "secsync.errors": [
        "AccessError",
        "BrokerUnavailableError",
        "ConfigurationError",
        "CrdtAdapterError",
        "DeviceCertificateError",
        "DocumentClosedError",
        "DocumentNotFoundError",
        "EncodingError",
        "EphemeralError",
        "ErrorCode",
        "GroupTooLargeError",
        "IdentityInUseError",
        "InvalidKeyError",
        "InvalidShareLinkError",
        "LocalError",
        "LocalIdentityError",
        "LocalStoreError",
        "MembershipError",
        "NotAMemberError",
        "PermissionDeniedError",
        "RemoteInputError",
        "SecsyncError",
        "SessionError",
        "SnapshotError",
        "SnapshotSearchError",
        "StorageLimitError",
        "StreamNotFoundError",
        "TransportError",
        "UpdateError",
        "WrongKeyError",
        "WrongPassphraseError",
    ],
    "secsync.access.group": ["Group"],
    "secsync.protocol": ["DocumentSession", "SigningKeyPair", "StaticKey", "generate_key"],
    "secsync.protocol.devices": ["Device", "DeviceCertificate", "UserIdentity"],
    "secsync.protocol.events": [
        "BaseEvent",
        "EphemeralReceived",
        "Event",
        "GapDetected",
        "IdentityCollision",
        "IdentityInUse",
        "MessageRejected",
        "PresenceChanged",
        "RecoveryNeeded",
        "SnapshotApplied",
        "SnapshotIncomplete",
        "SnapshotStored",
        "UpdateApplied",
        "UpdateStored",
    ],
    "secsync.protocol.keys": ["KeyProvider", "decode_key", "encode_key"],
    "secsync.protocol.policy": ["AllowAll", "AllowList", "AuthorPolicy"],
    "secsync.access.share": ["ShareLink", "open_shared"],
    "secsync.transport": ["Connecting", "Document", "SecsyncClient", "connect"],
    "secsync.transport.events": [
        "ConnectionChanged",
        "DocumentEvent",
        "DocumentLoaded",
        "DocumentRestored",
        "LoadProgress",
        "PublishFailed",
        "StorageFailed",
        "SyncFailed",
    ],
}

# Public name -> the module that defines it.
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

# Kept in step with _MODULES (tests/test_imports.py checks it).
__all__ = [
    "AccessError",
    "AllowAll",
    "AllowList",
    "AuthorPolicy",
    "BaseEvent",
    "BrokerUnavailableError",
    "ConfigurationError",
    "Connecting",
    "ConnectionChanged",
    "CrdtAdapter",
    "CrdtAdapterError",
    "CrdtDocument",
    "Device",
    "DeviceCertificate",
    "DeviceCertificateError",
    "Document",
    "DocumentClosedError",
    "DocumentEvent",
    "DocumentLoaded",
    "DocumentNotFoundError",
    "DocumentRestored",
    "DocumentSession",
    "EncodingError",
    "EphemeralError",
    "EphemeralReceived",
    "ErrorCode",
    "Event",
    "GapDetected",
    "Group",
    "GroupTooLargeError",
    "IdentityCollision",
    "IdentityInUse",
    "IdentityInUseError",
    "InvalidKeyError",
    "InvalidShareLinkError",
    "KeyProvider",
    "LoadProgress",
    "LocalError",
    "LocalIdentityError",
    "LocalStoreError",
    "MembershipError",
    "MessageRejected",
    "NotAMemberError",
    "PermissionDeniedError",
    "PresenceChanged",
    "PublishFailed",
    "RecoveryNeeded",
    "RemoteInputError",
    "SecsyncClient",
    "SecsyncConfig",
    "SecsyncError",
    "SessionError",
    "ShareLink",
    "SigningKeyPair",
    "SnapshotApplied",
    "SnapshotError",
    "SnapshotIncomplete",
    "SnapshotSearchError",
    "SnapshotStored",
    "StaticKey",
    "StorageFailed",
    "StorageLimitError",
    "StreamNotFoundError",
    "SyncFailed",
    "TransportError",
    "UpdateApplied",
    "UpdateError",
    "UpdateStored",
    "UserIdentity",
    "WrongKeyError",
    "WrongPassphraseError",
    "__version__",
    "connect",
    "decode_key",
    "encode_key",
    "generate_key",
    "new_yjs_doc",
    "open_shared",
]

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
