"""Closed groups against an attacker who can publish on the document's subjects, through a
real nats-server: an outsider, a removed admin, an insider writer. Trust is anchored in the
founders; membership is a chain of admin signatures carried by every snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pycrdt
import pytest

import secsync
from secsync.access.group import Group
from secsync.access.membership import Role
from secsync.config import SecsyncConfig
from secsync.errors import SecsyncError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.events import Event, MessageRejected, RecoveryNeeded
from secsync.protocol.messages import Snapshot, Update
from secsync.transport import Document, jetstream
from secsync.transport.subjects import DocumentSubjects
from tests.factories import plain_yjs_doc
from tests.security.forge import group_snapshot, native, op, seal_to, update_on

CONFIG = SecsyncConfig(batch_interval=0.002, gap_refetch_after=0.2, gap_recover_after=0.5)


class Member:
    def __init__(self, name: str) -> None:
        self.name = name
        self.signer = crypto.SigningKeyPair.generate()
        self.ydoc = plain_yjs_doc()
        self.text = self.ydoc.get("text", type=pycrdt.Text)
        self.events: list[Event] = []
        self.group: Group
        self.doc: Document

    @property
    def key(self) -> bytes:
        return self.signer.public_key

    async def open(self, client: secsync.SecsyncClient, doc_id: str, founders: dict) -> None:
        self.group = Group(self.signer, founders)
        self.doc = await client.open(
            doc_id, key=self.group, policy=self.group, signing_key=self.signer, crdt=self.ydoc
        )

    async def watch(self, predicate: Callable[[], bool], timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.events.append(await self.doc.next_event())

    def drain(self) -> list[Event]:
        while not self.doc._events.empty():
            self.events.append(self.doc._events.get_nowait())
        return self.events

    def codes(self) -> set[int]:
        return {e.error.code for e in self.drain() if isinstance(e, MessageRejected)}


async def _stored(client: secsync.SecsyncClient, doc_id: str) -> list[Snapshot | Update]:
    subjects = DocumentSubjects.of(doc_id)
    raw = await jetstream.messages_scoped(
        client.js, client.config.stream_name, subjects.stored, 1, timeout=2.0
    )
    out: list[Snapshot | Update] = []
    for m in raw:
        try:
            decoded = wire.decode(m.data, doc_id=doc_id)
        except SecsyncError:
            continue
        assert isinstance(decoded, Snapshot | Update)
        out.append(decoded)
    return out


def _roles(**members: tuple[Member, Role]) -> dict[bytes, Role]:
    return {m.key: role for m, role in members.values()}


async def test_an_outsider_cannot_take_the_group_over_through_recovery(broker) -> None:
    doc_id = "trust-recovery"
    alice, wendy = Member("alice"), Member("wendy")
    founders = _roles(a=(alice, "admin"), w=(wendy, "writer"))
    async with (
        secsync.connect(broker.url, config=CONFIG) as c1,
        secsync.connect(broker.url, config=CONFIG) as c2,
        secsync.connect(broker.url, config=CONFIG) as attacker,
    ):
        await alice.open(c1, doc_id, founders)
        alice.text.insert(0, "written before the attack")
        await alice.doc.flush(5)
        await wendy.open(c2, doc_id, founders)
        assert str(wendy.text) == "written before the attack"
        epoch = alice.doc.session.active_snapshot

        # Mallory: a roster naming herself admin, a key of her choosing sealed to everyone,
        # on a parent nobody knows, and an update on a snapshot nobody has, to force recovery.
        mallory = crypto.SigningKeyPair.generate()
        key = crypto.generate_key()
        everyone = [alice.key, wendy.key, mallory.public_key]
        sealed = seal_to(everyone, key)
        genesis = op(
            mallory,
            b"",
            [(mallory.public_key, "admin"), (alice.key, "writer"), (wendy.key, "writer")],
            key,
            sealed,
        )
        forged = group_snapshot(
            mallory, doc_id, [genesis], key, sealed, parent_id=crypto.generate_id()
        )
        subjects = DocumentSubjects.of(doc_id)
        await attacker.js.publish(subjects.snapshot, native(forged))
        await attacker.js.publish(
            subjects.update, native(update_on(mallory, doc_id, crypto.generate_id(), key))
        )
        for member in (alice, wendy):
            await member.watch(
                lambda m=member: (
                    any(isinstance(e, RecoveryNeeded) for e in m.events) and 1003 in m.codes()
                )
            )
            assert member.doc.session.active_snapshot == epoch  # not the forged one
            assert mallory.public_key not in member.group.members

        alice.text.insert(len(alice.text), ", and after it")
        await alice.doc.flush(5)
        await wendy.watch(lambda: str(wendy.text) == "written before the attack, and after it")
        for message in await _stored(attacker, doc_id):
            if message.author == mallory.public_key:
                continue
            with pytest.raises(SecsyncError):  # nothing honest is sealed under Mallory's key
                sealing.open_sealed(message, key)

        # A fresh device of Wendy's is not taken over either.
        async with secsync.connect(broker.url, config=CONFIG) as c3:
            fresh = Member("wendy")
            fresh.signer = wendy.signer
            await fresh.open(c3, doc_id, founders)
            assert str(fresh.text) == "written before the attack, and after it"
            assert fresh.group.members == founders
            assert 1003 in fresh.codes()


async def test_a_removed_admin_cannot_fork_or_replay_its_way_back(broker) -> None:
    doc_id = "trust-removed-admin"
    alice, xavier, wendy = Member("alice"), Member("xavier"), Member("wendy")
    founders = _roles(a=(alice, "admin"), x=(xavier, "admin"), w=(wendy, "writer"))
    async with (
        secsync.connect(broker.url, config=CONFIG) as c1,
        secsync.connect(broker.url, config=CONFIG) as c2,
        secsync.connect(broker.url, config=CONFIG) as c3,
    ):
        await alice.open(c1, doc_id, founders)
        alice.text.insert(0, "founded")
        await alice.doc.flush(5)
        await xavier.open(c2, doc_id, founders)
        await wendy.open(c3, doc_id, founders)
        alice.group.remove(xavier.key)
        alice.doc.write_snapshot()
        await alice.doc.flush(5)
        await xavier.watch(lambda: 1004 in xavier.codes())  # the removal reached him
        await wendy.watch(lambda: xavier.key not in wendy.group.members)
        removal = alice.doc.session.active_snapshot
        assert removal is not None

        # What Xavier still holds: the epoch before his removal, its chain and its key.
        before = xavier.doc.session.active_snapshot
        assert before is not None and before != removal
        old = xavier.group._epochs[xavier.group._active]  # type: ignore[index]
        key = crypto.generate_key()
        sealed = seal_to([xavier.key, wendy.key], key)
        coup = op(xavier.signer, old.links[-1], [(alice.key, None)], key, sealed)
        # a child of the removal (he may not write there) and a sibling of it (he could, once)
        child = group_snapshot(
            xavier.signer,
            doc_id,
            [*old.chain, coup],
            key,
            sealed,
            text="xavier rules",
            parent=removal,
        )
        sibling = group_snapshot(
            xavier.signer,
            doc_id,
            [*old.chain, coup],
            key,
            sealed,
            text="xavier rules",
            parent=before,
        )
        stale = group_snapshot(
            xavier.signer,
            doc_id,
            list(old.chain),
            old.key,
            old.sealed,
            text="the old days",
            parent=child.info(),
        )
        subjects = DocumentSubjects.of(doc_id)
        for forged in (child, sibling):
            await c2.js.publish(subjects.snapshot, native(forged))
        ack = await c2.js.publish(subjects.snapshot, native(stale))

        await wendy.watch(lambda: wendy.doc.last_sequence >= ack.seq)
        await wendy.watch(lambda: {114, 1003} <= wendy.codes())
        assert wendy.group.members == {alice.key: "admin", wendy.key: "writer"}
        assert wendy.doc.session.active_snapshot == removal
        assert str(wendy.text) == "founded"

        async with secsync.connect(broker.url, config=CONFIG) as c4:
            fresh = Member("wendy")
            fresh.signer = wendy.signer
            await fresh.open(c4, doc_id, founders)
            assert fresh.doc.session.active_snapshot == removal
            assert fresh.group.members == {alice.key: "admin", wendy.key: "writer"}
            assert str(fresh.text) == "founded"
            # the child (not his to write), the fork and the replay: all passed over, reported
            assert {114, 1003, 116} <= fresh.codes()


async def test_a_writer_cannot_rekey_the_group_around_a_member(broker) -> None:
    doc_id = "trust-writer-rekey"
    alice, wendy, rita = Member("alice"), Member("wendy"), Member("rita")
    founders = _roles(a=(alice, "admin"), w=(wendy, "writer"), r=(rita, "reader"))
    async with (
        secsync.connect(broker.url, config=CONFIG) as c1,
        secsync.connect(broker.url, config=CONFIG) as c2,
        secsync.connect(broker.url, config=CONFIG) as c3,
    ):
        for member, client in ((alice, c1), (wendy, c2), (rita, c3)):
            await member.open(client, doc_id, founders)
            if member is alice:
                alice.text.insert(0, "shared")
                await alice.doc.flush(5)
        # Wendy keeps the roster and the chain but seals a key of hers to all but Rita.
        current = wendy.group._epochs[wendy.group._active]  # type: ignore[index]
        key = crypto.generate_key()
        sealed = seal_to([alice.key, wendy.key], key)
        rekeyed = group_snapshot(
            wendy.signer,
            doc_id,
            list(current.chain),
            key,
            sealed,
            text="shared",
            parent=wendy.doc.session.active_snapshot,
        )
        ack = await c2.js.publish(DocumentSubjects.of(doc_id).snapshot, native(rekeyed))
        await alice.watch(lambda: alice.doc.last_sequence >= ack.seq and 1003 in alice.codes())
        await rita.watch(lambda: rita.doc.last_sequence >= ack.seq)

        alice.text.insert(len(alice.text), " and more")
        await alice.doc.flush(5)
        await rita.watch(lambda: str(rita.text) == "shared and more")  # not excluded
        async with secsync.connect(broker.url, config=CONFIG) as c4:
            fresh = Member("rita")
            fresh.signer = rita.signer
            await fresh.open(c4, doc_id, founders)
            assert str(fresh.text) == "shared and more"


async def test_a_device_without_the_founders_trusts_nothing(broker) -> None:
    """No trust on first use: a device that was not told the founders refuses the group."""
    doc_id = "trust-no-anchor"
    alice, wendy = Member("alice"), Member("wendy")
    founders = _roles(a=(alice, "admin"), w=(wendy, "writer"))
    async with (
        secsync.connect(broker.url, config=CONFIG) as c1,
        secsync.connect(broker.url, config=CONFIG) as c2,
    ):
        await alice.open(c1, doc_id, founders)
        alice.text.insert(0, "anchored")
        await alice.doc.flush(5)
        before = await _stored(c1, doc_id)
        with pytest.raises(secsync.SecsyncError) as caught:
            await wendy.open(c2, doc_id, {wendy.key: "admin"})  # the wrong anchor
        assert caught.value.code == 1003
        assert await _stored(c1, doc_id) == before  # and it wrote nothing
