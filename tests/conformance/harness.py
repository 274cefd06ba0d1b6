"""Participants for the conformance scenarios: a Yjs text behind a real client, with its events.

Every participant records every event of its document (a background task drains the event
queue) and wakes an :class:`Activity` shared by the whole scenario, so tests wait on conditions
("the victim rejected a message with code 212", "both texts are equal") instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pycrdt

import secsync
from secsync.config import SecsyncConfig
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.changes import serialize_changes
from secsync.protocol.events import (
    Event,
    GapDetected,
    MessageRejected,
    RecoveryNeeded,
    SnapshotApplied,
    UpdateApplied,
)
from secsync.protocol.messages import Snapshot, Update, UpdatePublicData
from secsync.transport import Document, SecsyncClient, jetstream
from tests.factories import plain_yjs_doc

KEY = crypto.generate_key()
WAIT = 15.0  # generous: other test runs share this machine

# Fast healing, short timeouts: every scenario ends by itself within seconds.
FAST = SecsyncConfig(
    batch_interval=0.002,
    publish_timeout=2.0,
    request_timeout=2.0,
    retry_initial=0.05,
    retry_max=0.5,
    gap_refetch_after=0.2,
    gap_recover_after=1.0,
    idle_heartbeat=1.0,
    presence_interval=0.01,
    presence_heartbeat=0.5,
    presence_timeout=5.0,
    # a stream and subjects of their own: nothing shared with other tests on the same broker
    stream_name="CONFORMANCE",
    subject_root="conformance",
)


def new_doc_id(label: str) -> str:
    return f"conformance-{label}-{uuid.uuid4().hex[:12]}"


class Activity:
    """Set whenever any participant sees an event; tests wait on predicates with it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def poke(self) -> None:
        self._event.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait until ``predicate()`` holds; re-checked on every event (and every 0.25 s)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), 0.25)


class Peer:
    """A participant: signing key, a pycrdt text, an open document and all of its events."""

    def __init__(self, name: str, activity: Activity) -> None:
        self.name = name
        self.activity = activity
        self.signer = crypto.SigningKeyPair.generate()
        self.ydoc: pycrdt.Doc = plain_yjs_doc()
        self.text = self.ydoc.get("text", type=pycrdt.Text)
        self.events: list[Event] = []
        self.client: SecsyncClient | None = None
        self.doc: Document | None = None
        self._pump: asyncio.Task[None] | None = None
        self.history: list[str] = []
        """Every content this participant's text showed after an event (to catch wrong content)."""
        self.presence_history: list[dict[bytes, Any]] = []
        """The peers' presence states after each event."""

    @property
    def content(self) -> str:
        return str(self.text)

    async def connect(
        self, url: str, config: SecsyncConfig = FAST, **nats_options: Any
    ) -> SecsyncClient:
        self.client = await secsync.connect(url, config=config, name=self.name, **nats_options)
        return self.client

    async def open(self, doc_id: str, *, key: bytes = KEY) -> Document:
        assert self.client is not None
        self.doc = await self.client.open(doc_id, key=key, signing_key=self.signer, crdt=self.ydoc)
        self._pump = asyncio.create_task(self._drain(self.doc))
        return self.doc

    async def _drain(self, doc: Document) -> None:
        while True:
            event = await doc.next_event()
            self.events.append(event)
            self.history.append(self.content)
            self.presence_history.append(dict(doc.presence.states))
            self.activity.poke()

    async def type(self, text: str, *, at: int | None = None, flush: bool = True) -> None:
        self.text.insert(len(self.text) if at is None else at, text)
        if flush:
            assert self.doc is not None
            await self.doc.flush(WAIT)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.client is not None:
            await self.client.close()

    # --- what happened --------------------------------------------------------------------

    def rejected(self) -> list[MessageRejected]:
        return [e for e in self.events if isinstance(e, MessageRejected)]

    def codes(self) -> list[int]:
        return [e.error.code for e in self.rejected()]

    def has_code(self, code: int) -> bool:
        return code in self.codes()

    def of(self, kind: type[Any] | tuple[type[Any], ...]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def recovered(self) -> bool:
        return any(isinstance(e, SnapshotApplied) and e.recovered for e in self.events)

    def gap_events(self) -> list[Event]:
        return [
            e
            for e in self.events
            if isinstance(e, GapDetected | RecoveryNeeded)
            or (isinstance(e, MessageRejected) and e.error.code == 202)
        ]

    def applied_from(self, author: bytes) -> list[UpdateApplied]:
        return [e for e in self.of(UpdateApplied) if e.author == author]


async def converge(activity: Activity, peers: Iterable[Peer], timeout: float = WAIT) -> str:
    """Wait until every peer shows the same text; return it."""
    group = list(peers)
    await activity.until(lambda: len({p.content for p in group}) == 1, timeout)
    return group[0].content


def yjs_insert(text: str) -> bytes:
    """A Yjs update inserting ``text`` into an empty text (independent of everyone's content)."""
    doc: pycrdt.Doc = plain_yjs_doc()
    doc.get("text", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


def forged_update(
    doc_id: str,
    snapshot_id: bytes,
    clock: int,
    text: str,
    *,
    signer: crypto.SigningKeyPair | None = None,
    key: bytes = KEY,
) -> Update:
    """A genuine-looking update by ``signer`` (a new author by default)."""
    signer = signer or crypto.SigningKeyPair.generate()
    public = UpdatePublicData(doc_id, signer.public_key, snapshot_id, clock)
    return sealing.seal(public, serialize_changes([yjs_insert(text)]), key, signer)


async def stored_messages(client: SecsyncClient, doc: Document) -> list[jetstream.StoredMessage]:
    return await jetstream.messages_after(
        client.nc, client.config.stream_name, doc.subjects.stored, 1, timeout=5
    )


async def stored_decoded(
    client: SecsyncClient, doc: Document
) -> list[tuple[int, Snapshot | Update]]:
    out: list[tuple[int, Snapshot | Update]] = []
    for stored in await stored_messages(client, doc):
        message = wire.decode(stored.data, doc_id=doc.doc_id)
        assert isinstance(message, Snapshot | Update)
        out.append((stored.sequence, message))
    return out


async def inject(client: SecsyncClient, doc: Document, message: Snapshot | Update | bytes) -> int:
    """Store a crafted message on the document's subject, as a misbehaving broker can."""
    if isinstance(message, bytes):
        data, subject = message, doc.subjects.update
    else:
        data = wire.encode(message, include_doc_id=False)
        subject = doc.subjects.snapshot if isinstance(message, Snapshot) else doc.subjects.update
    seq, _ = await jetstream.publish(client.js, subject, data, timeout=5)
    return seq


class World:
    """The cast of one scenario: a real broker, the relay in front of it, the participants."""

    def __init__(self, broker_url: str, relay: Any) -> None:
        self.broker_url = broker_url
        self.relay = relay
        self.activity = Activity()
        self.peers: list[Peer] = []

    async def peer(
        self,
        name: str,
        doc_id: str,
        *,
        via_relay: bool = True,
        config: SecsyncConfig = FAST,
        open_doc: bool = True,
    ) -> Peer:
        peer = Peer(name, self.activity)
        self.peers.append(peer)
        await peer.connect(self.relay.url if via_relay else self.broker_url, config)
        if open_doc:
            await peer.open(doc_id)
        return peer

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        await self.activity.until(predicate, timeout)

    async def converge(self, peers: Iterable[Peer], timeout: float = WAIT) -> str:
        return await converge(self.activity, peers, timeout)

    async def close(self) -> None:
        for peer in self.peers:
            with contextlib.suppress(Exception):
                await peer.close()
