"""Shared by the transport tests: Yjs participants, and waiting on documents event by event
(never on the clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pycrdt

import secsync
from secsync.protocol import crypto
from secsync.transport import Document

KEY = crypto.generate_key()


class YClient:
    """A participant: a signing key and a pycrdt document with a text."""

    def __init__(self, signer: crypto.SigningKeyPair | None = None) -> None:
        self.signer = signer or crypto.SigningKeyPair.generate()
        self.ydoc: pycrdt.Doc = secsync.new_yjs_doc(self.signer)
        self.text = self.ydoc.get("text", type=pycrdt.Text)

    @property
    def content(self) -> str:
        return str(self.text)


async def open_y(client: secsync.SecsyncClient, doc_id: str, who: YClient) -> Document:
    return await client.open(doc_id, key=KEY, signing_key=who.signer, crdt=who.ydoc)


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
