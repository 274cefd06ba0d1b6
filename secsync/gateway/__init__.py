"""The sans-IO core of a key-less WebSocket gateway for unmodified secsync JS clients.

It holds no document key: from public data alone it decides what a JS client may see of a
document stored by this project (:class:`DocumentView`), which frames it is sent, and what its
frames become (native messages published under the compare-and-set rules of Python clients,
or failure frames) — see docs/gateway.md. :class:`Gateway` (:mod:`secsync.gateway.server`) is
the ASGI application that pumps it; :class:`GatewayServer` runs one with uvicorn.
"""

from typing import TYPE_CHECKING

from secsync._lazy import lazy_names
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

if TYPE_CHECKING:  # the pump loads the broker client: only when used
    from secsync.gateway.server import Gateway, HasAccess, allow_all, hide_session_keys
    from secsync.gateway.serving import GatewayServer

_LAZY = {
    "Gateway": "secsync.gateway.server",
    "HasAccess": "secsync.gateway.server",
    "allow_all": "secsync.gateway.server",
    "hide_session_keys": "secsync.gateway.server",
    "GatewayServer": "secsync.gateway.serving",
}

__all__ = [
    "Access",
    "AskAccess",
    "BadConnection",
    "CasConflict",
    "Close",
    "ConnectionParams",
    "DocumentView",
    "Dropped",
    "Gateway",
    "GatewayConnection",
    "GatewayServer",
    "HasAccess",
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
    "allow_all",
    "hide_session_keys",
    "parse_connection",
    "refuse",
]

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
