"""secsync: end-to-end encrypted CRDT documents (Yjs, Automerge) over NATS JetStream.

The names below are imported on first use (PEP 562), so that ``import secsync`` and the
command line do not pay for nats, asyncio and the CRDT libraries until they are needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from secsync._lazy import lazy_names

if TYPE_CHECKING:
    from secsync.config import SecsyncConfig
    from secsync.crdt.yjs import new_yjs_doc
    from secsync.errors import InvalidKeyError, SecsyncError, WrongKeyError
    from secsync.protocol import DocumentSession, SigningKeyPair, StaticKey, generate_key
    from secsync.protocol.devices import Device, UserIdentity
    from secsync.protocol.keys import decode_key, encode_key
    from secsync.transport import Document, SecsyncClient, connect

__version__ = "0.1.0"

__all__ = [
    "Device",
    "Document",
    "DocumentSession",
    "SecsyncClient",
    "InvalidKeyError",
    "SecsyncConfig",
    "SecsyncError",
    "SigningKeyPair",
    "StaticKey",
    "UserIdentity",
    "WrongKeyError",
    "__version__",
    "connect",
    "decode_key",
    "encode_key",
    "generate_key",
    "new_yjs_doc",
]

# Public name -> the module that defines it.
_LAZY = {
    "Device": "secsync.protocol.devices",
    "Document": "secsync.transport",
    "DocumentSession": "secsync.protocol",
    "SecsyncClient": "secsync.transport",
    "SecsyncConfig": "secsync.config",
    "SecsyncError": "secsync.errors",
    "SigningKeyPair": "secsync.protocol",
    "StaticKey": "secsync.protocol",
    "UserIdentity": "secsync.protocol.devices",
    "InvalidKeyError": "secsync.errors",
    "WrongKeyError": "secsync.errors",
    "connect": "secsync.transport",
    "decode_key": "secsync.protocol.keys",
    "encode_key": "secsync.protocol.keys",
    "generate_key": "secsync.protocol",
    "new_yjs_doc": "secsync.crdt.yjs",
}


__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
