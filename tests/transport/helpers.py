"""Waiting on documents, event by event (never on the clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from secsync.transport import Document


async def until(
    docs: Document | list[Document], predicate: Callable[[], bool], timeout: float = 15.0
) -> None:
    """Wait until ``predicate`` holds, re-checking after each event of any of ``docs``."""
    docs = docs if isinstance(docs, list) else [docs]
    async with asyncio.timeout(timeout):
        while not predicate():
            waiting = [asyncio.ensure_future(d.next_event()) for d in docs]
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waiting:
                    task.cancel()
