"""Waiting in the transport's loops: :func:`wait_woken`, and the two primitives a document
holds (:class:`Signal`, :class:`EventQueue`), lighter than asyncio's ``Event`` and ``Queue``:
a client may hold thousands of idle documents, and those allocate their waiter storage (a
``deque`` each, three per queue) whether anyone waits or not."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from typing import Generic, TypeVar

T = TypeVar("T")


class Signal:
    """``asyncio.Event`` (``set``, ``clear``, ``is_set``, ``wait``) on the running loop, with no
    waiter storage until something waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class EventQueue(Generic[T]):
    """The part of ``asyncio.Queue`` a document uses (unbounded; ``put_nowait``,
    ``get_nowait``, ``get``, ``qsize``, ``empty``), on one deque and a :class:`Signal`."""

    __slots__ = ("_items", "_ready")

    def __init__(self) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._ready = Signal()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._ready.set()

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


async def wait_woken(event: asyncio.Event | Signal, timeout: float | None) -> None:
    """Return when ``event`` is set or after ``timeout`` seconds (``None``: no bound).

    If the event is set already, return after one turn of the event loop, so that a loop
    that keeps being woken still lets the others run. ``asyncio.timeout``, not ``wait_for``:
    on Python 3.11 ``wait_for`` can swallow a cancellation that arrives as the event is set,
    and a ``close()`` cancelling the loop would then wait for ever.
    """
    if event.is_set():
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with full jitter: many clients returning at once spread out."""
    return random.uniform(0, min(maximum, initial * 2**attempt))
