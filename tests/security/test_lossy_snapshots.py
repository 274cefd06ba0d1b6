"""Hostile members and snapshots, through a real nats-server: a member who holds the document
key stores validly signed snapshots that leave content out, claim clocks nobody reached, or
wait for parents that never come. Online clients report the lossy snapshot's author and repair
it, authors keep their changes, fresh readers (after compaction too) get the full content, and
what is held for missing parents stays within its byte budget."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pycrdt
import pytest
from automerge import core

import secsync
from secsync.config import SecsyncConfig
from secsync.crdt.automerge import AutomergeAdapter
from secsync.crdt.yjs import YjsAdapter
from secsync.errors import SnapshotBudgetError
from secsync.protocol import crypto, sealing
from secsync.protocol.events import (
    Event,
    MessageRejected,
    SnapshotApplied,
    SnapshotIncomplete,
    SnapshotStored,
)
from secsync.protocol.messages import Snapshot, SnapshotPublicData
from secsync.transport import Document
from secsync.transport.compaction import compact_document
from secsync.transport.subjects import DocumentSubjects
from tests.factories import automerge_text, automerge_type, plain_yjs_doc, yjs_change
from tests.security.forge import native
from tests.transport.helpers import KEY

FAST = SecsyncConfig(
    batch_interval=0.005,
    publish_timeout=2.0,
    request_timeout=2.0,
    gap_refetch_after=0.2,
    gap_recover_after=0.4,
)


class _Yjs(YjsAdapter):
    """A Yjs participant's adapter; a hostile one writes ``state`` as its snapshots."""

    def __init__(self) -> None:
        super().__init__(plain_yjs_doc())
        self.text = self.doc.get("text", type=pycrdt.Text)
        self.state: bytes | None = None

    def type(self, chars: str) -> None:
        self.text.insert(len(self.text), chars)

    @property
    def content(self) -> str:
        return str(self.text)

    def encode_state(self) -> bytes:
        return self.state if self.state is not None else super().encode_state()

    @staticmethod
    def empty() -> bytes:
        return plain_yjs_doc().get_update()


class _Automerge(AutomergeAdapter):
    def __init__(self) -> None:
        super().__init__(core.Document())
        self.state: bytes | None = None

    def type(self, chars: str) -> None:
        automerge_type(self.doc, len(self.content), chars)

    @property
    def content(self) -> str:
        return automerge_text(self.doc)

    def encode_state(self) -> bytes:
        return self.state if self.state is not None else super().encode_state()

    @staticmethod
    def empty() -> bytes:
        return core.Document().save()


KINDS: dict[str, Callable[[], _Yjs | _Automerge]] = {"yjs": _Yjs, "automerge": _Automerge}


class _Member:
    """A participant on its own connection, keeping every event its document emits."""

    def __init__(self, kind: str, doc: Document, crdt: _Yjs | _Automerge, signer: Any) -> None:
        self.kind = kind
        self.doc = doc
        self.crdt = crdt
        self.signer = signer
        self.events: list[Event] = []

    async def type(self, chars: str) -> None:
        self.crdt.type(chars)
        self.doc.notify_changed()
        await self.doc.flush(10)

    def drain(self) -> list[Event]:
        while not self.doc._events.empty():
            self.events.append(self.doc._events.get_nowait())
        return self.events

    def incomplete(self) -> list[SnapshotIncomplete]:
        return [e for e in self.drain() if isinstance(e, SnapshotIncomplete)]


async def _open(
    stack: AsyncExitStack, url: str, kind: str, doc_id: str, config: SecsyncConfig = FAST
) -> _Member:
    client = await stack.enter_async_context(secsync.connect(url, config=config))
    crdt = KINDS[kind]()
    signer = crypto.SigningKeyPair.generate()
    doc = await client.open(doc_id, key=KEY, signing_key=signer, crdt=crdt)
    return _Member(kind, doc, crdt, signer)


async def _until(members: list[_Member], predicate: Callable[[], bool], timeout: float = 20):
    """Wait until ``predicate`` holds, re-checking after each event of any member (kept)."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                waiting = {asyncio.ensure_future(m.doc.next_event()): m for m in members}
                try:
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in waiting:
                        task.cancel()
                for task in done:
                    waiting[task].events.append(task.result())
    except TimeoutError:
        raise AssertionError(f"still waiting: {[m.events[-5:] for m in members]}") from None


async def _fresh_content(url: str, kind: str, doc_id: str) -> str:
    async with AsyncExitStack() as stack:
        reader = await _open(stack, url, kind, doc_id)
        return reader.crdt.content


def _repaired_on(member: _Member, lossy: bytes) -> bool:
    active = member.doc.session.active_snapshot
    return active is not None and active.parent_snapshot_id == lossy


@pytest.mark.parametrize("kind", list(KINDS))
async def test_an_empty_snapshot_is_reported_repaired_and_fresh_readers_see_everything(
    broker, kind: str
) -> None:
    doc_id = f"lossy-{kind}"
    async with AsyncExitStack() as stack:
        alice = await _open(stack, broker.url, kind, doc_id)
        await alice.type("honest")
        bob = await _open(stack, broker.url, kind, doc_id)
        await bob.type(" and bob")
        await _until([alice], lambda: alice.crdt.content == "honest and bob")
        mallory = await _open(stack, broker.url, kind, doc_id)
        await _until([mallory], lambda: mallory.crdt.content == "honest and bob")

        # a validly signed snapshot with nothing in it, on the latest, claiming the truth
        mallory.crdt.state = mallory.crdt.empty()
        mallory.doc.write_snapshot()
        await _until(
            [alice, bob],
            lambda: bool(alice.incomplete()) and bool(bob.incomplete()),
        )
        (seen,) = alice.incomplete()
        assert seen.author == mallory.signer.public_key
        assert bob.incomplete()[0].author == mallory.signer.public_key
        assert seen.repair
        # one complete snapshot on top of the lossy one, which everybody applies
        await _until(
            [alice, bob, mallory],
            lambda: all(_repaired_on(m, seen.snapshot_id) for m in (alice, bob, mallory)),
        )
        assert alice.crdt.content == bob.crdt.content == "honest and bob"
        # edits after it reach everybody, fresh readers too
        await bob.type("!")
        await _until([alice, mallory], lambda: alice.crdt.content == "honest and bob!")
        await alice.doc.flush(10)
        assert len(alice.incomplete()) == len(bob.incomplete()) == 1  # no repair loop
        repairs = 0
        for member in (alice, bob):
            events = member.drain()
            after = events[events.index(member.incomplete()[0]) + 1 :]
            repairs += sum(isinstance(e, SnapshotStored) for e in after)
        assert repairs == 1  # one repair won; the other lost the race and stopped

        assert await _fresh_content(broker.url, kind, doc_id) == "honest and bob!"
        # compaction drops what the latest snapshot supersedes: nothing is lost with it
        result = await compact_document(alice.doc._client.nc, doc_id, config=FAST)
        assert result.purged > 0
    assert await _fresh_content(broker.url, kind, doc_id) == "honest and bob!"


async def test_a_claim_of_a_billion_does_not_drop_the_authors_changes(broker) -> None:
    doc_id = "lossy-billion"
    async with AsyncExitStack() as stack:
        alice = await _open(stack, broker.url, "yjs", doc_id)
        await alice.type("base")
        mallory = await _open(stack, broker.url, "yjs", doc_id)
        await _until([mallory], lambda: mallory.crdt.content == "base")
        await mallory.doc.pause_receiving()
        await alice.type(" more")  # confirmed on the snapshot; mallory does not see it
        # mallory's snapshot holds only "base" but claims alice's clocks up to 10**9
        parent = mallory.doc.session.active_snapshot
        assert parent is not None
        public = SnapshotPublicData(
            doc_id=doc_id,
            pub_key=mallory.signer.public_key,
            snapshot_id=crypto.generate_id(),
            parent_snapshot_id=parent.snapshot_id,
            parent_snapshot_proof=parent.child_proof(),
            parent_snapshot_update_clocks={alice.signer.public_key: 10**9},
        )
        forged = sealing.seal(public, mallory.crdt.doc.get_update(), KEY, mallory.signer)
        js = mallory.doc._client.js
        await js.publish(DocumentSubjects.of(doc_id).snapshot, native(forged))
        await _until([alice], lambda: bool(alice.incomplete()))
        (seen,) = alice.incomplete()
        assert seen.author == mallory.signer.public_key
        assert seen.resent_changes == 1
        await alice.doc.flush(10)
        assert alice.crdt.content == "base more"
        # what she writes next goes on with clocks on the new snapshot, and is read
        await alice.type("!")
        bob = await _open(stack, broker.url, "yjs", doc_id)
        assert bob.crdt.content == "base more!"
    assert await _fresh_content(broker.url, "yjs", doc_id) == "base more!"


async def test_honest_concurrent_writers_with_snapshots_raise_no_event(broker) -> None:
    config = SecsyncConfig(
        batch_interval=0.002, publish_timeout=2.0, request_timeout=2.0, snapshot_after_updates=4
    )
    doc_id = "lossy-honest"
    async with AsyncExitStack() as stack:
        alice = await _open(stack, broker.url, "yjs", doc_id, config)
        await alice.type("start ")
        bob = await _open(stack, broker.url, "yjs", doc_id, config)
        members = [alice, bob]
        for step in range(40):
            for index, member in enumerate(members):
                member.crdt.type(f"{index}.{step} ")  # both edit at once, no waiting
                if step % 9 == index:
                    member.doc.write_snapshot()
            await asyncio.sleep(0)  # let the senders run between rounds (no waiting on time)
        await asyncio.gather(alice.doc.flush(20), bob.doc.flush(20))
        await _until(members, lambda: alice.crdt.content == bob.crdt.content, timeout=30)
        applied = [e for m in members for e in m.drain() if isinstance(e, SnapshotApplied)]
        stored = [e for m in members for e in m.drain() if isinstance(e, SnapshotStored)]
        assert len(applied) + len(stored) >= 4  # snapshots were made while both wrote
        assert not alice.incomplete() and not bob.incomplete()
        assert all("0.39" in m.crdt.content and "1.39" in m.crdt.content for m in members)
    assert await _fresh_content(broker.url, "yjs", doc_id) == alice.crdt.content


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_a_flood_of_snapshots_with_unknown_parents_is_held_within_its_budget(
    broker,
) -> None:
    budget = 2 * 1024 * 1024
    config = SecsyncConfig(
        batch_interval=0.005,
        publish_timeout=2.0,
        request_timeout=2.0,
        max_held_snapshot_bytes=budget,
    )
    doc_id = "lossy-held"
    async with AsyncExitStack() as stack:
        alice = await _open(stack, broker.url, "yjs", doc_id, config)
        await alice.type("honest")
        bob = await _open(stack, broker.url, "yjs", doc_id, config)
        content = yjs_change(os.urandom(200_000).hex())[0]  # 400 KB each
        js = alice.doc._client.js
        subject = DocumentSubjects.of(doc_id).snapshot
        last = None
        mallories = set()
        for _ in range(14):
            # an identity each: one author's flood is rate-limited before it is held at all
            mallory = crypto.SigningKeyPair.generate()
            mallories.add(mallory.public_key)
            public = SnapshotPublicData(
                doc_id=doc_id,
                pub_key=mallory.public_key,
                snapshot_id=crypto.generate_id(),
                parent_snapshot_id=crypto.generate_id(),  # nobody will ever see it
                parent_snapshot_proof=os.urandom(32),
                parent_snapshot_update_clocks={},
            )
            snapshot: Snapshot = sealing.seal(public, content, KEY, mallory)
            last = await js.publish(subject, native(snapshot))
        assert last is not None
        await _until([bob], lambda: bob.doc.last_sequence >= last.seq, timeout=30)
        held = bob.doc.session.held_snapshot_bytes
        assert 0 < held <= budget
        evicted = [
            e
            for e in bob.drain()
            if isinstance(e, MessageRejected) and isinstance(e.error, SnapshotBudgetError)
        ]
        assert evicted and all(e.author in mallories for e in evicted)
        print(f"held {held} bytes of 14 x {len(content)}; peak RSS {_rss_mb():.0f} MB")
        # honest edits keep flowing
        await alice.type(", still")
        await _until([bob], lambda: bob.crdt.content == "honest, still")
        assert bob.doc.session.held_snapshot_bytes <= budget
