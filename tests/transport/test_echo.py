"""A writer's own updates delivered back by its live consumer: settled by sequence, without
decoding, exactly as ``StreamBinding.deliver`` settles them."""

from __future__ import annotations

import copy

import pytest

import secsync
from secsync.config import SecsyncConfig
from secsync.protocol.stream import MSG_ID, StreamBinding
from secsync.transport import jetstream
from tests.factories import MemoryBroker, Participant, YPeer
from tests.transport.helpers import YClient, open_y, until


def _state(binding: StreamBinding) -> tuple[object, ...]:
    return (
        binding.last_sequence,
        set(binding.own_sequences),
        list(binding.own_payloads),
        binding.redelivered,
        binding.changed,
    )


@pytest.mark.parametrize("own", [True, False])
def test_applied_already_settles_as_deliver_does(own: bool) -> None:
    broker = MemoryBroker()
    peer = YPeer()
    part = Participant(peer.session, broker)
    peer.type(0, "hello")
    part.sync()
    for char in "abc":
        peer.type(0, char)
        part.sync()
    binding = part.binding
    stored = broker.read(broker.subjects.stored, 1)
    assert binding.last_sequence == stored[-1].sequence
    for message in stored:
        if own:
            binding.own_sequences.add(message.sequence)
        binding.own_payloads[message.headers.get(MSG_ID, "")] = (message.data, None)  # type: ignore[assignment]
    for message in stored:
        general, fast = copy.copy(binding), copy.copy(binding)
        for b in (general, fast):
            b.own_sequences = set(binding.own_sequences)
            b.own_payloads = copy.copy(binding.own_payloads)
        assert general.deliver([message], now=0.0) == []
        assert fast.applied_already(message.sequence, message.headers.get(MSG_ID, ""))
        assert _state(fast) == _state(general)
        binding = general
    # beyond the last applied sequence: nothing done, deliver() decides
    before = _state(binding)
    assert not binding.applied_already(binding.last_sequence + 1, "x")
    assert _state(binding) == before


async def test_writer_settles_its_echoes_without_building_stored_messages(
    broker, monkeypatch
) -> None:
    built = 0
    original = jetstream.delivered

    def counting(msg, sequence=None):  # type: ignore[no-untyped-def]
        nonlocal built
        built += 1
        return original(msg, sequence)

    monkeypatch.setattr(jetstream, "delivered", counting)
    config = SecsyncConfig(batch_interval=0.0, publish_timeout=5.0, request_timeout=5.0)
    async with secsync.connect(broker.url, config=config) as c1:
        a = YClient()
        da = await open_y(c1, "echoes", a)
        a.text.insert(0, "#")
        await da.flush(5)
        for _ in range(50):
            a.text.insert(len(a.text), "x")
            await da.flush(5)
        binding = da.binding
        await until(da, lambda: not binding.own_sequences and not binding.own_payloads)
        assert da.redelivered == 0
        # An echo may overtake its acknowledgement (then deliver() settles it); most do not.
        assert built < 25
        last = await jetstream.last_message(c1.js, config.stream_name, da.subjects.update)
        assert last is not None and da.last_sequence == last.sequence
