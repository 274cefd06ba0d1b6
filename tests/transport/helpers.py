"""Shared by the transport tests: Yjs participants, and waiting on documents event by event
(never on the clock)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import pycrdt

import secsync
from secsync.config import SecsyncConfig
from secsync.protocol import crypto, wire
from secsync.protocol.session import DocumentSession
from secsync.transport import Document
from secsync.transport.subjects import DocumentSubjects

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


async def store_document(
    client: secsync.SecsyncClient, doc_id: str, updates: int, *, key: bytes = KEY
) -> str:
    """Store a snapshot and ``updates`` one-character updates of one author (sealed by a real
    session, published pipelined); the text they make."""
    ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = ydoc.get("text", type=pycrdt.Text)
    author = crypto.SigningKeyPair.generate()
    session = DocumentSession(
        doc_id,
        author,
        key,
        ydoc,
        config=SecsyncConfig(snapshot_after_updates=0, snapshot_after_bytes=0),
    )
    session.load(None, now=0.0)
    snapshot = session.create_snapshot()
    session.snapshot_stored(snapshot.snapshot_id, now=0.0)
    subjects = DocumentSubjects.of(doc_id)
    await client.js.publish(subjects.snapshot, wire.encode(snapshot, include_doc_id=False))
    pending: collections.deque[asyncio.Future[Any]] = collections.deque()
    for i in range(updates):
        text += "abcdefghij"[i % 10]
        (update,) = session.data_to_send()
        session.update_stored(snapshot.snapshot_id, update.clock)
        payload = wire.encode(update, include_doc_id=False)
        pending.append(await client.js.publish_async(subjects.update, payload))
        if len(pending) >= 256:
            await pending.popleft()
    while pending:
        await pending.popleft()
    return str(text)
