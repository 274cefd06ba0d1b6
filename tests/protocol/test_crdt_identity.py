"""CRDT identities bound to users: the ids, and the session refusing content a member signed
under another member's Yjs client id or Automerge actor (issue 20), on real documents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pycrdt
import pytest
from automerge import core
from hypothesis import given, settings
from hypothesis import strategies as st

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import LocalIdentityError
from secsync.protocol import crdt_identity as ci
from secsync.protocol import crypto, sealing
from secsync.protocol.changes import serialize_changes
from secsync.protocol.events import MessageRejected, UpdateApplied
from secsync.protocol.messages import Update, UpdatePublicData
from secsync.protocol.session import DocumentSession
from tests.factories import DOC_ID, KEY, MemoryBroker, Participant, automerge_text, plain_yjs_doc

STRICT = SecsyncConfig(legacy_crdt_ids=False)


def legacy_yjs_doc() -> pycrdt.Doc:
    """A document as pycrdt makes them (a random 53-bit id), never of the bound form."""
    while True:
        doc: pycrdt.Doc = plain_yjs_doc()
        if not ci.is_bound_yjs_id(doc.client_id):
            return doc


def user() -> bytes:
    return crypto.SigningKeyPair.generate().public_key


# --- the ids --------------------------------------------------------------------------------


def test_a_bound_yjs_id_is_a_53_bit_number_above_every_legacy_javascript_id() -> None:
    alice = user()
    for _ in range(50):
        cid = ci.new_yjs_client_id(alice)
        assert 2**52 <= cid < 2**53
        assert ci.is_bound_yjs_id(cid) and ci.yjs_id_bound_to(cid, alice)
        assert pycrdt.Doc(client_id=cid).client_id == cid
    assert not ci.is_bound_yjs_id(2**32 - 1)  # JavaScript Yjs: random uint32
    assert ci.bound_yjs_id(alice, 0) >> 12 == ci.bound_yjs_id(alice, 4095) >> 12


def test_the_suffix_avoids_the_ids_the_document_already_holds() -> None:
    alice = user()
    taken = {ci.bound_yjs_id(alice, s) for s in range(4095)}
    assert ci.new_yjs_client_id(alice, taken=taken) == ci.bound_yjs_id(alice, 4095)
    with pytest.raises(ValueError):
        ci.bound_yjs_id(alice, 4096)


def test_bound_actors_are_28_bytes_and_verify_for_their_user_only() -> None:
    alice, bob = user(), user()
    actor = ci.new_actor_id(alice)
    assert len(actor) == 28 and ci.is_bound_actor(actor)
    assert ci.actor_bound_to(actor, alice) and not ci.actor_bound_to(actor, bob)
    assert ci.new_actor_id(alice) != actor  # a random suffix per session
    legacy = core.random_actor_id()
    assert not ci.is_bound_actor(legacy)
    assert ci.refused_ids([legacy, actor], alice) == []
    assert ci.refused_ids([legacy, actor], bob) == [actor]
    assert ci.refused_ids([legacy, actor], alice, legacy=False) == [legacy]


@settings(max_examples=60, deadline=None)
@given(
    a=st.binary(min_size=32, max_size=32),
    b=st.binary(min_size=32, max_size=32),
    suffix=st.integers(0, 4095),
)
def test_random_bound_ids_verify_only_for_their_user(a: bytes, b: bytes, suffix: int) -> None:
    cid = ci.bound_yjs_id(a, suffix)
    actor = ci.ACTOR_TAG + ci.actor_user_hash(a) + suffix.to_bytes(8, "big")
    assert ci.bound_to(cid, a) and ci.bound_to(actor, a)
    if a != b:
        # 25 bits of user hash: another key matches by chance once in 33 million
        assert not ci.bound_to(actor, b)
        assert ci.bound_to(cid, b) == (ci.yjs_user_hash(a) == ci.yjs_user_hash(b))
    # flipping any bit of the hash part or the tag breaks the binding
    for bit in range(12, 53):
        assert not ci.bound_to(cid ^ (1 << bit), a)


@settings(max_examples=200, deadline=None)
@given(cid=st.integers(0, 2**53 - 1))
def test_arbitrary_ids_are_bound_only_in_the_tagged_range(cid: int) -> None:
    assert ci.is_bound_yjs_id(cid) == (cid >> 37 == 0xB5EC)
    alice = user()
    assert ci.refused_ids([cid], alice) == ([cid] if ci.is_bound_yjs_id(cid) else [])


def test_new_yjs_doc_takes_a_key_pair_its_text_or_a_public_key() -> None:
    me = crypto.SigningKeyPair.generate()
    for given_as in (me, me.to_b64(), me.public_key):
        assert ci.yjs_id_bound_to(secsync.new_yjs_doc(given_as).client_id, me.public_key)
    with pytest.raises(TypeError):
        secsync.new_yjs_doc(me, client_id=1)


# --- sessions on real documents -------------------------------------------------------------


class Y:
    """A Yjs participant; ``doc`` bound to its signer unless given."""

    def __init__(
        self,
        doc: pycrdt.Doc | None = None,
        *,
        config: SecsyncConfig | None = None,
        signer: crypto.SigningKeyPair | None = None,
        user_of: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.signer = signer or crypto.SigningKeyPair.generate()
        self.doc = doc if doc is not None else secsync.new_yjs_doc(self.signer)
        self.text = self.doc.get("text", type=pycrdt.Text)
        self.session = DocumentSession(
            DOC_ID, self.signer, KEY, self.doc, config=config, user_of=user_of
        )

    @property
    def content(self) -> str:
        return str(self.text)


class AM:
    def __init__(self, *, config: SecsyncConfig | None = None) -> None:
        self.signer = crypto.SigningKeyPair.generate()
        self.doc = core.Document()
        self.session = DocumentSession(DOC_ID, self.signer, KEY, self.doc, config=config)

    def type(self, at: int, text: str) -> None:
        with self.doc.transaction() as tx:
            found = self.doc.get(core.ROOT, "text")
            obj = found[1] if found else tx.put_object(core.ROOT, "text", core.ObjType.Text)
            for i, char in enumerate(text):
                tx.insert(obj, at + i, core.ScalarType.Str, char)

    def replace(self, at: int, length: int, text: str) -> None:
        found = self.doc.get(core.ROOT, "text")
        assert found is not None
        with self.doc.transaction() as tx:
            for _ in range(length):
                tx.delete(found[1], at)
            for i, char in enumerate(text):
                tx.insert(found[1], at + i, core.ScalarType.Str, char)

    @property
    def content(self) -> str:
        return automerge_text(self.doc)


def signed_update(
    session: DocumentSession, signer: crypto.SigningKeyPair, clock: int, changes: list[bytes]
) -> Update:
    """What a hostile member seals by hand: valid signature, valid key, chosen content."""
    active = session.active_snapshot
    assert active is not None
    public = UpdatePublicData(
        doc_id=DOC_ID, pub_key=signer.public_key, ref_snapshot_id=active.snapshot_id, clock=clock
    )
    return sealing.seal(public, serialize_changes(changes), KEY, signer)


def rejections(part: Participant) -> list[int]:
    return [e.error.code for e in part.events if isinstance(e, MessageRejected)]


def forged_yjs(victim_id: int, state: bytes) -> bytes:
    """Content under ``victim_id``'s next clock: 250 replaced by 999."""
    forger: pycrdt.Doc = pycrdt.Doc(client_id=victim_id)
    text = forger.get("text", type=pycrdt.Text)
    forger.apply_update(state)
    before = forger.get_state()
    at = str(text).index("250")
    del text[at : at + 3]
    text.insert(at, "999")
    return forger.get_update(before)


def forged_automerge(victim_actor: bytes, state: bytes) -> bytes:
    forger = core.Document.load(state)
    forger.set_actor(victim_actor)
    heads = forger.get_heads()
    found = forger.get(core.ROOT, "text")
    assert found is not None
    at = forger.text(found[1]).index("250")
    with forger.transaction() as tx:
        for _ in range(3):
            tx.delete(found[1], at)
        for i, char in enumerate("999"):
            tx.insert(found[1], at + i, core.ScalarType.Str, char)
    (change,) = forger.get_changes(heads)
    return change.bytes


def test_yjs_content_under_another_members_client_id_is_refused_and_the_real_edit_wins() -> None:
    broker = MemoryBroker()
    alice, bob, mallory = Y(), Y(), Y()
    parts = {p: Participant(p.session, broker) for p in (alice, bob, mallory)}
    alice.text.insert(0, "Pay 250 EUR")
    for part in parts.values():
        part.sync()
    assert mallory.content == "Pay 250 EUR"
    # while Alice is away, Mallory signs content under Alice's client id and next clock
    forged = forged_yjs(alice.doc.client_id, mallory.doc.get_update())
    assert ci.yjs_id_bound_to(alice.doc.client_id, alice.signer.public_key)
    assert broker.publish(signed_update(mallory.session, mallory.signer, 0, [forged]), 0)
    parts[bob].pull()
    assert rejections(parts[bob]) == [218] and bob.content == "Pay 250 EUR"
    # Mallory's own next, honest update applies at once: the refused one spent its clock
    parts[mallory].pull()
    assert rejections(parts[mallory]) == [218]  # her own session refuses it too
    mallory.text.insert(len(mallory.text), "!")
    parts[mallory].push()
    parts[bob].pull()
    assert bob.session.update_clocks[mallory.signer.public_key] == 1
    assert bob.content == "Pay 250 EUR!"
    # Alice comes back, sees nothing of the forgery, edits at the clock Mallory used
    parts[alice].pull()
    assert rejections(parts[alice]) == [218]
    alice.text.insert(0, "Please: ")
    for _ in range(2):
        for part in parts.values():
            part.sync()
    fresh = Y()
    fresh.session.load(None, now=0.0)
    events = fresh.session.receive_many(broker.log, now=0.0)
    assert [e.error.code for e in events if isinstance(e, MessageRejected)] == [218]
    assert alice.content == "Please: Pay 250 EUR!"
    assert bob.content == mallory.content == fresh.content == alice.content
    assert alice.session.is_synced


def test_automerge_changes_under_another_members_actor_are_refused_and_hers_apply() -> None:
    broker = MemoryBroker()
    alice, bob, mallory = AM(), AM(), AM()
    parts = {p: Participant(p.session, broker) for p in (alice, bob, mallory)}
    assert ci.actor_bound_to(alice.doc.get_actor(), alice.signer.public_key)  # set at open
    alice.type(0, "Pay 250 EUR")
    for part in parts.values():
        part.sync()
    forged = forged_automerge(alice.doc.get_actor(), mallory.doc.save())
    assert broker.publish(signed_update(mallory.session, mallory.signer, 0, [forged]), 0)
    parts[bob].pull()
    assert rejections(parts[bob]) == [218] and bob.content == "Pay 250 EUR"
    parts[mallory].pull()
    mallory.type(len(mallory.content), "!")
    parts[mallory].push()
    parts[bob].pull()
    assert bob.session.update_clocks[mallory.signer.public_key] == 1
    assert bob.content == "Pay 250 EUR!"
    # Alice's real change has the seq the forgery claimed: not refused as a duplicate
    parts[alice].pull()
    alice.replace(4, 3, "300")
    for _ in range(2):
        for part in parts.values():
            part.sync()
    fresh = AM()
    fresh.session.load(None, now=0.0)
    fresh.session.receive_many(broker.log, now=0.0)
    assert alice.content == "Pay 300 EUR!"
    assert bob.content == mallory.content == fresh.content == alice.content


def test_refused_content_of_any_kind_spends_its_clock_and_a_replay_stays_refused() -> None:
    broker = MemoryBroker()
    alice, bob = Y(), Y()
    pa, pb = Participant(alice.session, broker), Participant(bob.session, broker)
    alice.text.insert(0, "x")
    pa.sync()
    pb.sync()
    assert alice.signer.public_key not in bob.session.update_clocks  # a snapshot so far
    junk = signed_update(bob.session, alice.signer, 0, [b"\x01\x02\x03"])  # not Yjs
    events = bob.session.receive(junk, now=0.0)
    assert [e.error.code for e in events if isinstance(e, MessageRejected)] == [203]
    assert bob.session.update_clocks[alice.signer.public_key] == 0
    events = bob.session.receive(junk, now=0.0)
    assert [e.error.code for e in events if isinstance(e, MessageRejected)] == [214]
    # what waited behind a refused update follows it at once
    third = signed_update(bob.session, alice.signer, 2, [forged_yjs_text(alice, "y")])
    assert bob.session.receive(third, now=0.0) == []  # waits for clock 1
    forged = signed_update(
        bob.session, alice.signer, 1, [forged_yjs_under(ci.new_yjs_client_id(user()))]
    )
    events = bob.session.receive(forged, now=0.0)
    assert [type(e).__name__ for e in events] == ["MessageRejected", "UpdateApplied"]
    assert bob.session.update_clocks[alice.signer.public_key] == 2
    assert bob.content == "xy"


def forged_yjs_text(peer: Y, text: str) -> bytes:
    before = peer.doc.get_state()
    peer.text.insert(len(peer.text), text)
    return peer.doc.get_update(before)


def forged_yjs_under(client_id: int) -> bytes:
    doc: pycrdt.Doc = pycrdt.Doc(client_id=client_id)
    doc.get("other", type=pycrdt.Text).insert(0, "z")
    return doc.get_update()


def test_legacy_ids_keep_working_unless_refused_by_configuration() -> None:
    broker = MemoryBroker()
    old = Y(legacy_yjs_doc())  # a document written before the binding
    po = Participant(old.session, broker)
    old.text.insert(0, "old")
    po.sync()
    bound = Y()
    pb = Participant(bound.session, broker)
    pb.sync()
    old.text.insert(3, " still")
    po.sync()
    bound.text.insert(0, ">")
    pb.sync()
    po.sync()
    assert bound.content == old.content == ">old still"
    # strict: the snapshot loads (snapshots hold everyone's content), legacy updates do not
    strict = Y(config=STRICT)
    ps = Participant(strict.session, broker)
    ps.pull()
    assert rejections(ps) == [218]  # the legacy writer's update after the snapshot
    assert bound.signer.public_key in strict.session.update_clocks
    with pytest.raises(LocalIdentityError):
        Y(legacy_yjs_doc(), config=STRICT)


def test_a_document_bound_to_another_identity_is_refused_at_open() -> None:
    other = crypto.SigningKeyPair.generate()
    with pytest.raises(LocalIdentityError) as raised:
        Y(secsync.new_yjs_doc(other))
    assert raised.value.code == 219
    doc = core.Document(ci.new_actor_id(other.public_key))
    with pytest.raises(LocalIdentityError):
        DocumentSession(DOC_ID, crypto.SigningKeyPair.generate(), KEY, doc)
    mine = core.Document(ci.new_actor_id(other.public_key))
    DocumentSession(DOC_ID, other, KEY, mine)
    assert ci.actor_bound_to(mine.get_actor(), other.public_key)


def test_every_device_of_a_user_writes_under_its_ids_through_user_of() -> None:
    owner = crypto.SigningKeyPair.generate().public_key
    devices = [crypto.SigningKeyPair.generate() for _ in range(2)]
    of: dict[bytes, bytes] = {d.public_key: owner for d in devices}

    def user_of(key: bytes) -> bytes:
        return of.get(key, key)

    broker = MemoryBroker()
    peers = [Y(secsync.new_yjs_doc(owner), signer=d, user_of=user_of) for d in devices]
    assert all(ci.yjs_id_bound_to(p.doc.client_id, owner) for p in peers)
    parts = [Participant(p.session, broker) for p in peers]
    for i, (peer, part) in enumerate(zip(peers, parts, strict=True)):
        part.pull()
        peer.text.insert(0, str(i))
        part.sync()
    reader = Y(user_of=user_of)
    reader.session.load(None, now=0.0)
    assert not [
        e
        for e in reader.session.receive_many(broker.log, now=0.0)
        if isinstance(e, MessageRejected)
    ]
    assert reader.content == peers[1].content == "10"
    unaware = Y()  # without the device mapping, a device is not the owner
    unaware.session.load(None, now=0.0)
    events = unaware.session.receive_many(broker.log, now=0.0)
    assert [e.error.code for e in events if isinstance(e, MessageRejected)] == [218]


def test_content_of_others_held_before_opening_is_not_sent_as_ours() -> None:
    broker = MemoryBroker()
    bob = Y()
    pb = Participant(bob.session, broker)
    bob.text.insert(0, "bob")
    pb.sync()
    # Alice's application fills her document with Bob's state before opening it
    alice_signer = crypto.SigningKeyPair.generate()
    doc = secsync.new_yjs_doc(alice_signer)
    doc.apply_update(bob.doc.get_update())
    doc.get("text", type=pycrdt.Text).insert(3, " and alice")
    alice = Y(doc, signer=alice_signer)
    pa = Participant(alice.session, broker)
    pa.sync()
    pb.sync()
    reader = Y()
    reader.session.load(None, now=0.0)
    events = reader.session.receive_many(broker.log, now=0.0)
    assert not [e for e in events if isinstance(e, MessageRejected)]
    assert reader.content == bob.content == "bob and alice"
    assert sum(isinstance(e, UpdateApplied) for e in events) >= 1


def test_recovery_does_not_resend_other_users_content() -> None:
    bob, alice = Y(), Y()
    bob.text.insert(0, "bob")
    alice.doc.apply_update(bob.doc.get_update())
    alice.text.insert(3, "+alice")
    empty: pycrdt.Doc = plain_yjs_doc()
    missing = alice.session.crdt.missing_from(empty.get_update())
    clients: set[Any] = set()
    for change in missing:
        clients |= getattr(alice.session.crdt, "authors_of")([change])  # noqa: B009
    assert clients == {alice.doc.client_id}
    # legacy content (anyone may write it) is still sent again, others' bound content is not
    legacy = Y(legacy_yjs_doc())
    legacy.doc.apply_update(alice.doc.get_update())
    legacy.text.insert(0, "old ")
    resent = legacy.session.crdt.missing_from(empty.get_update())
    assert getattr(legacy.session.crdt, "authors_of")(resent) == {legacy.doc.client_id}  # noqa: B009
    am = AM()
    other = core.Document(ci.new_actor_id(user()))
    with other.transaction() as tx:
        tx.put(core.ROOT, "k", core.ScalarType.Str, "v")
    am.doc.merge(other)
    am.type(0, "mine")
    saved = core.Document().save()
    assert am.session.crdt.missing_from(saved) != []
    actors = getattr(am.session.crdt, "authors_of")(am.session.crdt.missing_from(saved))  # noqa: B009
    assert actors == {am.doc.get_actor()}
    assert am.session.untaken_changes == 1


def test_an_adapter_without_identities_is_not_checked() -> None:
    class Plain:
        def __init__(self) -> None:
            self.applied: list[bytes] = []

        def take_local_changes(self) -> list[bytes]:
            return []

        def apply_changes(self, changes: Any) -> None:
            self.applied += changes

        def apply_snapshot(self, state: bytes) -> None:
            pass

        def encode_state(self) -> bytes:
            return b""

        def missing_from(self, state: bytes) -> list[bytes]:
            return []

        def close(self) -> None:
            pass

    broker = MemoryBroker()
    alice = Y()
    pa = Participant(alice.session, broker)
    alice.text.insert(0, "a")
    pa.sync()
    adapter = Plain()
    session = DocumentSession(DOC_ID, crypto.SigningKeyPair.generate(), KEY, adapter)
    session.load(None, now=0.0)
    forged = forged_yjs_under(ci.new_yjs_client_id(user()))
    mallory = crypto.SigningKeyPair.generate()
    session.receive_many(broker.log, now=0.0)
    events = session.receive(signed_update(session, mallory, 0, [forged]), now=0.0)
    assert [type(e) for e in events] == [UpdateApplied]
    assert adapter.applied[-1] == forged
