"""The per-author snapshot rate (secsync.protocol.snapshot_rate), pure: burst, refill, the
newest held and taken when the rate allows, older held ones dropped, bounded state."""

from __future__ import annotations

from secsync.protocol import crypto, sealing
from secsync.protocol.messages import INITIAL_PARENT_PROOF, Snapshot, SnapshotPublicData
from secsync.protocol.snapshot_rate import SnapshotRate
from tests.factories import plain_yjs_doc

KEY = crypto.generate_key()


def _snapshot(signer: crypto.SigningKeyPair) -> Snapshot:
    public = SnapshotPublicData(
        doc_id="rate",
        pub_key=signer.public_key,
        snapshot_id=crypto.generate_id(),
        parent_snapshot_id=b"",
        parent_snapshot_proof=INITIAL_PARENT_PROOF,
        parent_snapshot_update_clocks={},
    )
    return sealing.seal(public, plain_yjs_doc().get_update(), KEY, signer)


def test_a_burst_then_one_per_refill_and_the_newest_is_held() -> None:
    rate = SnapshotRate(per_minute=30, burst=3)  # one token per 2 s
    mallory = crypto.SigningKeyPair.generate()
    flood = [_snapshot(mallory) for _ in range(10)]
    admitted = [rate.admit(s, 0.0) for s in flood]
    assert [ok for ok, _ in admitted] == [True] * 3 + [False] * 7
    dropped = [d for _, ds in admitted for d in ds]
    assert dropped == flood[3:9]  # each held one replaced by the next; the newest held
    assert rate.held == 1 and rate.dropped == 6
    assert rate.next_deadline() == 2.0
    assert rate.due(1.9) == []
    (held,) = rate.due(2.0)
    assert held.snapshot is flood[-1] and held.skipped
    assert rate.held == 0 and rate.next_deadline() is None
    # the bucket is empty again: the next one waits for its token
    later = _snapshot(mallory)
    assert rate.admit(later, 2.5) == (False, [])
    (held,) = rate.due(4.0)
    assert held.snapshot is later and not held.skipped


def test_authors_have_their_own_buckets_and_the_state_is_bounded() -> None:
    rate = SnapshotRate(per_minute=60, burst=1, max_authors=4, max_held=2)
    signers = [crypto.SigningKeyPair.generate() for _ in range(6)]
    for signer in signers:
        assert rate.admit(_snapshot(signer), 0.0)[0]  # everyone's first is taken
    assert len(rate._buckets) <= 4
    held = [rate.admit(_snapshot(signer), 0.0) for signer in signers[-3:]]
    assert [ok for ok, _ in held] == [False, False, False]
    assert rate.held == 2 and len(held[-1][1]) == 1  # the oldest held was pushed out


def test_no_limit_when_disabled() -> None:
    rate = SnapshotRate(per_minute=0, burst=1)
    signer = crypto.SigningKeyPair.generate()
    assert all(rate.admit(_snapshot(signer), 0.0)[0] for _ in range(50))
    assert rate.next_deadline() is None
