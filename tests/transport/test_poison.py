"""Poisoned content from a member, through a real nats-server: an update and a snapshot whose
Yjs content nests an array 28,000 deep (which overflows yrs's stack when applied) are signed and
sealed with the document key. Readers reject them with the typed event and go on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pycrdt

import secsync
from secsync.config import SecsyncConfig
from secsync.crdt.yjs import YjsAdapter
from secsync.errors import SnapshotApplyError, UpdateApplyError
from secsync.protocol.events import Event, MessageRejected
from tests.crdt.yjs_build import deep_any_update
from tests.transport.helpers import KEY, YClient, open_y, until

FAST = SecsyncConfig(
    batch_interval=0.005,
    publish_timeout=2.0,
    request_timeout=2.0,
    gap_refetch_after=0.2,
    gap_recover_after=0.4,
)
POISON = deep_any_update(28_000)


class Mallory(YClient):
    """A member whose adapter sends whatever bytes it is given as changes or as the state."""

    def __init__(self) -> None:
        super().__init__()
        self.adapter = _Hostile(self.ydoc)


class _Hostile(YjsAdapter):
    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        super().__init__(doc)
        self.queued: list[bytes] = []
        self.state: bytes | None = None

    def take_local_changes(self) -> list[bytes]:
        queued, self.queued = self.queued, []
        return queued + super().take_local_changes()

    def encode_state(self) -> bytes:
        return self.state if self.state is not None else super().encode_state()


async def _open_mallory(client: secsync.SecsyncClient, doc_id: str, who: Mallory) -> Any:
    return await client.open(doc_id, key=KEY, signing_key=who.signer, crdt=who.adapter)


def _rejected(events: list[Event]) -> list[int]:
    return [e.error.code for e in events if isinstance(e, MessageRejected)]


class _Recorder:
    """Keeps every event a document emits while the test waits on it."""

    def __init__(self, doc: secsync.Document) -> None:
        self.doc = doc
        self.events: list[Event] = []

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self.events.append(await self.doc.next_event())
        except TimeoutError:
            raise AssertionError(f"still waiting after {self.events}") from None

    def rejected(self) -> list[int]:
        while not self.doc._events.empty():
            self.events.append(self.doc._events.get_nowait())
        return _rejected(self.events)


async def _clients(stack: AsyncExitStack, url: str, count: int) -> list[secsync.SecsyncClient]:
    return [
        await stack.enter_async_context(secsync.connect(url, config=FAST)) for _ in range(count)
    ]


async def test_a_poison_update_is_rejected_live_and_on_load(broker) -> None:
    doc_id = "poisoned-update"
    async with AsyncExitStack() as stack:
        for_alice, for_bob, for_mallory = await _clients(stack, broker.url, 3)
        alice, bob, mallory = YClient(), YClient(), Mallory()
        alice_doc = await open_y(for_alice, doc_id, alice)
        alice.text.insert(0, "honest")
        await alice_doc.flush(5)
        bob_doc = await open_y(for_bob, doc_id, bob)
        assert bob.content == "honest"
        mallory_doc = await _open_mallory(for_mallory, doc_id, mallory)
        await until(mallory_doc, lambda: mallory.content == "honest")

        # One burst as bob sees it: the poison, then an honest update of the same member and
        # one of another.
        await bob_doc.pause_receiving()
        mallory.adapter.queued.append(POISON)
        mallory_doc.notify_changed()
        await mallory_doc.flush(5)
        mallory.text.insert(len(mallory.text), " and mallory")
        await mallory_doc.flush(5)
        await until(alice_doc, lambda: alice.content == "honest and mallory")
        alice.text.insert(0, "> ")
        await alice_doc.flush(5)
        bob_events = _Recorder(bob_doc)
        before = bob.ydoc.get_state()
        await bob_doc.resume_receiving()
        await bob_events.until(lambda: bob.content == "> honest and mallory")
        assert bob.ydoc.get_state() != before
        assert UpdateApplyError.code in bob_events.rejected()

        # the live reader goes on applying honest updates
        alice.text.insert(len(alice.text), ".")
        await alice_doc.flush(5)
        await until(bob_doc, lambda: bob.content == "> honest and mallory.")

    async with secsync.connect(broker.url, config=FAST) as client:
        carol = YClient()
        carol_doc = await open_y(client, doc_id, carol)
        carol_events = _Recorder(carol_doc)
        await carol_events.until(lambda: carol.content == "> honest and mallory.")
        assert UpdateApplyError.code in carol_events.rejected()


async def _poison_snapshot(stack: AsyncExitStack, url: str, doc_id: str) -> None:
    """Alice writes, Mallory stores a poison snapshot, Alice writes on; Bob follows it live."""
    for_alice, for_bob, for_mallory = await _clients(stack, url, 3)
    alice, bob, mallory = YClient(), YClient(), Mallory()
    alice_doc = await open_y(for_alice, doc_id, alice)
    alice.text.insert(0, "honest")
    await alice_doc.flush(5)
    bob_doc = await open_y(for_bob, doc_id, bob)
    mallory_doc = await _open_mallory(for_mallory, doc_id, mallory)
    await until(mallory_doc, lambda: mallory.content == "honest")
    bob_events = _Recorder(bob_doc)

    mallory.adapter.state = POISON
    mallory_doc.write_snapshot()
    await bob_events.until(lambda: SnapshotApplyError.code in bob_events.rejected())
    assert bob.content == "honest"

    alice.text.insert(len(alice.text), ", still")
    await alice_doc.flush(10)
    await bob_events.until(lambda: bob.content == "honest, still")


async def test_a_poison_snapshot_is_rejected_live(broker) -> None:
    async with AsyncExitStack() as stack:
        await _poison_snapshot(stack, broker.url, "poisoned-snapshot")


async def test_a_fresh_reader_passes_over_a_poison_snapshot(broker) -> None:
    async with AsyncExitStack() as stack:
        await _poison_snapshot(stack, broker.url, "poisoned-snapshot-load")
    async with secsync.connect(broker.url, config=FAST) as client:
        carol = YClient()
        carol_doc = await open_y(client, "poisoned-snapshot-load", carol)
        carol_events = _Recorder(carol_doc)
        assert SnapshotApplyError.code in carol_events.rejected()
        await carol_events.until(lambda: carol.content == "honest, still", timeout=5)
