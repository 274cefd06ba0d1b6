"""Issue 20 through the broker: a member signs content under another member's Yjs client id or
Automerge actor while she is offline. Every reader refuses it (218), her real edit applies
everywhere and everyone, a reader arriving later included, ends with her text."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pycrdt
import pytest
from automerge import core

import secsync
from secsync.config import SecsyncConfig
from secsync.crdt import CrdtAdapter, adapter_for
from secsync.errors import LocalIdentityError, SecsyncError
from secsync.protocol import crypto
from secsync.protocol.events import Event, MessageRejected
from secsync.transport import Document
from tests.factories import automerge_text, automerge_type
from tests.protocol.test_crdt_identity import forged_automerge, forged_yjs, legacy_yjs_doc
from tests.transport.helpers import KEY

# No gap is ever healed by a timer here: an update that waited for a clock the refused one
# did not spend would wait past every test's timeout.
CONFIG = SecsyncConfig(
    batch_interval=0.002, snapshot_after_updates=0, gap_refetch_after=3600, gap_recover_after=3600
)


class Forger:
    """Mallory's adapter: a real one for what she receives, and whatever changes she chooses
    handed out as local ones. It has no identity hooks, so her session checks nothing."""

    def __init__(self, inner: CrdtAdapter) -> None:
        self.inner = inner
        self.forged: list[bytes] = []

    def take_local_changes(self) -> list[bytes]:
        forged, self.forged = self.forged, []
        return forged + self.inner.take_local_changes()

    def untaken_changes(self) -> int:
        return len(self.forged) + int(getattr(self.inner, "untaken_changes")())  # noqa: B009

    def apply_changes(self, changes: Sequence[bytes]) -> None:
        self.inner.apply_changes(changes)

    def apply_snapshot(self, state: bytes) -> None:
        self.inner.apply_snapshot(state)

    def encode_state(self) -> bytes:
        return self.inner.encode_state()

    def missing_from(self, state: bytes) -> list[bytes]:
        return self.inner.missing_from(state)

    def close(self) -> None:
        self.inner.close()


class Watch:
    """Every event of a document, kept, and waiting on them (never on the clock)."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.events: list[Event] = []

    def refused(self) -> list[int]:
        codes = [e.error.code for e in self.events if isinstance(e, MessageRejected)]
        return codes + [e.code for e in self.doc.load_errors]

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until ``predicate`` holds, re-checking after each event (those already queued
        are taken first)."""
        queued = self.doc._events
        while not queued.empty():
            self.events.append(queued.get_nowait())
        async with asyncio.timeout(timeout):
            while not predicate():
                self.events.append(await self.doc.next_event())


async def open_watched(
    client: secsync.SecsyncClient, doc_id: str, who: crypto.SigningKeyPair, crdt: object
) -> Watch:
    return Watch(await client.open(doc_id, key=KEY, signing_key=who, crdt=crdt))


def ytext(doc: pycrdt.Doc) -> pycrdt.Text:
    return doc.get("text", type=pycrdt.Text)


async def test_yjs_forged_client_id_is_refused_by_every_reader(broker: Any) -> None:
    alice, bob, mallory, carol = (crypto.SigningKeyPair.generate() for _ in range(4))
    a_doc, b_doc, c_doc = (secsync.new_yjs_doc(k) for k in (alice, bob, carol))
    m_doc = secsync.new_yjs_doc(mallory)
    forger = Forger(adapter_for(m_doc))
    async with (
        secsync.connect(broker.url, config=CONFIG) as bc,
        secsync.connect(broker.url, config=CONFIG) as mc,
    ):
        async with secsync.connect(broker.url, config=CONFIG) as ac:
            a = await open_watched(ac, "pay", alice, a_doc)
            ytext(a_doc).insert(0, "Pay 250 EUR")
            await a.doc.flush(5)
        # Alice is offline now
        b = await open_watched(bc, "pay", bob, b_doc)
        m = await open_watched(mc, "pay", mallory, forger)
        await b.until(lambda: str(ytext(b_doc)) == "Pay 250 EUR")
        await m.until(lambda: str(ytext(m_doc)) == "Pay 250 EUR")
        forger.forged.append(forged_yjs(a_doc.client_id, m_doc.get_update()))
        await m.doc.flush(5)
        await b.until(lambda: 218 in b.refused())
        assert str(ytext(b_doc)) == "Pay 250 EUR"
        # Mallory's next, honest update: applied at once (gap timers are an hour)
        ytext(m_doc).insert(len(ytext(m_doc)), "!")
        await m.doc.flush(5)
        await b.until(lambda: str(ytext(b_doc)) == "Pay 250 EUR!")
        # Alice is back with her document; she edits at the Yjs clock Mallory used
        async with secsync.connect(broker.url, config=CONFIG) as ac:
            a = await open_watched(ac, "pay", alice, a_doc)
            await a.until(lambda: str(ytext(a_doc)) == "Pay 250 EUR!" and 218 in a.refused())
            text = ytext(a_doc)
            del text[4:7]
            text.insert(4, "300")
            await a.doc.flush(5)
            assert a.doc.is_synced
            expected = "Pay 300 EUR!"
            await b.until(lambda: str(ytext(b_doc)) == expected)
            await m.until(lambda: str(ytext(m_doc)) == expected)
            async with secsync.connect(broker.url, config=CONFIG) as cc:
                c = await open_watched(cc, "pay", carol, c_doc)
                await c.until(lambda: str(ytext(c_doc)) == expected and 218 in c.refused())
            assert str(ytext(a_doc)) == expected


async def test_automerge_forged_actor_is_refused_and_her_change_is_no_duplicate(
    broker: Any,
) -> None:
    alice, bob, mallory, carol = (crypto.SigningKeyPair.generate() for _ in range(4))
    a_doc, b_doc, m_doc, c_doc = (core.Document() for _ in range(4))
    forger = Forger(adapter_for(m_doc))
    async with (
        secsync.connect(broker.url, config=CONFIG) as bc,
        secsync.connect(broker.url, config=CONFIG) as mc,
    ):
        async with secsync.connect(broker.url, config=CONFIG) as ac:
            a = await open_watched(ac, "pay-am", alice, a_doc)
            automerge_type(a_doc, 0, "Pay 250 EUR")
            await a.doc.flush(5)
        actor = a_doc.get_actor()
        b = await open_watched(bc, "pay-am", bob, b_doc)
        m = await open_watched(mc, "pay-am", mallory, forger)
        await b.until(lambda: automerge_text(b_doc) == "Pay 250 EUR")
        await m.until(lambda: automerge_text(m_doc) == "Pay 250 EUR")
        forger.forged.append(forged_automerge(actor, m_doc.save()))
        await m.doc.flush(5)
        await b.until(lambda: 218 in b.refused())
        automerge_type(m_doc, len(automerge_text(m_doc)), "!")
        await m.doc.flush(5)
        await b.until(lambda: automerge_text(b_doc) == "Pay 250 EUR!")
        async with secsync.connect(broker.url, config=CONFIG) as ac:
            a = await open_watched(ac, "pay-am", alice, a_doc)
            assert a_doc.get_actor() == actor  # still hers: bound to her key
            await a.until(lambda: automerge_text(a_doc) == "Pay 250 EUR!")
            found = a_doc.get(core.ROOT, "text")
            assert found is not None
            with a_doc.transaction() as tx:
                for _ in range(3):
                    tx.delete(found[1], 4)
                for i, char in enumerate("300"):
                    tx.insert(found[1], 4 + i, core.ScalarType.Str, char)
            await a.doc.flush(5)
            expected = "Pay 300 EUR!"
            await b.until(lambda: automerge_text(b_doc) == expected)
            await m.until(lambda: automerge_text(m_doc) == expected)
            async with secsync.connect(broker.url, config=CONFIG) as cc:
                c = await open_watched(cc, "pay-am", carol, c_doc)
                await c.until(lambda: automerge_text(c_doc) == expected and 218 in c.refused())


async def test_a_document_with_legacy_ids_keeps_loading_and_taking_legacy_updates(
    broker: Any,
) -> None:
    old, new, strict = (crypto.SigningKeyPair.generate() for _ in range(3))
    o_doc = legacy_yjs_doc()  # written before the binding (or by a JavaScript client)
    n_doc = secsync.new_yjs_doc(new)
    s_doc = secsync.new_yjs_doc(strict)
    async with (
        secsync.connect(broker.url, config=CONFIG) as oc,
        secsync.connect(broker.url, config=CONFIG) as nc,
    ):
        o = await open_watched(oc, "legacy", old, o_doc)
        ytext(o_doc).insert(0, "old")
        await o.doc.flush(5)
        ytext(o_doc).insert(3, " text")
        await o.doc.flush(5)
        n = await open_watched(nc, "legacy", new, n_doc)
        await n.until(lambda: str(ytext(n_doc)) == "old text")
        ytext(o_doc).insert(0, "still ")
        await o.doc.flush(5)
        await n.until(lambda: str(ytext(n_doc)) == "still old text")
        ytext(n_doc).insert(len(ytext(n_doc)), "!")
        await n.doc.flush(5)
        await o.until(lambda: str(ytext(o_doc)) == "still old text!")
        assert n.refused() == [] and o.refused() == []
        # a participant that refuses legacy ids: the snapshot loads, the legacy updates not
        strict_config = SecsyncConfig(
            batch_interval=0.002, snapshot_after_updates=0, legacy_crdt_ids=False
        )
        async with secsync.connect(broker.url, config=strict_config) as sc:
            s = await open_watched(sc, "legacy", strict, s_doc)
            # the two legacy updates after the snapshot are refused; the bound "!" applies but
            # Yjs holds it back: its left origin is refused content (all must agree on this)
            await s.until(lambda: new.public_key in s.doc.session.update_clocks)
            assert s.refused() == [218, 218]
            assert str(ytext(s_doc)) == "old"
            with pytest.raises(LocalIdentityError):
                await sc.open("legacy-2", key=KEY, signing_key=old, crdt=legacy_yjs_doc())


async def test_opening_a_document_bound_to_another_identity_is_refused(broker: Any) -> None:
    me, other = crypto.SigningKeyPair.generate(), crypto.SigningKeyPair.generate()
    async with secsync.connect(broker.url, config=CONFIG) as client:
        with pytest.raises(LocalIdentityError) as raised:
            await client.open("other", key=KEY, signing_key=me, crdt=secsync.new_yjs_doc(other))
        assert isinstance(raised.value, SecsyncError) and raised.value.code == 219
        assert client.documents == {}
