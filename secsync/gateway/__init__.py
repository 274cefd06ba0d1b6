"""The sans-IO core of a key-less WebSocket gateway for unmodified secsync JS clients.

It holds no document key: from public data alone it decides what a JS client may see of a
document stored by this project (:class:`DocumentView`), which frames it is sent, and what its
frames become (native messages published under the compare-and-set rules of Python clients,
or failure frames) — see docs/gateway.md. The ASGI app that pumps it is not built yet.
"""

from secsync.gateway.connection import (
    Access,
    AskAccess,
    CasConflict,
    Close,
    GatewayConnection,
    Ignored,
    Output,
    Publish,
    PublishFailed,
    PublishResult,
    Send,
    Stored,
    refuse,
)
from secsync.gateway.params import BadConnection, ConnectionParams, SessionKey, parse_connection
from secsync.gateway.view import DocumentView, Dropped, Released, ViewEvent

__all__ = [
    "Access",
    "AskAccess",
    "BadConnection",
    "CasConflict",
    "Close",
    "ConnectionParams",
    "DocumentView",
    "Dropped",
    "GatewayConnection",
    "Ignored",
    "Output",
    "Publish",
    "PublishFailed",
    "PublishResult",
    "Released",
    "SessionKey",
    "Send",
    "Stored",
    "ViewEvent",
    "parse_connection",
    "refuse",
]
