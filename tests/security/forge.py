"""What an attacker builds by hand: group snapshots with chosen rosters, chains and keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import nacl.public
import pycrdt

from secsync.access.group import Group
from secsync.access.membership import Epoch as _Epoch
from secsync.access.membership import (
    MembershipOp,
    Role,
    epoch_commitment,
    sealed_commitment,
    x25519_public,
)
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.changes import serialize_changes
from secsync.protocol.encoding import b64encode
from secsync.protocol.messages import (
    INITIAL_PARENT_PROOF,
    Snapshot,
    SnapshotInfo,
    SnapshotPublicData,
    Update,
    UpdatePublicData,
)
from tests.factories import plain_yjs_doc


def seal_to(members: Sequence[bytes], key: bytes) -> tuple[str, ...]:
    return tuple(
        b64encode(nacl.public.SealedBox(nacl.public.PublicKey(x25519_public(m))).encrypt(key))
        for m in sorted(members)
    )


def op(
    signer: crypto.SigningKeyPair,
    previous: bytes,
    changes: Sequence[tuple[bytes, Role | None]],
    key: bytes,
    sealed: Sequence[str],
) -> MembershipOp:
    return MembershipOp.sign(
        signer, previous, changes, epoch_commitment(key), sealed_commitment(sealed)
    )


def group_snapshot(
    signer: crypto.SigningKeyPair,
    doc_id: str,
    chain: Sequence[MembershipOp],
    key: bytes,
    sealed: Sequence[str],
    *,
    text: str = "",
    parent: SnapshotInfo | None = None,
    parent_id: bytes | None = None,
    clocks: Mapping[bytes, int] | None = None,
) -> Snapshot:
    """A snapshot of a closed group, signed by ``signer``, with the given chain and key."""
    snapshot_id = crypto.generate_id()
    epoch = _Epoch({}, key, tuple(chain), (), tuple(sealed))
    extra = {"g": Group._group_data(snapshot_id, epoch)}
    ydoc = plain_yjs_doc()
    if text:
        ydoc.get("text", type=pycrdt.Text).insert(0, text)
    public = SnapshotPublicData(
        doc_id=doc_id,
        pub_key=signer.public_key,
        snapshot_id=snapshot_id,
        parent_snapshot_id=parent.snapshot_id if parent else (parent_id or b""),
        parent_snapshot_proof=parent.child_proof() if parent else INITIAL_PARENT_PROOF,
        parent_snapshot_update_clocks=dict(clocks or {}),
        extra=extra,
    )
    return sealing.seal(public, ydoc.get_update(), key, signer)


def update_on(
    signer: crypto.SigningKeyPair, doc_id: str, snapshot_id: bytes, key: bytes, clock: int = 0
) -> Update:
    public = UpdatePublicData(
        doc_id=doc_id, pub_key=signer.public_key, ref_snapshot_id=snapshot_id, clock=clock
    )
    return sealing.seal(public, serialize_changes([plain_yjs_doc().get_update()]), key, signer)


def native(message: Snapshot | Update) -> bytes:
    return wire.encode(message, include_doc_id=False)
