"""Tampering in transit: a malicious relay between the broker and one reader (the victim).

The writer talks to the broker directly; the victim's connection goes through the relay, which
alters the first live delivery of one message. Every alteration must be rejected with its
specific error code, must never change the victim's text to anything the writer did not write,
and must heal: the next genuine message shows a gap, the victim fetches the stored (untouched)
copy, and both texts converge; the victim then keeps working (its own edit reaches the writer).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import msgpack
import pytest

from secsync.protocol import crypto, wire
from secsync.protocol.encoding import b64encode
from secsync.protocol.messages import Message, Snapshot, Update
from tests.conformance.harness import FAST, Peer, World, new_doc_id, stored_decoded
from tests.conformance.plugin import Conformance
from tests.conformance.relay import Frame, RelayConnection, RuleScenario, message_rule

RELAY_KEY = crypto.SigningKeyPair.generate()


def _flip(data: bytes, at: int = 0) -> bytes:
    out = bytearray(data)
    out[at % len(out)] ^= 0x01
    return bytes(out)


def _encode(message: Message) -> bytes:
    return wire.encode(message, include_doc_id=False)


def _with_public(message: Message, **changes: object) -> Message:
    return replace(message, public_data=replace(message.public_data, **changes))  # type: ignore[arg-type]


def _resign(message: Message, signer: crypto.SigningKeyPair) -> Message:
    """The relay signs the message with its own key (it has no author's key)."""
    signature = crypto.sign_message(
        signer,
        message.domain,
        b64encode(message.ciphertext),
        b64encode(message.nonce),
        message.public_data.aad(),
    )
    return replace(message, signature=signature)


def _non_canonical(message: Message) -> bytes:
    items = msgpack.unpackb(_encode(message), raw=False)
    extras_at = {1: 8, 2: 6, 3: 4}[items[1]]
    items[extras_at] = {}  # an empty map where the canonical form has nil
    return msgpack.packb(items, use_bin_type=True)


# name: (mutation of the decoded message -> new payload, expected code, what it is)
Mutation = Callable[[Message], bytes]
UPDATE_MUTATIONS: dict[str, tuple[Mutation, int, str]] = {
    "ciphertext": (lambda m: _encode(replace(m, ciphertext=_flip(m.ciphertext, 60))), 212, ""),
    "nonce": (lambda m: _encode(replace(m, nonce=_flip(m.nonce))), 212, ""),
    "signature": (lambda m: _encode(replace(m, signature=_flip(m.signature, 5))), 212, ""),
    "pubKey": (lambda m: _encode(_with_public(m, pub_key=_flip(m.public_data.pub_key))), 212, ""),
    "refSnapshotId": (
        lambda m: _encode(_with_public(m, ref_snapshot_id=_flip(m.public_data.ref_snapshot_id))),
        212,
        "",
    ),
    "clock": (lambda m: _encode(_with_public(m, clock=m.public_data.clock + 1)), 212, ""),
    "docId": (
        lambda m: wire.encode(_with_public(m, doc_id="another-document"), include_doc_id=True),
        212,
        "docId made explicit and pointed at another document",
    ),
    "extras": (lambda m: _encode(_with_public(m, extra={"keyId": "evil"})), 212, "extra added"),
    "re-signed as the relay": (
        lambda m: _encode(_resign(_with_public(m, pub_key=RELAY_KEY.public_key), RELAY_KEY)),
        201,
        "pubKey replaced by the relay's and signed with its key: the signature verifies, "
        "the AEAD (whose associated data holds pubKey) does not",
    ),
    "re-signed, author kept": (lambda m: _encode(_resign(m, RELAY_KEY)), 212, ""),
    "protocol version 2": (lambda m: b"\x9a\x02" + _encode(m)[2:], 701, ""),
    "unknown kind": (lambda m: b"\x9a\x01\x07" + _encode(m)[3:], 700, ""),
    "truncated": (lambda m: _encode(m)[:-9], 700, "last 9 bytes cut"),
    "non-canonical encoding": (_non_canonical, 211, "empty map instead of nil for extras"),
}


async def _writer_and_victim(world: World, label: str) -> tuple[str, Peer, Peer, list[str]]:
    doc_id = new_doc_id(label)
    writer = await world.peer("writer", doc_id, via_relay=False)
    await writer.type("base")
    victim = await world.peer("victim", doc_id)
    assert victim.content == "base"
    return doc_id, writer, victim, ["", "base"]


def _tamper_first(
    world: World,
    doc_id: str,
    kind: type[Message],
    mutate: Mutation,
    *,
    author: bytes,
) -> list[Frame]:
    """Arm the relay: alter the victim's first live delivery of ``kind`` by ``author``."""
    scenario = RuleScenario(doc_id)
    hits: list[Frame] = []

    def act(conn: RelayConnection, frame: Frame, message: Message) -> list[Frame]:
        altered = frame.with_payload(mutate(message))
        hits.append(altered)
        return [altered]

    scenario._to_client = message_rule(
        scenario,
        lambda conn, frame, m: (
            conn.name == "victim"
            and frame.is_js_delivery
            and isinstance(m, kind)
            and m.author == author
        ),
        act,
    )
    world.relay.scenario = scenario
    return hits


@pytest.mark.parametrize("field", list(UPDATE_MUTATIONS))
async def test_update_altered_in_transit_is_rejected_and_healed(
    world: World, conformance: Conformance, field: str
) -> None:
    mutate, code, note = UPDATE_MUTATIONS[field]
    conformance.declare(
        f"T-update-{field.replace(' ', '-')}",
        f"update: {field} altered in transit",
        attack=f"relay alters the {field} of an update on its way to one reader"
        + (f" ({note})" if note else ""),
        expected=f"rejected {code}; text unchanged; healed by refetch of the stored copy; "
        "victim keeps working",
    )
    doc_id, writer, victim, states = await _writer_and_victim(world, "upd")
    hits = _tamper_first(world, doc_id, Update, mutate, author=writer.signer.public_key)
    await writer.type(" one")
    states.append(writer.content)
    await world.until(lambda: bool(victim.rejected()))
    assert hits, "the relay did not see the update"
    assert victim.codes()[0] == code, victim.codes()
    assert victim.content == "base"
    conformance.observe(f"rejected {victim.codes()[0]}")
    await writer.type(" two")  # the gap shows; the stored copy is fetched
    states.append(writer.content)
    await world.converge([writer, victim])
    assert victim.content == "base one two"
    assert set(victim.history) <= set(states), victim.history
    conformance.observe(
        "healed: " + ", ".join(sorted({type(e).__name__ for e in victim.gap_events()}))
    )
    await victim.type(" victim")
    assert await world.converge([writer, victim]) == "base one two victim"
    conformance.observe("converged; victim's own edit stored")


async def test_public_data_swapped_between_updates_is_rejected(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "T-update-public-data-swapped",
        "public data swapped between two updates in transit",
        attack="relay holds the writer's update 0, then delivers updates 0 and 1 to one reader "
        "each with the other's public data (clock, refSnapshotId, ...)",
        expected="both rejected 212; text unchanged; healed by refetch; victim keeps working",
    )
    doc_id, writer, victim, states = await _writer_and_victim(world, "swap")
    scenario = RuleScenario(doc_id)
    held: list[tuple[Frame, Message]] = []

    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        if conn.name != "victim" or not frame.is_js_delivery or len(held) > 1:
            return None
        message = scenario.decode(frame)
        if not isinstance(message, Update) or message.author != writer.signer.public_key:
            return None
        held.append((frame, message))
        if len(held) == 1:
            return []
        (f0, m0), (f1, m1) = held
        return [
            f0.with_payload(_encode(replace(m0, public_data=m1.public_data))),
            f1.with_payload(_encode(replace(m1, public_data=m0.public_data))),
        ]

    scenario._to_client = to_client
    world.relay.scenario = scenario
    for word in (" one", " two"):
        await writer.type(word)
        states.append(writer.content)
    await world.until(lambda: victim.codes().count(212) >= 2)
    assert victim.content == "base"
    conformance.observe("both rejected 212")
    await writer.type(" three")
    states.append(writer.content)
    await world.converge([writer, victim])
    assert set(victim.history) <= set(states)
    await victim.type(" victim")
    assert await world.converge([writer, victim]) == "base one two three victim"
    conformance.observe("healed; converged; victim's own edit stored")


async def test_earlier_update_replayed_in_transit(world: World, conformance: Conformance) -> None:
    conformance.declare(
        "T-update-replayed-in-transit",
        "an earlier update delivered in place of a new one",
        attack="relay replaces the victim's delivery of the writer's update 2 with the bytes of "
        "update 0 (already applied)",
        expected="rejected 214 (replay, no effect); the missing update 2 is noticed at the next "
        "update and fetched; converges",
    )
    doc_id, writer, victim, states = await _writer_and_victim(world, "replay-transit")
    scenario = RuleScenario(doc_id)
    first: list[Frame] = []
    replayed: list[Frame] = []

    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        if conn.name != "victim" or not frame.is_js_delivery or replayed:
            return None
        message = scenario.decode(frame)
        if not isinstance(message, Update) or message.author != writer.signer.public_key:
            return None
        if message.clock == 0:
            first.append(frame)
        elif message.clock == 2:
            replayed.append(frame)
            return [frame.with_payload(first[0].payload)]
        return None

    scenario._to_client = to_client
    world.relay.scenario = scenario
    for word in (" one", " two", " three"):
        await writer.type(word)
        states.append(writer.content)
    await world.until(lambda: victim.has_code(214))
    assert victim.content == "base one two"
    conformance.observe("rejected 214; text unchanged")
    await writer.type(" four")
    states.append(writer.content)
    assert await world.converge([writer, victim]) == "base one two three four"
    assert set(victim.history) <= set(states)
    conformance.observe("gap noticed at the next update, stored copy fetched; converged")


async def test_snapshot_altered_in_transit_is_rejected_and_healed(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "T-snapshot-signature",
        "snapshot: signature altered in transit",
        attack="relay flips a bit of the signature of a new snapshot on its way to one reader",
        expected="rejected 111; text unchanged; the reader fetches the stored snapshot (or "
        "recovers) and converges without having to edit; its next snapshot does not fork the "
        "stored history",
    )
    doc_id = new_doc_id("snap")
    config = replace(FAST, snapshot_after_updates=2)
    writer = await world.peer("writer", doc_id, via_relay=False, config=config)
    await writer.type("base")
    victim = await world.peer("victim", doc_id, config=config)
    await writer.type(" one")
    await writer.type(" two")
    await world.converge([writer, victim])
    mutate: Mutation = lambda m: _encode(replace(m, signature=_flip(m.signature, 9)))  # noqa: E731
    hits = _tamper_first(world, doc_id, Snapshot, mutate, author=writer.signer.public_key)
    await writer.type(" three")  # the third update becomes a snapshot
    await world.until(lambda: victim.has_code(111))
    assert hits and victim.content == "base one two"
    conformance.observe("rejected 111")
    await writer.type(" four")  # an update on the new snapshot
    await world.converge([writer, victim], timeout=10)
    conformance.observe("healed")
    await victim.type(" victim")
    await world.converge([writer, victim])
    snapshots = [
        m for _, m in await stored_decoded(writer.client, writer.doc) if isinstance(m, Snapshot)
    ]
    for parent, child in itertools.pairwise(snapshots):
        assert child.public_data.parent_snapshot_id == parent.snapshot_id, "forked history"
