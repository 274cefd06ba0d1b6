"""The gateway publishes with the compare-and-set headers a Python client's binding gives."""

from __future__ import annotations

from secsync.protocol.messages import Snapshot, Update
from secsync.protocol.stream_types import snapshot_headers, update_headers
from tests.factories import MemoryBroker, Participant, YPeer
from tests.gateway.helpers import DOC_ID, KEY


def test_the_shared_header_rule_matches_the_stream_binding() -> None:
    broker = MemoryBroker(DOC_ID)
    peer = YPeer(key=KEY, doc_id=DOC_ID)
    participant = Participant(peer.session, broker)
    peer.type(0, "a")
    participant.sync()
    peer.type(0, "b")
    outgoing = [m for m in peer.session.data_to_send() if isinstance(m, Snapshot | Update)]
    peer.session.request_snapshot()
    participant.push()
    binding = participant.binding
    (snapshot,) = [m for m in broker.log if isinstance(m, Snapshot)][-1:]
    assert outgoing and isinstance(outgoing[0], Update)
    update = outgoing[0]
    ref = update.public_data.ref_snapshot_id
    assert binding.headers(update) == update_headers(
        update, binding.snapshot_sequences.get(ref, 0), broker.subjects
    )
    assert binding.headers(snapshot) == snapshot_headers(
        snapshot.snapshot_id, binding.last_sequence, broker.subjects
    )
