"""Waiting for an asyncio event in the transport's loops."""

from __future__ import annotations

import asyncio
import contextlib
import random


async def wait_woken(event: asyncio.Event, timeout: float | None) -> None:
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
