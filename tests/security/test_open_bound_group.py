"""Bounded loading keeps the membership-chain check of closed groups: through a real
nats-server, a run of stale-chain snapshots stored by a removed admin after many honest
snapshots, each naming the one before as its parent, is told by the chains loading weighs
before its choice (``load_chain_window``), without reading the whole subject."""

from __future__ import annotations

import secsync
from secsync.transport.subjects import DocumentSubjects
from tests.security.forge import group_snapshot, native
from tests.security.test_group_trust import CONFIG, Member, _roles


async def test_a_stale_chain_after_many_snapshots_is_passed_over_by_a_fresh_device(
    broker,
) -> None:
    doc_id = "bounded-stale-chain"
    alice, xavier, wendy = Member("alice"), Member("xavier"), Member("wendy")
    founders = _roles(a=(alice, "admin"), x=(xavier, "admin"), w=(wendy, "writer"))
    async with (
        secsync.connect(broker.url, config=CONFIG) as c1,
        secsync.connect(broker.url, config=CONFIG) as c2,
    ):
        await alice.open(c1, doc_id, founders)
        alice.text.insert(0, "founded")
        await alice.doc.flush(5)
        await xavier.open(c2, doc_id, founders)
        alice.group.remove(xavier.key)
        alice.doc.write_snapshot()
        await alice.doc.flush(5)
        await xavier.watch(lambda: 1004 in xavier.codes())
        old = xavier.group._epochs[xavier.group._active]  # type: ignore[index]
        await xavier.doc.close()
        for i in range(80):  # more honest snapshots than loading reads back
            alice.text.insert(len(alice.text), f" {i}")
            alice.doc.write_snapshot()
            await alice.doc.flush(5)
        latest = alice.doc.session.active_snapshot
        assert latest is not None
        expected = str(alice.text)
        # Twenty stale snapshots in a row, each a child of the one before: the first window
        # loading reads back holds nothing else, and each one's parent is found at once.
        parent = latest
        for i in range(20):
            stale = group_snapshot(
                xavier.signer,
                doc_id,
                list(old.chain),
                old.key,
                old.sealed,
                text=f"the old days {i}",
                parent=parent,
            )
            await c2.js.publish(DocumentSubjects.of(doc_id).snapshot, native(stale))
            parent = stale.info()

        async with secsync.connect(broker.url, config=CONFIG) as c3:
            fresh = Member("wendy")
            fresh.signer = wendy.signer
            await fresh.open(c3, doc_id, founders)
            assert fresh.doc.session.active_snapshot == latest
            assert str(fresh.text) == expected
            assert xavier.key not in fresh.group.members
            assert 116 in fresh.codes()  # the stale chain, passed over and reported
            # the window of chains before the choice reached past the stale ones
            search = fresh.doc.load_search
            assert search is not None
            # at least load_chain_window (32) before the chosen one, not all 103
            assert search.windows >= 3 and 34 <= search.messages < 103
