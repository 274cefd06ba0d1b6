"""Running a :class:`~secsync.gateway.server.Gateway` on its own, with uvicorn (the
``secsync[gateway]`` extra): ``secsync gateway`` and tests use :class:`GatewayServer`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from secsync.errors import ConfigurationError, TransportError
from secsync.gateway.server import Gateway


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            "serving the gateway needs uvicorn: pip install 'secsync[gateway]'"
        ) from None
    return uvicorn


class GatewayServer:
    """``gateway`` served by uvicorn on ``host:port`` (port 0: a free one) in this event loop.

    ``app``: an ASGI application that mounts ``gateway``, served in its place. ``await start()``
    connects the gateway to NATS, binds and returns once it listens (:attr:`port` and
    :attr:`url` are then known); ``await stop()`` closes the sockets, the gateway and the
    listener. Failures raise from ``start()`` (uvicorn itself would exit the process on them,
    so the gateway connects and the socket is bound here).
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app: Any = None,
        **uvicorn_options: Any,
    ) -> None:
        uvicorn = _uvicorn()
        self.gateway = gateway
        self.host = host
        self.port = port
        options: dict[str, Any] = {
            "lifespan": "off",
            "log_level": "warning",
            "log_config": None,  # the application's logging stays as it set it
            "ws": "websockets-sansio",
            # The gateway answers a frame over its limit with document-error; uvicorn's limit,
            # past which it closes with 1009 itself, only bounds memory.
            "ws_max_size": 2 * gateway.config.max_frame_bytes + 1024,
            "ws_ping_interval": 20.0,
            "ws_ping_timeout": 20.0,
            # stop() closes every socket first; a peer that never answers the close handshake
            # must not hold it up for ever
            "timeout_graceful_shutdown": 5.0,
        }
        options.update(uvicorn_options)
        listening = asyncio.Event()
        self._listening = listening

        class Server(uvicorn.Server):  # type: ignore[misc, name-defined]
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                listening.set()

            def capture_signals(self) -> contextlib.nullcontext[None]:
                # signals belong to the application (secsync gateway handles its own)
                return contextlib.nullcontext()

        self._server = Server(uvicorn.Config(app or gateway, host=host, port=port, **options))
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """What JS clients pass as ``websocketHost``."""
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> GatewayServer:
        await self.gateway.start()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            await self.gateway.aclose()
            raise
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        listening = asyncio.ensure_future(self._listening.wait())
        done, _ = await asyncio.wait({listening, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if listening not in done:
            listening.cancel()
            error = self._task.exception()
            await self.gateway.aclose()
            raise TransportError(f"the gateway did not start: {error or 'server exited'}")
        return self

    async def wait(self) -> None:
        """Until :meth:`stop` has stopped the server."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def stop(self) -> None:
        # the gateway first: it closes each socket cleanly, which uvicorn would only cut
        await self.gateway.aclose()
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> GatewayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
