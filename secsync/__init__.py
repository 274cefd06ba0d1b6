"""secsync: end-to-end encrypted CRDT documents (Yjs, Automerge) over NATS JetStream."""

from secsync.config import SecsyncConfig
from secsync.errors import InvalidKeyError, SecsyncError, WrongKeyError
from secsync.protocol import DocumentSession, SigningKeyPair, StaticKey, generate_key
from secsync.protocol.keys import decode_key, encode_key
from secsync.transport import Document, SecsyncClient, connect

__version__ = "0.1.0"

__all__ = [
    "Document",
    "DocumentSession",
    "SecsyncClient",
    "SecsyncConfig",
    "InvalidKeyError",
    "SecsyncError",
    "SigningKeyPair",
    "StaticKey",
    "WrongKeyError",
    "__version__",
    "connect",
    "decode_key",
    "encode_key",
    "generate_key",
]
