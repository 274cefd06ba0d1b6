"""Closed groups by user: roles belong to users, a member manages its own certified devices
without an admin, a removed device or a removed user's devices read and write nothing new.

The life of a user's devices runs through a real nats-server; the forged membership ops (a
member overreaching with a device op) are built by hand and handed to every member, the way a
member who can publish on the document's subjects would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import msgpack
import pycrdt
import pytest

import secsync
from secsync.access.group import Group
from secsync.access.membership import (
    GROUP_VERSION,
    GROUP_VERSION_DEVICES,
    MembershipOp,
    Role,
    epoch_commitment,
    seal_key,
    sealed_commitment,
)
from secsync.config import SecsyncConfig
from secsync.errors import MembershipError, SecsyncError
from secsync.protocol import crypto
from secsync.protocol.devices import Device, DeviceCertificate, UserIdentity
from secsync.protocol.events import Event, MessageRejected, SnapshotApplied, UpdateApplied
from secsync.protocol.messages import EphemeralPublicData, MessageKind, Snapshot
from secsync.protocol.session import DocumentSession
from secsync.transport import Document
from secsync.transport.subjects import DocumentSubjects
from tests.factories import DOC_ID, MemoryBroker, Participant, plain_yjs_doc
from tests.security.forge import group_snapshot, native, op, seal_to, update_on

CONFIG = SecsyncConfig(batch_interval=0.002, gap_refetch_after=0.2, gap_recover_after=0.5)


# --- through nats-server ----------------------------------------------------------------------


class Client:
    """One device (or a user signing as itself) with its group and document."""

    def __init__(self, me: Device | crypto.SigningKeyPair) -> None:
        self.me = me
        self.ydoc = plain_yjs_doc()
        self.text = self.ydoc.get("text", type=pycrdt.Text)
        self.events: list[Event] = []
        self.group: Group
        self.doc: Document

    @property
    def key(self) -> bytes:
        return self.me.public_key

    async def open(
        self, client: secsync.SecsyncClient, doc_id: str, founders: dict[bytes, Role]
    ) -> None:
        self.group = Group(self.me, founders)
        self.doc = await client.open(
            doc_id, key=self.group, policy=self.group, signing_key=self.me, crdt=self.ydoc
        )

    async def watch(self, predicate: Callable[[], bool], timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.events.append(await self.doc.next_event())

    async def write_snapshot(self) -> None:
        """Write a snapshot (a membership change) and wait until the broker stored it."""
        before = self.doc.session.active_snapshot
        self.doc.write_snapshot()
        await self.watch(
            lambda: (
                self.doc.session.active_snapshot != before
                and not self.doc.session.snapshot_requested
            )
        )

    def drain(self) -> list[Event]:
        while not self.doc._events.empty():
            self.events.append(self.doc._events.get_nowait())
        return self.events

    def codes(self) -> set[int]:
        return {e.error.code for e in self.drain() if isinstance(e, MessageRejected)}

    def applied_from(self, author: bytes) -> list[UpdateApplied]:
        return [e for e in self.drain() if isinstance(e, UpdateApplied) and e.author == author]


async def test_one_user_many_devices_without_an_admin(broker) -> None:
    doc_id = "devices-one-user"
    alice, bob = UserIdentity.generate(), UserIdentity.generate()
    founders: dict[bytes, Role] = {alice.public_key: "admin", bob.public_key: "writer"}
    admin = Client(alice.new_device("desk"))
    laptop, phone, tablet = (Client(bob.new_device(n)) for n in ("laptop", "phone", "tablet"))
    async with (
        secsync.connect(broker.url, config=CONFIG) as c2,
        secsync.connect(broker.url, config=CONFIG) as c3,
        secsync.connect(broker.url, config=CONFIG) as c4,
    ):
        # Alice founds the group with Bob (a user) and his laptop, then goes offline.
        async with secsync.connect(broker.url, config=CONFIG) as c1:
            await admin.open(c1, doc_id, founders)
            admin.group.add_device(laptop.me.certificate)  # type: ignore[union-attr]
            admin.text.insert(0, "founded")
            await admin.doc.flush(5)
            assert admin.group.devices_of(bob.public_key) == [laptop.key]
        await laptop.open(c2, doc_id, founders)
        assert str(laptop.text) == "founded"

        # Bob's laptop adds his phone: no admin online, the key stays the same.
        epoch = laptop.doc.session.active_snapshot
        assert epoch is not None
        key_before = laptop.group.snapshot_key(epoch)
        laptop.group.add_device(phone.me.certificate)  # type: ignore[union-attr]
        await laptop.write_snapshot()
        after = laptop.doc.session.active_snapshot
        assert after is not None and after != epoch
        assert laptop.group.snapshot_key(after) == key_before  # adding seals the current key
        await phone.open(c3, doc_id, founders)
        assert str(phone.text) == "founded"
        assert phone.group.user_of(phone.key) == bob.public_key

        # Both edit; each sees the other's changes attributed to Bob.
        laptop.text.insert(len(laptop.text), " +laptop")
        await laptop.doc.flush(5)
        await phone.watch(lambda: "+laptop" in str(phone.text))
        phone.text.insert(0, "phone+ ")
        await phone.doc.flush(5)
        await laptop.watch(lambda: "phone+" in str(laptop.text))
        assert [e.user for e in phone.applied_from(laptop.key)] == [bob.public_key]
        assert [e.user for e in laptop.applied_from(phone.key)] == [bob.public_key]
        assert laptop.doc.session.user_of(phone.key) == bob.public_key

        # The phone adds a third device, still without an admin.
        phone.group.add_device(tablet.me.certificate)  # type: ignore[union-attr]
        await phone.write_snapshot()
        await tablet.open(c4, doc_id, founders)
        assert str(tablet.text) == "phone+ founded +laptop"
        assert tablet.group.devices_of(bob.public_key) == sorted(
            [laptop.key, phone.key, tablet.key]
        )
        assert tablet.group.members == founders  # the roles are the users'

        # The laptop is lost: the phone removes it, which rotates the key; Bob stays.
        await laptop.watch(
            lambda: (
                laptop.group.devices_of(bob.public_key) == tablet.group.devices_of(bob.public_key)
            )
        )
        laptop.drain()
        phone.group.remove_device(laptop.key)
        await phone.write_snapshot()
        removal = phone.doc.session.active_snapshot
        assert removal is not None
        assert phone.group.snapshot_key(removal) != key_before
        assert phone.group.members == founders
        await laptop.watch(lambda: 1004 in laptop.codes())  # nothing sealed to it any more
        phone.text.insert(len(phone.text), " after the loss")
        await phone.doc.flush(5)
        await tablet.watch(lambda: str(tablet.text) == "phone+ founded +laptop after the loss")
        tablet.text.insert(0, "tablet ")
        await tablet.doc.flush(5)
        await phone.watch(lambda: str(phone.text).startswith("tablet "))
        assert [e.user for e in phone.applied_from(tablet.key)] == [bob.public_key]
        # a fresh client of the lost device opens at most what it could read before
        async with secsync.connect(broker.url, config=CONFIG) as c5:
            again = Client(laptop.me)
            await again.open(c5, doc_id, founders)
            assert str(again.text) == "phone+ founded +laptop"
            assert 1004 in again.codes()
        assert "after the loss" not in str(laptop.text)
        assert "tablet" not in str(laptop.text)


async def test_a_removed_user_loses_all_its_devices(broker) -> None:
    doc_id = "devices-removed-user"
    alice, bob, carol = (UserIdentity.generate() for _ in range(3))
    founders: dict[bytes, Role] = {
        alice.public_key: "admin",
        bob.public_key: "writer",
        carol.public_key: "writer",
    }
    admin = Client(alice.new_device("desk"))
    laptop, phone = Client(bob.new_device("laptop")), Client(bob.new_device("phone"))
    stays = Client(carol.new_device("laptop"))
    async with (
        secsync.connect(broker.url, config=CONFIG) as c1,
        secsync.connect(broker.url, config=CONFIG) as c2,
        secsync.connect(broker.url, config=CONFIG) as c3,
        secsync.connect(broker.url, config=CONFIG) as c4,
    ):
        await admin.open(c1, doc_id, founders)
        for device in (laptop, phone, stays):
            admin.group.add_device(device.me.certificate)  # type: ignore[union-attr]
        admin.text.insert(0, "shared")
        await admin.doc.flush(5)
        for device, client in ((laptop, c2), (phone, c3), (stays, c4)):
            await device.open(client, doc_id, founders)
            assert str(device.text) == "shared"
            device.drain()
            device.events.clear()  # what loading reported

        admin.group.remove(bob.public_key)
        await admin.write_snapshot()
        assert admin.group.members == {alice.public_key: "admin", carol.public_key: "writer"}
        assert admin.group.devices_of(bob.public_key) == []
        for device in (laptop, phone):
            await device.watch(lambda d=device: 1004 in d.codes())
        admin.text.insert(len(admin.text), " secret")
        await admin.doc.flush(5)
        await stays.watch(lambda: str(stays.text) == "shared secret")
        for device in (laptop, phone):
            assert str(device.text) == "shared"
            assert not any(isinstance(e, SnapshotApplied) for e in device.drain())


async def test_a_removed_device_cannot_write_or_come_back(broker) -> None:
    """What a removed device can still do, it does: publish an update on the new epoch (it
    never had that key, so under the old one), a snapshot re-adding itself with its old
    certificate. Nobody accepts either."""
    doc_id = "devices-removed-device"
    alice, bob = UserIdentity.generate(), UserIdentity.generate()
    founders: dict[bytes, Role] = {alice.public_key: "admin", bob.public_key: "writer"}
    admin = Client(alice.new_device("desk"))
    laptop, phone = Client(bob.new_device("laptop")), Client(bob.new_device("phone"))
    async with (
        secsync.connect(broker.url, config=CONFIG) as c1,
        secsync.connect(broker.url, config=CONFIG) as c2,
        secsync.connect(broker.url, config=CONFIG) as c3,
    ):
        await admin.open(c1, doc_id, founders)
        admin.group.add_device(laptop.me.certificate)  # type: ignore[union-attr]
        admin.group.add_device(phone.me.certificate)  # type: ignore[union-attr]
        admin.text.insert(0, "shared")
        await admin.doc.flush(5)
        await laptop.open(c2, doc_id, founders)
        await phone.open(c3, doc_id, founders)
        before = laptop.doc.session.active_snapshot
        assert before is not None
        old = laptop.group._epochs[before.snapshot_id]

        phone.group.remove_device(laptop.key)
        await phone.write_snapshot()
        removal = phone.doc.session.active_snapshot
        assert removal is not None
        await admin.watch(lambda: laptop.key not in admin.group.devices)
        await laptop.watch(lambda: 1004 in laptop.codes())
        with pytest.raises(MembershipError, match="cannot come back"):
            phone.group.add_device(laptop.me.certificate)  # type: ignore[union-attr]

        # The laptop, removed: an update on the removal snapshot under the key it still has,
        # and its own re-adding op on top of the epoch it knows, sealed to everyone.
        signer = laptop.me.signer  # type: ignore[union-attr]
        subjects = DocumentSubjects.of(doc_id)
        update = update_on(signer, doc_id, removal.snapshot_id, old.key)
        readers = [alice.public_key, admin.key, bob.public_key, phone.key, laptop.key]
        sealed = [seal_key(old.key, r) for r in sorted(readers)]
        comeback = MembershipOp.sign(
            signer,
            old.links[-1],
            [],
            epoch_commitment(old.key),
            sealed_commitment(sealed),
            added=[laptop.me.certificate],  # type: ignore[union-attr]
        )
        forged = group_snapshot(
            signer,
            doc_id,
            [*old.chain, comeback],
            old.key,
            sealed,
            text="laptop is back",
            parent=removal,
        )
        await c2.js.publish(subjects.update, native(update))
        ack = await c2.js.publish(subjects.snapshot, native(forged))
        for member in (admin, phone):
            await member.watch(lambda m=member: m.doc.last_sequence >= ack.seq)
            await member.watch(lambda m=member: {114, 215} <= m.codes())
            assert member.doc.session.active_snapshot == removal
            assert laptop.key not in member.group.devices
            assert str(member.text) == "shared"
        # a fresh device of Alice's passes over it as well
        async with secsync.connect(broker.url, config=CONFIG) as c4:
            fresh = Client(admin.me)
            await fresh.open(c4, doc_id, founders)
            assert fresh.doc.session.active_snapshot == removal
            assert str(fresh.text) == "shared"


# --- forged device ops, handed to members -----------------------------------------------------


class Member:
    def __init__(
        self,
        broker: MemoryBroker,
        me: Device | crypto.SigningKeyPair,
        founders: dict[bytes, Role],
    ) -> None:
        self.me = me
        self.group = Group(me, founders)
        self.doc: pycrdt.Doc = plain_yjs_doc()
        self.text = self.doc.get("text", type=pycrdt.Text)
        self.session = DocumentSession(DOC_ID, me, self.group, self.doc, policy=self.group)
        self.p = Participant(self.session, broker)

    @property
    def key(self) -> bytes:
        return self.me.public_key

    def codes(self) -> list[int]:
        return [e.error.code for e in self.p.events if isinstance(e, MessageRejected)]


class Room:
    """Alice (admin, one device), Bob (writer, laptop and phone), Carol (writer, one device)."""

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.alice, self.bob, self.carol = (UserIdentity.generate() for _ in range(3))
        self.founders: dict[bytes, Role] = {
            self.alice.public_key: "admin",
            self.bob.public_key: "writer",
            self.carol.public_key: "writer",
        }
        devices = [
            self.alice.new_device("desk"),
            self.bob.new_device("laptop"),
            self.bob.new_device("phone"),
            self.carol.new_device("laptop"),
        ]
        self.admin = Member(self.broker, devices[0], self.founders)
        for device in devices[1:]:
            self.admin.group.add_device(device.certificate)
        self.admin.text.insert(0, "founded")
        self.admin.p.sync()
        self.laptop, self.phone, self.carol_laptop = (
            Member(self.broker, d, self.founders) for d in devices[1:]
        )
        self.everyone = [self.admin, self.laptop, self.phone, self.carol_laptop]
        for m in self.everyone[1:]:
            m.p.sync()
        self.epoch = self.laptop.group._epochs[self.laptop.group._active]  # type: ignore[index]
        self.sealed_to: set[bytes] = set()

    def readers(self) -> list[bytes]:
        return sorted(set(self.epoch.members) | set(self.epoch.devices))

    def forge(
        self,
        signer: crypto.SigningKeyPair,
        *,
        changes: Sequence[tuple[bytes, Role | None]] = (),
        added: Sequence[DeviceCertificate] = (),
        removed: Sequence[bytes] = (),
        key: bytes | None = None,
        readers: Sequence[bytes] | None = None,
        sealed: Sequence[str] | None = None,
    ) -> Snapshot:
        """A snapshot by ``signer`` whose last op is the given change, on the active epoch."""
        key = key or self.epoch.key
        if readers is None:  # the roster's keys after the change
            readers = {*self.readers(), *(c.device for c in added)} - set(removed)
        self.sealed_to = set(readers)
        if sealed is None:
            sealed = [seal_key(key, r) for r in sorted(readers)]
        change = MembershipOp.sign(
            signer,
            self.epoch.links[-1],
            changes,
            epoch_commitment(key),
            sealed_commitment(sealed),
            added=added,
            removed=removed,
        )
        return group_snapshot(
            signer,
            DOC_ID,
            [*self.epoch.chain, change],
            key,
            sealed,
            text="forged",
            parent=self.laptop.session.active_snapshot,
        )

    def refused_by_all(self, forged: Snapshot) -> None:
        """Every member but its author refuses it: as a bad membership change, or (a member
        the forger left out) as not sealed to it."""
        active = self.admin.session.active_snapshot
        for m in self.everyone:
            if m.key == forged.author:
                continue
            events = m.session.receive(forged, now=0.0)
            codes = [e.error.code for e in events if isinstance(e, MessageRejected)]
            assert codes == ([1003] if m.key in self.sealed_to else [1004]), (m.me, codes)
            assert m.session.active_snapshot == active
            assert str(m.text) == "founded"


def test_an_honest_device_op_is_accepted_the_same_way() -> None:
    """The control for the forgeries below: the same construction, within the rules, passes."""
    room = Room()
    tablet = room.bob.new_device("tablet")
    good = room.forge(room.phone.me.signer, added=[tablet.certificate])
    for m in (room.admin, room.carol_laptop, room.laptop):
        events = m.session.receive(good, now=0.0)
        assert [e for e in events if isinstance(e, MessageRejected)] == []
        assert m.group.user_of(tablet.public_key) == room.bob.public_key
    assert good.public_data.extra["g"]["v"] == GROUP_VERSION_DEVICES


def test_a_member_cannot_add_a_device_to_another_user() -> None:
    room = Room()
    carols_new = room.carol.new_device("phone")
    room.phone.group.add_device(carols_new.certificate)
    room.phone.session.request_snapshot()
    with pytest.raises(SecsyncError, match="its own devices"):
        room.phone.session.data_to_send()  # the honest API refuses at once
    room.refused_by_all(room.forge(room.phone.me.signer, added=[carols_new.certificate]))


def test_a_member_cannot_add_a_device_certified_by_someone_else() -> None:
    room = Room()
    mallory = UserIdentity.generate()
    stranger = crypto.SigningKeyPair.generate()
    # Mallory's certificate claiming the key is Bob's: not signed by Bob
    claimed = mallory.certify(stranger.public_key)
    as_bob = DeviceCertificate(room.bob.public_key, stranger.public_key, claimed.signature)
    room.refused_by_all(room.forge(room.phone.me.signer, added=[as_bob]))
    # Mallory's own, honest certificate: Mallory is no member
    room.refused_by_all(room.forge(room.phone.me.signer, added=[claimed]))
    # Carol certifying one of Bob's device keys as hers: the key is taken
    taken = room.carol.certify(room.phone.key)
    room.refused_by_all(room.forge(room.carol_laptop.me.signer, added=[taken]))


def test_a_device_op_cannot_change_roles_or_remove_others() -> None:
    room = Room()
    tablet = room.bob.new_device("tablet")
    signer = room.phone.me.signer
    # Bob's device makes Bob an admin, alongside a genuine device of his
    room.refused_by_all(
        room.forge(signer, changes=[(room.bob.public_key, "admin")], added=[tablet.certificate])
    )
    # ... or removes Carol (a user), or Carol's device, rotating as a removal must
    fresh = crypto.generate_key()
    without_carol = [k for k in room.readers() if k != room.carol.public_key]
    room.refused_by_all(
        room.forge(
            signer, changes=[(room.carol.public_key, None)], key=fresh, readers=without_carol
        )
    )
    without_device = [k for k in room.readers() if k != room.carol_laptop.key]
    room.refused_by_all(
        room.forge(signer, removed=[room.carol_laptop.key], key=fresh, readers=without_device)
    )
    room.phone.group.add(room.bob.public_key, "admin")
    room.phone.session.request_snapshot()
    with pytest.raises(SecsyncError, match="only an admin"):
        room.phone.session.data_to_send()


def test_a_device_op_cannot_seal_the_key_to_anyone_but_the_roster() -> None:
    room = Room()
    tablet = room.bob.new_device("tablet")
    mallory = crypto.SigningKeyPair.generate()
    signer = room.phone.me.signer
    with_tablet = [*room.readers(), tablet.public_key]
    # a copy for an outsider as well
    room.refused_by_all(
        room.forge(signer, added=[tablet.certificate], readers=[*with_tablet, mallory.public_key])
    )
    # no copy for Carol's laptop: rekeyed around a member
    around = [k for k in with_tablet if k != room.carol_laptop.key]
    room.refused_by_all(room.forge(signer, added=[tablet.certificate], readers=around))
    # the right keys, sealed at random: nobody can tell who they are for, so refused too
    room.refused_by_all(
        room.forge(signer, added=[tablet.certificate], sealed=seal_to(with_tablet, room.epoch.key))
    )
    # a new key of the member's choosing, without a removal
    room.refused_by_all(
        room.forge(
            signer, added=[tablet.certificate], key=crypto.generate_key(), readers=with_tablet
        )
    )


def test_a_removed_device_cannot_come_back_with_its_old_certificate() -> None:
    room = Room()
    room.phone.group.remove_device(room.laptop.key)
    room.phone.session.request_snapshot()
    room.phone.p.sync()
    for m in room.everyone:
        m.p.sync()
    assert 1004 in room.laptop.codes()
    room.epoch = room.phone.group._epochs[room.phone.group._active]  # type: ignore[index]
    with pytest.raises(SecsyncError, match="cannot come back"):
        room.phone.group.add_device(room.laptop.me.certificate)
    with pytest.raises(SecsyncError, match="cannot come back"):
        room.admin.group.add_device(room.laptop.me.certificate)  # not even by an admin
    back = room.forge(room.phone.me.signer, added=[room.laptop.me.certificate])
    room.everyone = [room.admin, room.phone, room.carol_laptop]
    room.refused_by_all(back)
    # the removed laptop's own update and snapshot on the new epoch are refused by policy
    update = update_on(
        room.laptop.me.signer,
        DOC_ID,
        room.phone.session.active_snapshot.snapshot_id,
        room.epoch.key,
    )  # type: ignore[union-attr]
    for m in room.everyone:
        events = m.session.receive(update, now=0.0)
        assert [e.error.code for e in events if isinstance(e, MessageRejected)] == [215]


def test_a_device_of_a_removed_user_cannot_write_or_read() -> None:
    room = Room()
    room.admin.group.remove(room.bob.public_key)
    room.admin.session.request_snapshot()
    for m in room.everyone:
        m.p.sync()
    for gone in (room.laptop, room.phone):
        assert 1004 in gone.codes()
    # as verified by a member who did not write the removal
    epoch = room.carol_laptop.group._epochs[room.carol_laptop.group._active]  # type: ignore[index]
    assert epoch.devices.keys() == {room.admin.key, room.carol_laptop.key}
    assert not set(epoch.members) & {room.bob.public_key}
    # the new key is sealed to no key of Bob's
    assert len(epoch.sealed) == 4  # alice, her desk, carol, her laptop
    latest = room.broker.log[-1]
    assert isinstance(latest, Snapshot)
    for gone in (room.laptop, room.phone):
        with pytest.raises(SecsyncError):
            gone.group.snapshot_key(latest.info())
    # Bob's phone, with a key it should not have, still cannot write there
    update = update_on(room.phone.me.signer, DOC_ID, latest.snapshot_id, epoch.key)
    for m in (room.admin, room.carol_laptop):
        events = m.session.receive(update, now=0.0)
        assert [e.error.code for e in events if isinstance(e, MessageRejected)] == [215]


def test_a_group_without_devices_keeps_its_version_2_data() -> None:
    """A roster of keys signing as themselves writes group data exactly as before devices."""
    broker = MemoryBroker()
    admin = crypto.SigningKeyPair.generate()
    group = Group(admin)
    doc = plain_yjs_doc()
    doc.get("text", type=pycrdt.Text).insert(0, "x")
    session = DocumentSession(DOC_ID, admin, group, doc, policy=group)
    Participant(session, broker).sync()
    snapshot = broker.log[0]
    assert isinstance(snapshot, Snapshot)
    assert snapshot.public_data.extra["g"]["v"] == GROUP_VERSION
    assert group.devices == {}


def test_version_2_group_data_still_verifies_and_takes_devices() -> None:
    """Group data as written before devices (five-field ops, sealed boxes drawn at random)
    still opens; a member signing as its user key then adds its device without an admin."""
    broker = MemoryBroker()
    admin, bob = crypto.SigningKeyPair.generate(), UserIdentity.generate()
    founders: dict[bytes, Role] = {admin.public_key: "admin", bob.public_key: "writer"}
    key = crypto.generate_key()
    sealed = seal_to([admin.public_key, bob.public_key], key)
    genesis = op(admin, b"", sorted(founders.items()), key, sealed)
    old = group_snapshot(admin, DOC_ID, [genesis], key, sealed, text="from before")
    assert old.public_data.extra["g"]["v"] == GROUP_VERSION
    assert broker.publish(old, 0)
    alice = Member(broker, admin, founders)
    as_user = Member(broker, bob.key, founders)  # Bob's identity key, signing as itself
    alice.p.sync()
    as_user.p.sync()
    assert str(alice.text) == str(as_user.text) == "from before"
    laptop = bob.new_device("laptop")
    as_user.group.add_device(laptop.certificate)
    as_user.session.request_snapshot()
    as_user.p.sync()
    latest = broker.log[-1]
    assert isinstance(latest, Snapshot) and latest.author == bob.public_key
    assert latest.public_data.extra["g"]["v"] == GROUP_VERSION_DEVICES
    alice.p.sync()
    assert alice.codes() == []
    assert alice.group.devices == {laptop.public_key: bob.public_key}
    assert alice.group.snapshot_key(latest.info()) == key  # adding a device keeps the key
    on_laptop = Member(broker, laptop, founders)
    on_laptop.p.sync()
    assert str(on_laptop.text) == "from before"
    on_laptop.text.insert(0, "laptop: ")
    on_laptop.p.sync()
    alice.p.sync()
    assert str(alice.text) == "laptop: from before"
    assert alice.session.user_of(laptop.public_key) == bob.public_key


def _group_bytes(snapshot: object) -> int:
    assert isinstance(snapshot, Snapshot)
    return len(msgpack.packb(snapshot.public_data.extra["g"], use_bin_type=True))


def test_what_a_device_costs_every_snapshot() -> None:
    """The figures of docs/access-control.md: bytes of group data ("g", packed) that one more
    device (label "tablet") adds to every later snapshot, by its own op, and what removing it
    leaves (its op stays in the chain)."""
    room = Room()
    before = _group_bytes(room.broker.log[-1])
    tablet = room.bob.new_device("tablet")
    room.phone.group.add_device(tablet.certificate)
    room.phone.session.request_snapshot()
    room.phone.p.sync()
    added = _group_bytes(room.broker.log[-1])
    room.phone.group.remove_device(tablet.public_key)
    room.phone.session.request_snapshot()
    room.phone.p.sync()
    removed = _group_bytes(room.broker.log[-1])
    assert (added - before, removed - added) == (522, 166)


def test_what_a_device_costs_in_the_first_roster() -> None:
    alice = UserIdentity.generate()
    bob = UserIdentity.generate()
    founders: dict[bytes, Role] = {alice.public_key: "admin", bob.public_key: "writer"}
    desk = alice.new_device("desk")
    sizes = []
    for devices in (0, 1, 2):
        group = Group(desk, founders)
        for _ in range(devices):
            group.add_device(bob.certify(crypto.SigningKeyPair.generate().public_key, "laptop"))
        _, extra = group.new_snapshot_key(crypto.generate_id())
        sizes.append(len(msgpack.packb(extra["g"], use_bin_type=True)))
    assert (sizes[1] - sizes[0], sizes[2] - sizes[1]) == (293, 293)


def test_a_restarted_device_keeps_the_verified_roster_and_its_devices() -> None:
    room = Room()
    tablet = room.bob.new_device("tablet")
    room.phone.group.add_device(tablet.certificate)
    room.phone.session.request_snapshot()
    room.phone.p.sync()
    room.phone.group.remove_device(room.laptop.key)
    room.phone.session.request_snapshot()
    room.phone.p.sync()
    room.carol_laptop.p.sync()
    state = room.carol_laptop.session.export_state()
    content = room.carol_laptop.doc.get_update()

    group = Group(room.carol_laptop.me, room.founders)
    doc = plain_yjs_doc()
    doc.apply_update(content)
    session = DocumentSession(DOC_ID, room.carol_laptop.me, group, doc, policy=group)
    session.restore_state(state)
    assert group.devices == room.phone.group.devices
    assert group.devices_of(room.bob.public_key) == sorted([room.phone.key, tablet.public_key])
    hello = EphemeralPublicData(doc_id=DOC_ID, pub_key=tablet.public_key)
    assert group.may_author(MessageKind.EPHEMERAL, tablet.public_key, hello)
    gone = EphemeralPublicData(doc_id=DOC_ID, pub_key=room.laptop.key)
    assert not group.may_author(MessageKind.EPHEMERAL, room.laptop.key, gone)
    # a removed device stays out after the restart too
    with pytest.raises(MembershipError, match="cannot come back"):
        group.add_device(room.laptop.me.certificate)


def test_a_device_message_must_name_the_user_of_the_roster() -> None:
    """A device of Bob's that carries a certificate naming Carol (she can certify any public
    key) is refused: attribution and the roster never disagree."""
    room = Room()
    claimed = room.carol.certify(room.phone.key)
    for extra, allowed in (
        ({}, True),
        (room.phone.me.extra(), True),
        ({"dev": claimed.to_b64()}, False),
        ({"dev": "not a certificate"}, False),
    ):
        hello = EphemeralPublicData(doc_id=DOC_ID, pub_key=room.phone.key, extra=extra)
        for m in (room.admin, room.carol_laptop):
            assert m.group.may_author(MessageKind.EPHEMERAL, room.phone.key, hello) is allowed
