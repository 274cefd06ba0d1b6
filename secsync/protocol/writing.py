"""Writing: local changes sealed into one snapshot or into updates on the active snapshot
(:meth:`~secsync.protocol.session.DocumentSession.data_to_send` decides which and when).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from secsync.errors import CreateSnapshotError, CreateUpdateError
from secsync.protocol import crypto, sealing
from secsync.protocol.changes import serialize_changes
from secsync.protocol.collisions import message_digest
from secsync.protocol.encoding import b64encode
from secsync.protocol.messages import (
    INITIAL_PARENT_PROOF,
    Snapshot,
    SnapshotPublicData,
    Update,
    UpdatePublicData,
)
from secsync.protocol.outbox import UpdateInFlight

if TYPE_CHECKING:
    from secsync.protocol.session import DocumentSession


def _short(key: bytes) -> str:
    return b64encode(key)[:8]


def should_snapshot(session: DocumentSession) -> bool:
    active = session._active
    assert active is not None
    if session._out.in_flight or session._queues.any_waiting():
        return False  # a snapshot must not leave out what is in flight or still queued
    cfg = session.config
    return (
        session._snapshot_requested
        or session._repair_wanted
        or bool(
            (cfg.snapshot_after_updates and active.updates >= cfg.snapshot_after_updates)
            or (cfg.snapshot_after_bytes and active.update_bytes >= cfg.snapshot_after_bytes)
        )
    )


def seal_snapshot(session: DocumentSession) -> Snapshot:
    active = session._active
    snapshot_id = crypto.generate_id()
    try:
        key, extra = session.keys.new_snapshot_key(snapshot_id)
        if session._signed_extra:
            extra = {**extra, **session._signed_extra}
        state = session.crdt.encode_state()
    except Exception as exc:
        raise CreateSnapshotError(f"could not prepare the snapshot: {exc}") from exc
    public = SnapshotPublicData(
        doc_id=session.doc_id,
        pub_key=session.public_key,
        snapshot_id=snapshot_id,
        parent_snapshot_id=active.info.snapshot_id if active else b"",
        parent_snapshot_proof=active.info.child_proof() if active else INITIAL_PARENT_PROOF,
        parent_snapshot_update_clocks=active.included_clocks() if active else {},
        extra=extra,
    )
    snapshot = sealing.seal(public, state, key, session.signer)
    session._out.snapshot_sealed(snapshot, key)
    session._log.info(
        "snapshot_created",
        snapshot=_short(snapshot_id),
        parent=_short(public.parent_snapshot_id) if active else "",
        bytes=len(snapshot.ciphertext),
    )
    return snapshot


def seal_updates(session: DocumentSession) -> list[Update]:
    active = session._active
    assert active is not None
    box = session._out
    updates = []
    for batch in box.batches(session.config.max_update_plaintext_bytes):
        box.local_clock = clock = box.local_clock + 1
        public = UpdatePublicData(
            doc_id=session.doc_id,
            pub_key=session.public_key,
            ref_snapshot_id=active.info.snapshot_id,
            clock=clock,
            extra=session._signed_extra,
        )
        try:
            plaintext = serialize_changes(batch, session.config.change_encoding)
        except Exception as exc:
            raise CreateUpdateError(f"could not serialize changes: {exc}") from exc
        update = sealing.seal(public, plaintext, active.cipher, session.signer)
        session._digests.add(session.public_key, clock, message_digest(update))
        updates.append(update)
        box.in_flight[clock] = UpdateInFlight(update, batch)
    return updates
