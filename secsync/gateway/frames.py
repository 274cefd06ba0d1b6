"""Server → client frames of the secsync JS protocol, as JSON-ready dicts. Pure.

Every frame carries ``type``; messages are secsync's JSON form (:func:`wire.to_json_dict`),
so a message a Python client stored natively reaches a JS client exactly as a JS client would
have sent it (without ``additionalServerData``, which is never stored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from secsync.gateway.params import ConnectionParams
from secsync.gateway.view import DocumentView
from secsync.protocol import wire
from secsync.protocol.encoding import JsonValue, b64encode
from secsync.protocol.messages import EphemeralMessage, ProofChainEntry, Snapshot, Update

Frame = dict[str, JsonValue]


def chain_json(chain: Sequence[ProofChainEntry]) -> list[JsonValue]:
    return [
        {
            "snapshotId": b64encode(entry.snapshot_id),
            "parentSnapshotProof": b64encode(entry.parent_snapshot_proof),
            "snapshotCiphertextHash": b64encode(entry.snapshot_ciphertext_hash),
        }
        for entry in chain
    ]


def updates_json(updates: Sequence[Update]) -> list[JsonValue]:
    return [wire.to_json_dict(u) for u in updates]


def simple(kind: str) -> Frame:
    """``unauthorized``, ``document-not-found``, ``document-error``, bare
    ``snapshot-save-failed``."""
    return {"type": kind}


def document_payload(
    view: DocumentView,
    mode: str,
    known_snapshot_id: bytes | None,
    known_clocks: Mapping[bytes, int] | None,
) -> Frame:
    """The fields of a ``document`` frame (or of a full ``snapshot-save-failed``).

    New document: ``{updates: [], snapshotProofChain: []}``. Delta mode with the known snapshot
    still active: ``{updates}`` after the known clocks. Otherwise the active snapshot, its
    updates (those after the known clocks when it is the known one) and the proof chain from
    after the known snapshot up to the active one (empty when the known one is unknown here:
    the client then fails its parent check and must reset its saved info).
    """
    active = view.active
    if active is None:
        return {"updates": [], "snapshotProofChain": []}
    is_known = known_snapshot_id == active.snapshot_id
    updates = view.updates_after(known_clocks if is_known else None)
    if mode == "delta" and is_known:
        return {"updates": updates_json(updates)}
    chain = view.chain_after(known_snapshot_id) or []
    return {
        "snapshot": wire.to_json_dict(active),
        "updates": updates_json(updates),
        "snapshotProofChain": chain_json(chain),
    }


def document(view: DocumentView, params: ConnectionParams) -> Frame:
    frame: Frame = {"type": "document"}
    frame.update(document_payload(view, params.mode, params.known_snapshot_id, params.known_clocks))
    return frame


def snapshot(message: Snapshot) -> Frame:
    return {"type": "snapshot", "snapshot": wire.to_json_dict(message)}


def update(message: Update) -> Frame:
    frame: Frame = dict(wire.to_json_dict(message))
    frame["type"] = "update"
    return frame


def ephemeral(message: EphemeralMessage) -> Frame:
    frame: Frame = dict(wire.to_json_dict(message))
    frame["type"] = "ephemeral-message"
    return frame


def snapshot_saved(snapshot_id: bytes) -> Frame:
    return {"type": "snapshot-saved", "snapshotId": b64encode(snapshot_id)}


def snapshot_save_failed_updates(updates: Sequence[Update]) -> Frame:
    """The snapshot misses updates: only those it lacks."""
    return {"type": "snapshot-save-failed", "updates": updates_json(updates)}


def snapshot_save_failed_outdated(view: DocumentView, parent_id: bytes) -> Frame:
    """The snapshot builds on an outdated parent: the active snapshot, its updates and the
    chain from after that parent (which the reference server leaves empty)."""
    frame: Frame = {"type": "snapshot-save-failed"}
    frame.update(document_payload(view, "complete", parent_id, None))
    return frame


def update_saved(ref_snapshot_id: bytes, clock: int) -> Frame:
    return {"type": "update-saved", "snapshotId": b64encode(ref_snapshot_id), "clock": clock}


def update_save_failed(
    snapshot_id: JsonValue | None, clock: JsonValue | None, *, requires_new_snapshot: bool
) -> Frame:
    """``snapshotId`` and ``clock`` echo the request; a key it lacked is left out."""
    frame: Frame = {"type": "update-save-failed"}
    if snapshot_id is not None:
        frame["snapshotId"] = snapshot_id
    if clock is not None:
        frame["clock"] = clock
    frame["requiresNewSnapshot"] = requires_new_snapshot
    return frame
