"""secsync: end-to-end encrypted CRDT documents (Yjs, Automerge) over NATS JetStream."""

from secsync.config import SecsyncConfig
from secsync.errors import SecsyncError
from secsync.protocol import DocumentSession, SigningKeyPair, StaticKey, generate_key
from secsync.transport import Document, SecsyncClient, connect

__version__ = "0.1.0"

__all__ = [
    "Document",
    "DocumentSession",
    "SecsyncClient",
    "SecsyncConfig",
    "SecsyncError",
    "SigningKeyPair",
    "StaticKey",
    "__version__",
    "connect",
    "generate_key",
]
