"""secsync: end-to-end encrypted CRDT documents (Yjs, Automerge) over NATS JetStream."""

from secsync.config import SecsyncConfig
from secsync.errors import SecsyncError
from secsync.protocol import DocumentSession, SigningKeyPair, StaticKey, generate_key

__version__ = "0.1.0"

__all__ = [
    "DocumentSession",
    "SecsyncConfig",
    "SecsyncError",
    "SigningKeyPair",
    "StaticKey",
    "__version__",
    "generate_key",
]
