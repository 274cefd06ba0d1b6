"""Replays, reordering, duplicates, drops, delays; old snapshots, forks and withheld authors.

Two ways to misbehave, both as a broker can: alter what one client is shown (the relay), or
store crafted messages in the stream (publishing straight to the document's subjects, as a
broker or anyone allowed to publish there can).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pycrdt
import pytest

from secsync.protocol import crypto
from secsync.protocol.events import GapDetected, SnapshotApplied
from secsync.protocol.messages import Snapshot, Update
from secsync.protocol.session import DocumentSession
from secsync.transport.events import PublishFailed
from tests.conformance.harness import (
    FAST,
    KEY,
    Peer,
    World,
    inject,
    new_doc_id,
    stored_decoded,
)
from tests.conformance.plugin import Conformance
from tests.conformance.relay import Frame, RelayConnection, RuleScenario
from tests.factories import plain_yjs_doc


async def _writer_and_reader(world: World, label: str, **config: object) -> tuple[str, Peer, Peer]:
    doc_id = new_doc_id(label)
    cfg = replace(FAST, **config)  # type: ignore[arg-type]
    writer = await world.peer("writer", doc_id, via_relay=False, config=cfg)
    await writer.type("base")
    reader = await world.peer("victim", doc_id, config=cfg)
    assert reader.content == "base"
    return doc_id, writer, reader


def _is_update_of(scenario: RuleScenario, frame: Frame, author: bytes) -> Update | None:
    message = scenario.decode(frame)
    if isinstance(message, Update) and message.author == author:
        return message
    return None


# --- replays stored in the stream ------------------------------------------------------------


async def test_replayed_update_is_a_no_op(world: World, conformance: Conformance) -> None:
    conformance.declare(
        "R-replay-update",
        "old update stored again",
        attack="a copy of an already applied update is stored again on the update subject",
        expected="rejected 214 by every client; no text change; later edits converge",
    )
    _, writer, reader = await _writer_and_reader(world, "replay-upd")
    await writer.type(" one")
    await writer.type(" two")
    await world.converge([writer, reader])
    old = next(
        m for _, m in await stored_decoded(writer.client, writer.doc) if isinstance(m, Update)
    )
    await inject(writer.client, writer.doc, old)
    await world.until(lambda: reader.has_code(214))
    assert reader.content == writer.content == "base one two"
    assert not writer.rejected()  # its own update: recognised as already stored, silently
    conformance.observe("reader: rejected 214; writer (its author): ignored; text unchanged")
    await writer.type(" three")
    await world.converge([writer, reader])
    await reader.type(" four")
    assert await world.converge([writer, reader]) == "base one two three four"
    conformance.observe("later edits converge")


async def test_replayed_update_of_a_superseded_snapshot_is_a_no_op(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "R-replay-old-epoch-update",
        "update of a superseded snapshot stored again",
        attack="an update that a newer snapshot already includes is stored again",
        expected="rejected 214 ('already part of a newer snapshot'); no text change",
    )
    _, writer, reader = await _writer_and_reader(world, "replay-epoch", snapshot_after_updates=2)
    await writer.type(" one")
    await writer.type(" two")
    await writer.type(" three")  # a snapshot now includes " one" and " two"
    await world.converge([writer, reader])
    assert writer.doc is not None and writer.doc.session.active_snapshot is not None
    newest = writer.doc.session.active_snapshot.snapshot_id
    await world.until(lambda: newest in [e.snapshot_id for e in reader.of(SnapshotApplied)])
    old = next(
        m for _, m in await stored_decoded(writer.client, writer.doc) if isinstance(m, Update)
    )
    await inject(writer.client, writer.doc, old)
    await world.until(lambda: reader.has_code(214))
    assert reader.content == "base one two three"
    conformance.observe("rejected 214; text unchanged")
    await writer.type(" four")
    assert await world.converge([writer, reader]) == "base one two three four"


async def test_replayed_snapshot_changes_nothing_for_existing_clients(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "R-replay-snapshot",
        "superseded snapshot stored again (clients online)",
        attack="a copy of a superseded snapshot is stored again on the snapshot subject",
        expected="rejected 116 by every client; no text change; later edits still get stored "
        "and converge",
    )
    _, writer, reader = await _writer_and_reader(world, "replay-snap", snapshot_after_updates=2)
    for word in (" one", " two", " three"):
        await writer.type(word)
    await world.converge([writer, reader])
    first = next(
        m for _, m in await stored_decoded(writer.client, writer.doc) if isinstance(m, Snapshot)
    )
    await inject(writer.client, writer.doc, first)
    await world.until(lambda: reader.has_code(116) and writer.has_code(116))
    assert reader.content == writer.content == "base one two three"
    conformance.observe("rejected 116 by writer and reader; text unchanged")
    writer.text.insert(len(writer.text), " four")
    await writer.doc.flush(10)  # never returns today: the update is refused again and again
    assert await world.converge([writer, reader]) == "base one two three four"


async def test_replayed_snapshot_is_not_loaded_as_the_latest(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "R-replay-snapshot-fresh-reader",
        "superseded snapshot stored again (a reader opens afterwards)",
        attack="a copy of a superseded snapshot is the last message on the snapshot subject "
        "when a new reader opens the document",
        expected="the new reader loads the current text (the replay is recognised: its id was "
        "superseded earlier in the stream)",
    )
    doc_id, writer, _ = await _writer_and_reader(world, "replay-fresh", snapshot_after_updates=2)
    for word in (" one", " two", " three"):
        await writer.type(word)
    first = next(
        m for _, m in await stored_decoded(writer.client, writer.doc) if isinstance(m, Snapshot)
    )
    await inject(writer.client, writer.doc, first)
    fresh = await world.peer("fresh", doc_id)
    conformance.observe(f"fresh reader loaded {fresh.content!r}")
    assert fresh.content == "base one two three"


# --- reordering, duplicates, drops, delays in transit ---------------------------------------


@pytest.mark.parametrize("how", ["payloads swapped", "frames swapped"])
async def test_reordered_updates_converge(world: World, conformance: Conformance, how: str) -> None:
    conformance.declare(
        f"R-reorder-{how.split(maxsplit=1)[0]}",
        f"updates reordered in transit ({how})",
        attack="relay delivers the writer's update 1 before update 0 to one reader"
        + (
            " (each under the other's stream sequence)"
            if how == "payloads swapped"
            else " (with their own stream sequences, so the first looks like a redelivery)"
        ),
        expected="no wrong text; the reader queues update 1 (or refetches update 0) and converges",
    )
    doc_id, writer, reader = await _writer_and_reader(world, "reorder")
    scenario = RuleScenario(doc_id)
    held: list[Frame] = []
    author = writer.signer.public_key

    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        if conn.name != "victim" or not frame.is_js_delivery:
            return None
        update = _is_update_of(scenario, frame, author)
        if update is None or len(held) > 1:
            return None
        if update.clock == 0:
            held.append(frame)
            return []
        first = held[0]
        held.append(frame)
        if how == "payloads swapped":
            return [first.with_payload(frame.payload), frame.with_payload(first.payload)]
        return [frame, first]

    scenario._to_client = to_client
    world.relay.scenario = scenario
    await writer.type(" one")
    await writer.type(" two")
    await world.converge([writer, reader])
    await world.until(lambda: len(reader.applied_from(author)) == 2)
    assert len(held) == 2
    assert set(reader.history) <= {"base", "base one", "base one two"}
    assert [e.clock for e in reader.applied_from(author)] == [0, 1]
    conformance.observe(
        f"applied in order 0, 1; rejections {reader.codes() or 'none'}; "
        f"{reader.doc.redelivered} delivery ignored as redelivered"
    )
    await reader.type(" three")
    await world.converge([writer, reader])


async def test_duplicated_deliveries_are_ignored(world: World, conformance: Conformance) -> None:
    conformance.declare(
        "R-duplicate-transit",
        "every delivery duplicated in transit",
        attack="relay sends each stored message twice to one reader (consumer sequences "
        "renumbered so the client cannot tell)",
        expected="the second copy is ignored (same stream sequence); no rejection; converges",
    )
    doc_id, writer, reader = await _writer_and_reader(world, "dup")
    scenario = RuleScenario(doc_id)
    scenario._to_client = lambda conn, frame: (
        [frame, frame] if conn.name == "victim" and frame.is_js_delivery else None
    )
    world.relay.scenario = scenario
    for word in (" one", " two", " three"):
        await writer.type(word)
    await world.converge([writer, reader])
    author = writer.signer.public_key
    await world.until(lambda: reader.doc.redelivered >= 3 and len(reader.applied_from(author)) == 3)
    assert not reader.rejected()
    assert [e.clock for e in reader.applied_from(writer.signer.public_key)] == [0, 1, 2]
    conformance.observe(f"{reader.doc.redelivered} duplicates ignored; no rejection; converged")


@pytest.mark.parametrize("stealthy", [False, True])
async def test_dropped_update_heals(world: World, conformance: Conformance, stealthy: bool) -> None:
    conformance.declare(
        "R-drop-stealthy" if stealthy else "R-drop",
        "update dropped in transit" + (" (stealthily)" if stealthy else ""),
        attack="relay drops the live delivery of one update to one reader"
        + (
            ", renumbering the consumer sequences so the ordered consumer cannot notice"
            if stealthy
            else "; the consumer sequence jumps"
        ),
        expected=(
            "the next update of that author shows the gap; the stored copy is fetched; converges"
            if stealthy
            else "the ordered consumer notices the jump and resumes from the last sequence; "
            "converges"
        ),
    )
    doc_id, writer, reader = await _writer_and_reader(world, "drop")
    world.relay.renumber = stealthy
    scenario = RuleScenario(doc_id)
    dropped: list[Frame] = []

    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        if conn.name == "victim" and frame.is_js_delivery and not dropped:
            update = _is_update_of(scenario, frame, writer.signer.public_key)
            if update is not None and update.clock == 0:
                dropped.append(frame)
                return []
        return None

    scenario._to_client = to_client
    world.relay.scenario = scenario
    await writer.type(" one")
    await writer.type(" two")
    await world.converge([writer, reader])
    assert dropped and set(reader.codes()) <= {214}  # refetched copies of applied updates
    kinds = sorted({type(e).__name__ for e in reader.gap_events()})
    if stealthy:
        await world.until(lambda: any(isinstance(e, GapDetected) for e in reader.events))
        kinds = sorted({type(e).__name__ for e in reader.gap_events()})
    conformance.observe(f"converged; healing events: {', '.join(kinds) or 'none needed'}")
    await reader.type(" three")
    await world.converge([writer, reader])


async def test_delayed_deliveries_converge(world: World, conformance: Conformance) -> None:
    conformance.declare(
        "R-delay",
        "every delivery delayed",
        attack="relay holds every message to one reader for 0.3 s",
        expected="no rejection; converges once delivered",
    )
    doc_id, writer, reader = await _writer_and_reader(world, "delay")
    scenario = RuleScenario(doc_id)

    async def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        if conn.name == "victim" and frame.is_js_delivery:
            await asyncio.sleep(0.3)  # the relay's misbehaviour, not the test's synchronisation
        return None

    scenario._to_client = to_client
    world.relay.scenario = scenario
    for word in (" one", " two", " three", " four"):
        await writer.type(word)
    await world.converge([writer, reader])
    assert not reader.rejected()
    conformance.observe("converged after the delay; no rejection")


# --- old snapshots on load -------------------------------------------------------------------


@pytest.mark.parametrize("hide_later", [False, True])
async def test_old_snapshot_served_as_latest_on_load(
    world: World, conformance: Conformance, hide_later: bool
) -> None:
    conformance.declare(
        "H-old-snapshot-hidden-rest" if hide_later else "H-old-snapshot",
        "old snapshot served as the latest on load"
        + (", later messages hidden from the load" if hide_later else ""),
        attack="while the reader loads, the relay withholds every newer snapshot of the "
        "document (the reader's reads of the snapshot subject end at the first one)"
        + ("; and everything stored after the first snapshot" if hide_later else ""),
        expected="the reader opens with the old (genuine) text; updates that name snapshots "
        "it never received ask for recovery, which loads the latest snapshot: converges",
    )
    doc_id = new_doc_id("old-snap")
    cfg = replace(FAST, snapshot_after_updates=2, gap_refetch_after=0.2, gap_recover_after=0.5)
    writer = await world.peer("writer", doc_id, via_relay=False, config=cfg)
    await writer.type("base")
    for word in (" one", " two", " three", " four"):
        await writer.type(word)
    stored = await stored_decoded(writer.client, writer.doc)
    first_seq, _first = next((s, m) for s, m in stored if isinstance(m, Snapshot))
    assert sum(isinstance(m, Snapshot) for _, m in stored) >= 2
    scenario = RuleScenario(doc_id)
    served: list[int] = []
    loading = True
    snapshot_subject = writer.doc.subjects.snapshot

    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        # Only what the victim reads while it loads.
        if not loading or conn.name != "victim" or frame.stored_subject is None:
            return None
        sequence = frame.stream_sequence or 0
        if sequence <= first_seq:
            return None
        if frame.stored_subject == snapshot_subject or hide_later:
            served.append(sequence)
            return []
        return None

    scenario._to_client = to_client
    world.relay.scenario = scenario
    reader = await world.peer("victim", doc_id, config=cfg)
    loading = False
    assert served, "the relay did not see the load"
    conformance.observe(f"reader opened with {reader.content!r}")
    # genuine but stale: the first snapshot, plus (unless hidden) the updates made on it
    assert reader.content == "base" if hide_later else reader.content.startswith("base")
    assert reader.content != writer.content
    await world.converge([writer, reader])
    await reader.type(" five")
    assert await world.converge([writer, reader]) == "base one two three four five"
    conformance.observe("recovered and converged; reader's edit stored")


def _reads(request: Frame, subject: str) -> bool:
    """Whether a direct-get request pages through exactly ``subject``."""
    try:
        return json.loads(request.payload).get("next_by_subj") == subject
    except (ValueError, AttributeError):
        return False


# --- forks -----------------------------------------------------------------------------------


def _child_snapshot(doc_id: str, parent: Snapshot, words: str) -> Snapshot:
    """A legitimate participant's snapshot on ``parent``, as a concurrent writer makes it."""
    ydoc: pycrdt.Doc = plain_yjs_doc()
    session = DocumentSession(doc_id, crypto.SigningKeyPair.generate(), KEY, ydoc)
    session.load(parent, now=0.0)
    text = ydoc.get("text", type=pycrdt.Text)
    text.insert(len(text), words)
    return session.create_snapshot()


async def _fork(world: World, label: str) -> tuple[str, Peer, Peer, Peer, Snapshot, Snapshot]:
    doc_id = new_doc_id(label)
    writer = await world.peer("writer", doc_id, via_relay=False)
    await writer.type("base")
    alice = await world.peer("alice", doc_id)
    bob = await world.peer("bob", doc_id)
    stored = await stored_decoded(writer.client, writer.doc)
    root = next(m for _, m in stored if isinstance(m, Snapshot))
    return (
        doc_id,
        writer,
        alice,
        bob,
        _child_snapshot(doc_id, root, " fork-x"),
        _child_snapshot(doc_id, root, " fork-y"),
    )


async def test_fork_is_detected_when_a_sibling_arrives(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "H-fork",
        "forked snapshot chain shown to different clients",
        attack="the broker stores two children of one snapshot (which compare-and-set forbids) "
        "and shows one to alice, the other to bob; alice sees her sibling later",
        expected="each accepts the child it is shown; alice (and the honest writer) reject the "
        "sibling with 112, report it and recover (SnapshotApplied recovered=True) by merging "
        "it and re-sending what it lacks; all converge with both branches' text",
    )
    doc_id, writer, alice, bob, left, right = await _fork(world, "fork")
    scenario = RuleScenario(doc_id)
    held: list[Frame] = []
    reveal = asyncio.Event()

    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        message = scenario.decode(frame) if frame.stored_subject else None
        if conn.name == "bob" and isinstance(message, Snapshot) and message == left:
            return []  # bob never sees the left branch
        if (
            conn.name == "alice"
            and frame.is_js_delivery
            and not reveal.is_set()
            and (held or (isinstance(message, Snapshot) and message == right))
        ):
            held.append(frame)  # alice sees the right branch (and what follows) later
            return []
        return None

    scenario._to_client = to_client
    world.relay.scenario = scenario
    await inject(writer.client, writer.doc, left)
    await inject(writer.client, writer.doc, right)
    await world.until(lambda: "fork-x" in alice.content and "fork-y" in bob.content)
    assert "fork-y" not in alice.content and "fork-x" not in bob.content
    assert not alice.recovered() and not bob.recovered()
    conformance.observe("alice accepted the left child, bob the right one")
    reveal.set()
    await world.relay.release(world.relay.by_name("alice")[-1], held)
    await world.until(lambda: alice.has_code(112) and alice.recovered())
    conformance.observe("alice: rejected 112, recovered")
    final = await world.converge([writer, alice, bob])
    assert final.count("fork-x") == 1 and final.count("fork-y") == 1 and "base" in final
    await world.until(lambda: writer.has_code(112) and writer.recovered())
    conformance.observe(f"writer: 112 and recovered; all converged on {final!r}")
    await bob.type(" bob")
    await world.converge([writer, alice, bob])


async def test_fork_kept_apart_is_not_detected(world: World, conformance: Conformance) -> None:
    conformance.declare(
        "H-fork-partitioned",
        "forked snapshot chain, clients kept apart",
        attack="as H-fork, but alice is never shown the right branch and bob never the left",
        expected="undetectable while the broker keeps the two views apart (fork consistency): "
        "no event reports it; each text is genuine (a state of its branch)",
    )
    doc_id, writer, alice, bob, left, right = await _fork(world, "fork-apart")
    assert writer.doc is not None
    await writer.doc.close()  # only alice and bob stay: nobody is shown both branches
    scenario = RuleScenario(doc_id)

    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        message = scenario.decode(frame) if frame.stored_subject else None
        hidden = {"alice": right, "bob": left}.get(conn.name or "")
        return [] if hidden is not None and message == hidden else None

    scenario._to_client = to_client
    world.relay.scenario = scenario
    await inject(writer.client, writer.doc, left)
    await inject(writer.client, writer.doc, right)
    await world.until(lambda: alice.content == "base fork-x" and bob.content == "base fork-y")
    assert not alice.rejected() and not bob.rejected()
    assert not alice.gap_events() and not bob.gap_events()
    conformance.observe("alice shows 'base fork-x', bob 'base fork-y'; no event on either side")


# --- withheld authors ------------------------------------------------------------------------


async def test_withheld_author_is_detected_when_a_later_update_arrives(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "H-withhold-detected",
        "one author's updates withheld from one reader",
        attack="the broker never shows the writer's updates 0 and 1 to the victim (live or "
        "refetched), while another reader gets them; update 2 is delivered",
        expected="the victim detects the gap: GapDetected, RecoveryNeeded, then 202 (clocks "
        "skipped); its text stays a genuine state; it keeps working, and converges once a "
        "snapshot that includes the withheld updates arrives",
    )
    doc_id = new_doc_id("withhold")
    cfg = replace(FAST, snapshot_after_updates=4)
    writer = await world.peer("writer", doc_id, via_relay=False, config=cfg)
    await writer.type("base")
    victim = await world.peer("victim", doc_id, config=cfg)
    witness = await world.peer("witness", doc_id, config=cfg)
    scenario = RuleScenario(doc_id)
    author = writer.signer.public_key

    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        if conn.name != "victim" or frame.stored_subject is None:
            return None
        update = _is_update_of(scenario, frame, author)
        return [] if update is not None and update.clock in (0, 1) else None

    scenario._to_client = to_client
    world.relay.scenario = scenario
    states = ["base"]
    for word in (" x1", " x2", " x3"):
        await writer.type(word)
        states.append(writer.content)
    await world.until(lambda: witness.content == "base x1 x2 x3")
    await world.until(lambda: victim.has_code(202))
    kinds = [type(e).__name__ for e in victim.gap_events()]
    assert "GapDetected" in kinds and "RecoveryNeeded" in kinds
    assert set(victim.history) <= set(states), victim.history
    conformance.observe(f"victim: {', '.join(dict.fromkeys(kinds))} (202); text {victim.content!r}")
    await victim.type(" v", at=0)
    await world.until(lambda: writer.content.startswith(" v") and witness.content.startswith(" v"))
    await writer.type(" x4")  # the writer's next write is a snapshot that includes everything
    final = await world.converge([writer, victim, witness])
    assert final == " vbase x1 x2 x3 x4"
    conformance.observe("victim's edit stored; converged after the next snapshot")


async def test_withheld_update_with_nothing_after_is_undetectable(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "H-withhold-undetected",
        "an author's last update withheld from one reader",
        attack="the broker never shows the writer's latest update to the victim, and the "
        "writer sends nothing more; others keep writing",
        expected="undetectable by the victim's protocol state (no event): its text lacks the "
        "update, its last_sequence still advances past it with the others' messages; only "
        "out-of-band signals (presence showing the writer active, peers' reports) reveal it",
    )
    doc_id = new_doc_id("withhold-last")
    writer = await world.peer("writer", doc_id, via_relay=False)
    await writer.type("base")
    victim = await world.peer("victim", doc_id)
    other = await world.peer("other", doc_id)
    scenario = RuleScenario(doc_id)
    author = writer.signer.public_key
    scenario._to_client = lambda conn, frame: (
        []
        if conn.name == "victim"
        and frame.stored_subject is not None
        and _is_update_of(scenario, frame, author) is not None
        else None
    )
    world.relay.scenario = scenario
    await writer.type(" withheld")
    withheld_seq = writer.doc.last_sequence
    await other.type("other ", at=0)
    await world.until(lambda: bool(victim.applied_from(other.signer.public_key)))
    assert victim.content == "other base"
    assert victim.doc.last_sequence > withheld_seq
    assert not victim.gap_events() and not victim.rejected()
    conformance.observe(
        f"victim shows {victim.content!r} (others: {other.content!r}), no event; last_sequence "
        f"{victim.doc.last_sequence} > {withheld_seq}"
    )


async def test_forged_acknowledgement(world: World, conformance: Conformance) -> None:
    conformance.declare(
        "H-forged-ack",
        "an update acknowledged but never stored",
        attack="the broker answers the writer's publish of one update with a forged "
        "acknowledgement (the sequence it would have had) and drops the update",
        expected="the writer cannot tell (its text keeps the change, flush returns); readers "
        "detect the gap when the writer's next update arrives (GapDetected, RecoveryNeeded, "
        "202) and show no wrong text; the change reaches them only with the writer's next "
        "snapshot (its full state), then all converge",
    )
    doc_id = new_doc_id("forged-ack")
    cfg = replace(FAST, snapshot_after_updates=3)
    writer = await world.peer("writer", doc_id, config=cfg)
    await writer.type("base")
    reader = await world.peer("reader", doc_id, via_relay=False, config=cfg)
    assert writer.doc is not None
    scenario = RuleScenario(doc_id)
    forged: list[Frame] = []
    update_subject = writer.doc.subjects.update

    async def to_server(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        if conn.name == "writer" and frame.subject == update_subject and not forged:
            forged.append(frame)
            assert writer.doc is not None
            ack = {"stream": cfg.stream_name, "seq": writer.doc.last_sequence + 1}
            await conn.reply_to_client(frame, json.dumps(ack).encode())
            return []
        return None

    scenario._to_server = to_server
    world.relay.scenario = scenario
    await writer.type(" lost")  # flush returns: the broker "stored" it
    assert forged and writer.doc.is_synced
    await writer.type(" next")
    await world.until(lambda: reader.has_code(202))
    kinds = list(dict.fromkeys(type(e).__name__ for e in reader.gap_events()))
    assert reader.content == "base"  # " next" waits (in Yjs) for the text it follows
    conformance.observe(f"writer synced; reader: {', '.join(kinds)}, shows 'base'")
    for word in (" w1", " w2", " w3"):  # the writer's third write after " next" is a snapshot
        await writer.type(word)
    final = await world.converge([writer, reader])
    assert final == "base lost next w1 w2 w3"
    await world.until(lambda: len(reader.of(SnapshotApplied)) >= 2)  # the writer's new one
    conformance.observe("converged once the writer's next snapshot arrived")


async def test_update_refused_by_compare_and_set_is_sent_again(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "R-cas-refusal",
        "update on a superseded snapshot (compare-and-set refusal)",
        attack="none: an honest broker refuses an update whose snapshot is no longer the "
        "latest (the writer had not received the newer snapshot yet)",
        expected="the refusal is recognised as a conflict (no PublishFailed); the update goes "
        "back to pending and is sent again on the newer snapshot once received; converges",
    )
    doc_id = new_doc_id("cas")
    snapshotting = replace(FAST, snapshot_after_updates=1)
    first = await world.peer("first", doc_id, via_relay=False, config=snapshotting)
    await first.type("base")
    second = await world.peer("second", doc_id)
    assert second.doc is not None and first.doc is not None
    update_subject = second.doc.subjects.update
    answers: list[Frame] = []

    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        request = conn.request_for(frame)
        if conn.name == "second" and request is not None and request.subject == update_subject:
            answers.append(frame)  # the broker's answer to the stale update
            world.activity.poke()
        return None

    scenario = RuleScenario(doc_id)
    scenario._to_client = to_client
    world.relay.scenario = scenario
    await second.doc.pause_receiving()
    await first.type(" a1")
    await first.type(" a2")  # the second write after the snapshot becomes a snapshot
    assert (
        sum(isinstance(m, Snapshot) for _, m in await stored_decoded(first.client, first.doc)) == 2
    )
    second.text.insert(len(second.text), " b")
    second.doc.notify_changed()
    await world.until(lambda: bool(answers))
    assert b"10071" in answers[0].payload  # wrong last sequence
    await world.until(  # handled as a conflict, or reported as a failed publish (wrong)
        lambda: (
            second.doc is not None
            and (second.doc.unacknowledged == 0 or bool(second.of(PublishFailed)))
        )
    )
    assert not second.of(PublishFailed), second.of(PublishFailed)[0]
    assert second.doc.pending_changes > 0
    conformance.observe("refused as a conflict; the change is pending again")
    await second.doc.resume_receiving()
    final = await world.converge([first, second])
    assert all(part in final for part in ("base", " a1", " a2", " b"))
    conformance.observe(f"sent again on the newer snapshot; converged on {final!r}")
