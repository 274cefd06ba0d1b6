"""The NATS JetStream transport and the asyncio client: thin adapters over the protocol core."""

from secsync.transport.client import Connecting, SecsyncClient, connect
from secsync.transport.document import Document

__all__ = ["Connecting", "Document", "SecsyncClient", "connect"]
