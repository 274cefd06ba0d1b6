"""Presence (ephemeral messages over core NATS) altered, re-signed, replayed or misaddressed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from secsync.protocol import crypto, sealing, wire
from secsync.protocol.ephemeral import EphemeralPlaintext, EphemeralType
from secsync.protocol.events import MessageRejected, PresenceChanged
from secsync.protocol.messages import EphemeralMessage, EphemeralPublicData
from secsync.protocol.presence import encode_presence
from tests.conformance.harness import KEY, Peer, World, new_doc_id
from tests.conformance.plugin import Conformance
from tests.conformance.relay import Frame, RelayConnection, RuleScenario
from tests.conformance.test_transit import RELAY_KEY, _flip, _resign


async def _present(world: World, label: str) -> tuple[str, Peer, Peer]:
    """A writer and a victim who see each other's presence; the writer shows cursor 1."""
    doc_id = new_doc_id(label)
    writer = await world.peer("writer", doc_id, via_relay=False)
    await writer.type("base")
    victim = await world.peer("victim", doc_id)
    assert writer.doc is not None
    writer.doc.presence.set_local_state({"cursor": 1})
    await world.until(lambda: _state(victim, writer) == {"cursor": 1})
    return doc_id, writer, victim


def _state(victim: Peer, writer: Peer) -> object:
    assert victim.doc is not None
    return victim.doc.presence.states.get(writer.signer.public_key)


def _state_when(victim: Peer, writer: Peer, code: int) -> object:
    """The writer's presence state as the victim showed it right after rejecting ``code``."""
    for index, event in enumerate(victim.events):
        if isinstance(event, MessageRejected) and event.error.code == code:
            return victim.presence_history[index].get(writer.signer.public_key)
    raise AssertionError(f"no rejection {code}")


def _ephemeral_rule(
    scenario: RuleScenario, subject: str, author: bytes, mutate: object, done: list[Frame]
) -> object:
    def to_client(conn: RelayConnection, frame: Frame) -> list[Frame] | None:
        if done or conn.name != "victim" or frame.subject != subject:
            return None
        message = scenario.decode(frame)
        if not isinstance(message, EphemeralMessage) or message.author != author:
            return None
        altered = frame.with_payload(mutate(message))  # type: ignore[operator]
        done.append(altered)
        return [altered]

    return to_client


@pytest.mark.parametrize(
    ("how", "code"),
    [("signature flipped", 308), ("ciphertext flipped", 308), ("re-signed as the relay", 301)],
)
async def test_altered_presence_is_rejected(
    world: World, conformance: Conformance, how: str, code: int
) -> None:
    conformance.declare(
        f"P-{how.split(maxsplit=1)[0]}{'-' + how.split()[1] if how.startswith('re') else ''}",
        f"presence message: {how} in transit",
        attack=f"relay alters a presence (ephemeral) message to one reader: {how}",
        expected=f"rejected {code}; the peer's presence state unchanged; presence keeps flowing",
    )
    doc_id, writer, victim = await _present(world, "presence-flip")
    assert writer.doc is not None
    mutations = {
        "signature flipped": lambda m: wire.encode(
            replace(m, signature=_flip(m.signature, 3)), include_doc_id=False
        ),
        "ciphertext flipped": lambda m: wire.encode(
            replace(m, ciphertext=_flip(m.ciphertext, 40)), include_doc_id=False
        ),
        "re-signed as the relay": lambda m: wire.encode(
            _resign(
                replace(m, public_data=replace(m.public_data, pub_key=RELAY_KEY.public_key)),
                RELAY_KEY,
            ),
            include_doc_id=False,
        ),
    }
    scenario = RuleScenario(doc_id)
    done: list[Frame] = []
    scenario._to_client = _ephemeral_rule(  # type: ignore[assignment]
        scenario, writer.doc.subjects.ephemeral, writer.signer.public_key, mutations[how], done
    )
    world.relay.scenario = scenario
    writer.doc.presence.set_local_state({"cursor": 2})
    await world.until(lambda: victim.has_code(code))
    assert _state_when(victim, writer, code) == {"cursor": 1}
    conformance.observe(f"rejected {code}; state still cursor 1 at that moment")
    writer.doc.presence.set_local_state({"cursor": 3})
    await world.until(lambda: _state(victim, writer) == {"cursor": 3})
    conformance.observe("later states arrive")


async def test_replayed_presence_is_rejected(world: World, conformance: Conformance) -> None:
    conformance.declare(
        "P-replay",
        "old presence messages replayed",
        attack="relay records the writer's presence traffic to one reader and sends all of it "
        "again after the writer moved on",
        expected="the replayed messages are refused (303) or ignored (handshakes); the presence "
        "state stays the current one",
    )
    _, writer, victim = await _present(world, "presence-replay")
    assert writer.doc is not None and victim.doc is not None
    subject = writer.doc.subjects.ephemeral
    conn = world.relay.by_name("victim")[-1]
    recorded = [f for f in conn.seen if f.subject == subject]
    writer.doc.presence.set_local_state({"cursor": 2})
    await world.until(lambda: _state(victim, writer) == {"cursor": 2})
    before = len(victim.events)
    for frame in recorded:
        await conn.send_to_client(frame)
    await world.until(lambda: victim.has_code(303))
    changes = [e for e in victim.events[before:] if isinstance(e, PresenceChanged)]
    assert not changes, changes
    assert _state(victim, writer) == {"cursor": 2}
    conformance.observe(
        f"{len(recorded)} recorded messages replayed: "
        f"{sorted(set(victim.codes()))} rejections; state still cursor 2"
    )


async def test_presence_of_another_document_is_rejected(
    world: World, conformance: Conformance
) -> None:
    conformance.declare(
        "P-wrong-document",
        "presence message of another document",
        attack="a participant's genuine presence message of document A (docId A inside) is "
        "published on document B's presence subject",
        expected="rejected 306; no presence change",
    )
    doc_id, writer, victim = await _present(world, "presence-doc")
    assert writer.doc is not None and writer.client is not None
    signer = crypto.SigningKeyPair.generate()
    plaintext = EphemeralPlaintext(
        EphemeralType.MESSAGE, bytes(24), 7, encode_presence(1, {"cursor": 99})
    ).encode()
    message = sealing.seal(
        EphemeralPublicData(f"{doc_id}-other", signer.public_key), plaintext, KEY, signer
    )
    await writer.client.nc.publish(
        writer.doc.subjects.ephemeral, wire.encode(message, include_doc_id=True)
    )
    await world.until(lambda: victim.has_code(306))
    assert signer.public_key not in (victim.doc.presence.states if victim.doc else {})
    conformance.observe("rejected 306 by every reader")
