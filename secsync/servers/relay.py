"""A TCP relay in this process in front of every gateway of a super-cluster, so that the link
between regions can be cut and restored while every server keeps running (see
:meth:`secsync.servers.supercluster.SuperCluster.partition`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from secsync.errors import TransportError
from secsync.servers.binary import LOOPBACK

_RELAY_TIMEOUT = 10.0
_T = TypeVar("_T")


class GatewayRelay:
    """TCP relays on loopback, one per gateway listener, that can drop and refuse connections.

    Runs an event loop in a daemon thread of its own. :meth:`add` listens on a free port and
    forwards every connection to a target port; :meth:`cut` drops every relayed connection and
    makes new ones fail at once (accepted, then closed), :meth:`restore` relays again.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="secsync-gateway-relay", daemon=True
        )
        self._servers: list[asyncio.Server] = []
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut = False
        self._closed = False
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def connections(self) -> int:
        """Relayed connections open now."""
        return len(self._links) // 2

    def add(self, target_port: int) -> int:
        """Relay a new free loopback port to ``target_port``; the new port."""
        return self._call(self._add(target_port))

    def cut(self) -> int:
        """Drop every relayed connection and refuse new ones; how many were dropped."""
        return self._call(self._set_cut(True))

    def restore(self) -> None:
        """Relay new connections again."""
        self._call(self._set_cut(False))

    def close(self) -> None:
        """Stop listening, drop every connection, end the thread."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_RELAY_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    def _refusing(self) -> bool:
        return self._cut

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._closed and not self._loop.is_running():
            coro.close()
            raise TransportError("the gateway relay is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_RELAY_TIMEOUT)

    async def _add(self, target_port: int) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._relay(reader, writer, target_port)

        server = await asyncio.start_server(handle, LOOPBACK, 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _set_cut(self, cut: bool) -> int:
        self._cut = cut
        dropped = 0
        if cut:
            dropped = self.connections
            for writer in list(self._links):
                writer.transport.abort()
        return dropped

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target_port: int
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._refusing():
                return
            try:
                up_reader, upstream = await asyncio.open_connection(LOOPBACK, target_port)
            except OSError:
                return  # the server is down: the dialer sees the connection closed
            if self._refusing():  # cut while dialing
                return
            self._links.update((writer, upstream))
            await asyncio.gather(
                self._pipe(reader, upstream), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._links.discard(end)
                    end.transport.abort()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()  # one side gone: drop the other, as a cut cable would

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._links):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
