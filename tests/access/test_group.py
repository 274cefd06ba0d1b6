"""Closed groups: roles enforced on receipt, rotation on removal, concurrent removals."""

from __future__ import annotations

import asyncio
import dataclasses

import pycrdt
import pytest

import secsync
from secsync.access.group import Group
from secsync.access.membership import MAX_MEMBERS
from secsync.config import SecsyncConfig
from secsync.errors import GroupTooLargeError
from secsync.protocol import crypto, sealing
from secsync.protocol.encoding import b64encode
from secsync.protocol.events import MessageRejected, SnapshotApplied
from secsync.protocol.messages import EphemeralPublicData, MessageKind, ProofChainEntry, Snapshot
from secsync.protocol.session import DocumentSession
from tests.factories import DOC_ID, MemoryBroker, Participant, plain_yjs_doc
from tests.security.forge import group_snapshot, op, seal_to


class Member:
    def __init__(
        self,
        broker: MemoryBroker,
        signer: crypto.SigningKeyPair | None = None,
        founders: dict[bytes, str] | None = None,
    ) -> None:
        self.signer = signer or crypto.SigningKeyPair.generate()
        self.group = Group(self.signer, founders)  # type: ignore[arg-type]
        self.doc: pycrdt.Doc = plain_yjs_doc()
        self.text = self.doc.get("text", type=pycrdt.Text)
        self.session = DocumentSession(DOC_ID, self.signer, self.group, self.doc, policy=self.group)
        self.p = Participant(self.session, broker)

    @property
    def key(self) -> bytes:
        return self.signer.public_key

    def codes(self) -> list[int]:
        return [e.error.code for e in self.p.events if isinstance(e, MessageRejected)]


def founded(n_writers: int = 2, readers: int = 0, admins: int = 1):  # type: ignore[no-untyped-def]
    broker = MemoryBroker()
    signers = [crypto.SigningKeyPair.generate() for _ in range(admins + n_writers + readers)]
    roles = {s.public_key: "admin" for s in signers[:admins]}
    roles |= {s.public_key: "writer" for s in signers[admins : admins + n_writers]}
    roles |= {s.public_key: "reader" for s in signers[admins + n_writers :]}
    members = [Member(broker, s, roles) for s in signers]
    members[0].text.insert(0, "founded")
    members[0].p.sync()
    for m in members[1:]:
        m.p.sync()
    return broker, members


def test_members_share_the_document_and_the_broker_sees_no_roster() -> None:
    broker, (admin, writer) = founded(1)
    assert str(writer.text) == "founded"
    writer.text.insert(0, "w:")
    writer.p.sync()
    admin.p.sync()
    assert str(admin.text) == "w:founded"
    snapshot = broker.log[0]
    assert isinstance(snapshot, Snapshot)
    group = snapshot.public_data.extra["g"]
    assert len(group["k"]) == 2  # one sealed key per member is all the broker learns
    public = repr(snapshot.public_data.extra)
    # the roster is encrypted: no member key appears in clear
    assert b64encode(writer.key) not in public and b64encode(admin.key) not in public


def test_outsider_and_reader_updates_are_ignored_by_every_member() -> None:
    broker, (admin, writer, reader) = founded(1, readers=1)
    outsider = Member(broker)  # holds no key: nothing opens for it
    outsider.p.sync()
    assert 1004 in outsider.codes()
    reader.text.insert(0, "reader was here ")
    reader.p.sync()
    # forge: the reader's update reaches the log (a broker does not judge)
    for m in (admin, writer):
        m.p.sync()
        assert 215 in m.codes()
        assert str(m.text) == "founded"


def test_forged_membership_change_is_rejected() -> None:
    broker, (admin, writer) = founded(1)
    mallory = crypto.SigningKeyPair.generate()
    writer.group.add(mallory.public_key, "admin")  # a writer is not allowed to do this
    writer.session.request_snapshot()
    with pytest.raises(secsync.SecsyncError, match="only an admin"):
        writer.session.data_to_send()  # the honest API refuses at once
    # played by hand: the writer signs the change itself and publishes the snapshot
    current = writer.group._epochs[writer.group._active]  # type: ignore[index]
    members = [*current.members, mallory.public_key]
    sealed = seal_to(members, current.key)
    change = op(
        writer.signer, current.links[-1], [(mallory.public_key, "admin")], current.key, sealed
    )
    parent = writer.session.active_snapshot
    forged = group_snapshot(
        writer.signer,
        DOC_ID,
        [*current.chain, change],
        current.key,
        sealed,
        text="x",
        parent=parent,
    )
    assert broker.publish(forged, len(broker.log))  # the broker does not judge
    admin.p.sync()
    assert 1003 in admin.codes()
    assert mallory.public_key not in admin.group.members
    assert admin.session.active_snapshot == parent


def test_removed_member_reads_nothing_new_while_others_continue() -> None:
    broker, (admin, writer, gone) = founded(2)
    admin.group.remove(gone.key)
    admin.session.request_snapshot()
    admin.p.sync()
    writer.p.sync()
    writer.text.insert(0, "secret after removal ")
    writer.p.sync()
    admin.p.sync()
    gone.p.sync()  # still connected, still listening
    assert "secret" not in str(gone.text)
    assert 1004 in gone.codes()
    assert str(admin.text) == str(writer.text) == "secret after removal founded"
    # the new epoch uses a new key
    snaps = [m for m in broker.log if isinstance(m, Snapshot)]
    assert admin.group.snapshot_key(snaps[-1].info()) != admin.group.snapshot_key(snaps[0].info())


def test_two_admins_remove_two_members_concurrently() -> None:
    broker, (a1, a2, x, y, stays) = founded(3, admins=2)
    a1.group.remove(x.key)
    a2.group.remove(y.key)
    a1.session.request_snapshot()
    a2.session.request_snapshot()
    s1 = a1.session.data_to_send()
    s2 = a2.session.data_to_send()
    assert broker.publish(s1[0], a1.p.seen)
    a1.session.snapshot_stored(s1[0].snapshot_id, now=0.0)
    a1.p.seen = len(broker.log)
    assert not broker.publish(s2[0], a2.p.seen)  # the race: one loses
    a2.session.snapshot_rejected(s2[0].snapshot_id)
    for _ in range(3):
        for m in (a1, a2, x, y, stays):
            m.p.sync()
    assert a1.group.members == a2.group.members == stays.group.members
    assert x.key not in a1.group.members and y.key not in a1.group.members
    stays.text.insert(0, "after both ")
    stays.p.sync()
    for m in (a1, a2, x, y):
        m.p.sync()
    assert str(a1.text) == str(a2.text) == "after both founded"
    assert "after both" not in str(x.text) and "after both" not in str(y.text)
    # no key of the last epoch is sealed to either removed member
    last = [m for m in broker.log if isinstance(m, Snapshot)][-1]
    for removed in (x, y):
        with pytest.raises(secsync.SecsyncError):
            removed.group.snapshot_key(last.info())


async def test_removed_member_still_connected_reads_nothing_through_nats(broker) -> None:
    config = SecsyncConfig(batch_interval=0.002)
    admin_key, gone_key = crypto.SigningKeyPair.generate(), crypto.SigningKeyPair.generate()
    roles = {admin_key.public_key: "admin", gone_key.public_key: "writer"}
    async with (
        secsync.connect(broker.url, config=config) as c1,
        secsync.connect(broker.url, config=config) as c2,
    ):
        admin_group = Group(admin_key, roles)  # type: ignore[arg-type]
        ya, yg = plain_yjs_doc(), plain_yjs_doc()
        da = await c1.open(
            "group", key=admin_group, signing_key=admin_key, crdt=ya, policy=admin_group
        )
        ya.get("text", type=pycrdt.Text).insert(0, "shared")
        await da.flush(5)
        gone_group = Group(gone_key, roles)  # type: ignore[arg-type]
        dg = await c2.open(
            "group", key=gone_group, signing_key=gone_key, crdt=yg, policy=gone_group
        )
        assert str(yg.get("text", type=pycrdt.Text)) == "shared"
        while not dg._events.empty():  # what loading reported
            dg._events.get_nowait()
        admin_group.remove(gone_key.public_key)
        da.write_snapshot()
        await da.flush(5)
        ya.get("text", type=pycrdt.Text).insert(0, "private ")
        await da.flush(5)
        async with asyncio.timeout(10):
            while True:
                event = await dg.next_event()
                if isinstance(event, MessageRejected) and event.error.code == 1004:
                    break
                assert not isinstance(event, SnapshotApplied)
        assert str(yg.get("text", type=pycrdt.Text)) == "shared"


async def test_two_admins_remove_two_members_concurrently_through_nats(broker) -> None:
    config = SecsyncConfig(batch_interval=0.002)
    signers = {name: crypto.SigningKeyPair.generate() for name in ("a1", "a2", "x", "y", "w")}
    roles = {
        signers["a1"].public_key: "admin",
        signers["a2"].public_key: "admin",
        signers["x"].public_key: "writer",
        signers["y"].public_key: "writer",
        signers["w"].public_key: "writer",
    }
    clients, docs, groups, ydocs = {}, {}, {}, {}
    try:
        for name, signer in signers.items():
            clients[name] = await secsync.connect(broker.url, config=config)
            groups[name] = Group(signer, roles)  # type: ignore[arg-type]
            ydocs[name] = plain_yjs_doc()
            docs[name] = await clients[name].open(
                "group-race",
                key=groups[name],
                signing_key=signer,
                crdt=ydocs[name],
                policy=groups[name],
            )
            if name == "a1":
                ydocs[name].get("text", type=pycrdt.Text).insert(0, "base")
                await docs[name].flush(5)
        groups["a1"].remove(signers["x"].public_key)
        groups["a2"].remove(signers["y"].public_key)
        docs["a1"].write_snapshot()
        docs["a2"].write_snapshot()
        await asyncio.gather(docs["a1"].flush(10), docs["a2"].flush(10))

        def removed_both() -> bool:
            return all(
                signers["x"].public_key not in groups[n].members
                and signers["y"].public_key not in groups[n].members
                for n in ("a1", "a2", "w")
            )

        async with asyncio.timeout(15):
            while not removed_both():
                await asyncio.wait(
                    [asyncio.ensure_future(docs[n].next_event()) for n in ("a1", "a2", "w")],
                    return_when=asyncio.FIRST_COMPLETED,
                )
        ydocs["w"].get("text", type=pycrdt.Text).insert(0, "secret ")
        await docs["w"].flush(5)
        async with asyncio.timeout(15):
            while not all(
                str(ydocs[n].get("text", type=pycrdt.Text)) == "secret base" for n in ("a1", "a2")
            ):
                await asyncio.wait(
                    [asyncio.ensure_future(docs[n].next_event()) for n in ("a1", "a2")],
                    return_when=asyncio.FIRST_COMPLETED,
                )
        for gone in ("x", "y"):
            assert "secret" not in str(ydocs[gone].get("text", type=pycrdt.Text))
    finally:
        for client in clients.values():
            await client.close()


def test_keys_never_reach_the_logs(caplog) -> None:
    import logging

    with caplog.at_level(logging.DEBUG, logger="secsync"):
        broker, members = founded(2)
        members[0].group.remove(members[2].key)
        members[0].session.request_snapshot()
        for m in members:
            m.p.sync()
        members[1].text.insert(0, "x")
        for m in members:
            m.p.sync()
    out = "\n".join(f"{r.getMessage()} {getattr(r, 'secsync_fields', '')}" for r in caplog.records)
    assert "snapshot_created" in out and "message_rejected" in out  # logs were written
    secrets = [b64encode(m.signer.secret_key) for m in members]
    secrets += [b64encode(m.signer.secret_key[:32]) for m in members]
    for snap in (x for x in broker.log if isinstance(x, Snapshot)):
        secrets.append(b64encode(members[0].group.snapshot_key(snap.info())))
    for secret in secrets:
        assert secret not in out
        assert secret[:12] not in out


def test_a_restarted_member_keeps_the_verified_roster() -> None:
    broker, (admin, writer) = founded(1)
    carol = Member(broker)
    admin.group.add(carol.key, "writer")  # a member who is not a founder
    admin.session.request_snapshot()
    admin.p.sync()
    writer.p.sync()
    assert carol.key in writer.group.members
    state, content = writer.session.export_state(), writer.doc.get_update()

    group = Group(writer.signer, writer.group.founders)  # type: ignore[arg-type]
    doc = plain_yjs_doc()
    doc.apply_update(content)
    session = DocumentSession(DOC_ID, writer.signer, group, doc, policy=group)
    session.restore_state(state)
    assert group.members == admin.group.members  # the verified roster, not the founders
    hello = EphemeralPublicData(doc_id=DOC_ID, pub_key=carol.key)
    assert group.may_author(MessageKind.EPHEMERAL, carol.key, hello)  # her presence counts


def test_a_group_holds_a_thousand_members_and_refuses_more() -> None:
    admin = crypto.SigningKeyPair.generate()
    others = [crypto.SigningKeyPair.generate() for _ in range(MAX_MEMBERS - 1)]
    founders = {admin.public_key: "admin"} | {o.public_key: "writer" for o in others}
    broker = MemoryBroker()
    founder = Member(broker, admin, founders)
    founder.text.insert(0, "a big room")
    founder.p.sync()
    snapshot = broker.log[0]
    assert isinstance(snapshot, Snapshot)
    last = Member(broker, max(others, key=lambda o: o.public_key), founders)  # sealed last
    last.p.sync()
    assert str(last.text) == "a big room"
    assert len(last.group.members) == MAX_MEMBERS
    with pytest.raises(GroupTooLargeError):
        founder.group.add(crypto.SigningKeyPair.generate().public_key)
    with pytest.raises(GroupTooLargeError):
        Group(admin, founders | {crypto.SigningKeyPair.generate().public_key: "reader"})


def test_a_forged_proof_chain_link_leads_to_no_takeover() -> None:
    """Proof-chain entries are public values, so a link can be made up; what it leads to must
    still carry a membership chain from the founders, and Mallory's does not."""
    _, (admin, writer) = founded(1)
    known = admin.session.active_snapshot
    assert known is not None
    mallory = crypto.SigningKeyPair.generate()
    key = crypto.generate_key()
    sealed = seal_to([admin.key, writer.key, mallory.public_key], key)
    genesis = op(mallory, b"", [(mallory.public_key, "admin"), (admin.key, "writer")], key, sealed)
    invented = ProofChainEntry(crypto.generate_id(), known.child_proof(), crypto.generate_id())
    forged = group_snapshot(
        mallory, DOC_ID, [genesis], key, sealed, text="taken", parent_id=invented.snapshot_id
    )
    forged = dataclasses.replace(
        forged,
        public_data=dataclasses.replace(
            forged.public_data, parent_snapshot_proof=invented.child_proof()
        ),
    )
    forged = sealing.seal(forged.public_data, plain_yjs_doc().get_update(), key, mallory)
    chain = [invented, ProofChainEntry.of(forged)]
    events = admin.session.receive(forged, proof_chain=chain, now=0.0)
    codes = [e.error.code for e in events if isinstance(e, MessageRejected)]
    assert codes == [1003]
    assert admin.session.active_snapshot == known
    assert mallory.public_key not in admin.group.members
