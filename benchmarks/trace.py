"""The real editing trace through secsync: create and load per update, and one snapshot."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

from benchmarks.common import (
    DOC_ID,
    Stream,
    YjsReplay,
    build_stream,
    clock,
    median,
    replay_automerge,
    replay_yjs,
)
from secsync.protocol.encoding import b64encode


def _fresh_yjs() -> tuple[Any, Any]:
    import pycrdt

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    return doc, doc.get("text", type=pycrdt.Text)


def _check_events(events: list[Any], expected: int) -> None:
    from secsync.protocol.events import MessageRejected, UpdateApplied

    applied = sum(isinstance(e, UpdateApplied) for e in events)
    rejected = [e for e in events if isinstance(e, MessageRejected)]
    if applied != expected or rejected:
        first = rejected[0].error if rejected else None
        raise RuntimeError(
            f"applied {applied}/{expected} updates; rejected {len(rejected)}: {first}"
        )


def session_load(
    stream: Stream,
    points: Sequence[int],
    crdt_factory: Any,
    texts: dict[int, str] | None,
    read_text: Any,
) -> dict[int, float]:
    """Seconds for a fresh session to receive the first ``n`` updates, for each ``n``.

    One pass: the updates are fed by ``receive_many`` in slices between the points and the
    times add up, so every point is measured on the same growing document.
    """
    from secsync.protocol import crypto, wire
    from secsync.protocol.session import DocumentSession

    crdt = crdt_factory()
    session = DocumentSession(stream.doc_id, crypto.SigningKeyPair.generate(), stream.key, crdt)
    session.load(wire.decode(stream.snapshot, doc_id=stream.doc_id), now=0.0)
    elapsed: dict[int, float] = {}
    total = 0.0
    done = 0
    gc.collect()
    for point in sorted(points):
        batch = stream.updates[done:point]
        start = clock()
        events = session.receive_many(batch, now=0.0)
        total += clock() - start
        _check_events(events, len(batch))
        done = point
        elapsed[point] = total
        if texts is not None and point in texts and read_text(crdt) != texts[point]:
            raise RuntimeError(f"the loaded document differs from the trace after {point}")
    return elapsed


def raw_yjs_apply(
    changes: Sequence[bytes], points: Sequence[int], texts: dict[int, str]
) -> dict[int, float]:
    doc, text = _fresh_yjs()
    elapsed: dict[int, float] = {}
    total = 0.0
    done = 0
    apply = doc.apply_update
    gc.collect()
    for point in sorted(points):
        start = clock()
        for change in changes[done:point]:
            apply(change)
        total += clock() - start
        done = point
        elapsed[point] = total
        if point in texts and str(text) != texts[point]:
            raise RuntimeError(f"raw pycrdt differs from the trace after {point}")
    return elapsed


def yjs_trace(
    txns: Sequence[dict[str, Any]],
    replay: YjsReplay,
    stream: Stream,
    points: Sequence[int],
    *,
    reps: int,
    one_keystroke: Sequence[int],
) -> dict[str, Any]:
    """Create, load and raw baselines at each point; medians over ``reps`` passes."""
    changes = replay.changes
    replays = [replay.elapsed]
    for _ in range(reps - 1):
        replays.append(replay_yjs(txns, points).elapsed)
    creates = [stream.create_elapsed]
    for _ in range(reps - 1):
        creates.append(build_stream(changes, checkpoints=points).create_elapsed)

    import pycrdt

    def yjs_text(crdt: Any) -> str:
        return str(crdt.get("text", type=pycrdt.Text))

    def new_doc() -> Any:
        return _fresh_yjs()[0]

    # warm-up: a short load on a throwaway session
    warm = min(points)
    session_load(stream, [min(warm, 2_000)], new_doc, None, yjs_text)
    loads = [session_load(stream, points, new_doc, replay.texts, yjs_text) for _ in range(reps)]
    raws = [raw_yjs_apply(changes, points, replay.texts) for _ in range(reps)]

    rows = []
    for point in points:
        payloads = stream.updates[:point]
        create = median([c[point] for c in creates])
        load = median([load[point] for load in loads])
        raw_load = median([r[point] for r in raws])
        raw_create = median([r[point] for r in replays])
        rows.append(
            {
                "updates": point,
                "create_s": create,
                "create_us": create / point * 1e6,
                "raw_edit_us": raw_create / point * 1e6,
                "load_s": load,
                "load_us": load / point * 1e6,
                "raw_apply_s": raw_load,
                "raw_apply_us": raw_load / point * 1e6,
                "wire_bytes_mean": sum(map(len, payloads)) / point,
                "change_bytes_mean": sum(map(len, changes[:point])) / point,
            }
        )
    keystrokes = sorted(len(stream.updates[i]) for i in one_keystroke if i < len(stream.updates))
    default = default_policy_wire(changes, one_keystroke, min(len(changes), 50_000))
    return {
        "default_policy": default,
        "rows": rows,
        "one_keystroke_wire_median": keystrokes[len(keystrokes) // 2] if keystrokes else None,
        "one_keystroke_wire_max": keystrokes[-1] if keystrokes else None,
        "one_keystroke_count": len(keystrokes),
        "ack_us": stream.ack_elapsed / len(changes) * 1e6,
    }


def default_policy_wire(
    changes: Sequence[bytes], one_keystroke: Sequence[int], limit: int
) -> dict[str, Any]:
    """Wire sizes with the default snapshot policy (a snapshot every 500 updates), so that the
    clocks stay as small as in real use; the trace pass above runs on one snapshot."""
    from benchmarks.common import FeedAdapter
    from secsync.config import SecsyncConfig
    from secsync.protocol import crypto, wire
    from secsync.protocol.messages import Snapshot
    from secsync.protocol.session import DocumentSession

    config = SecsyncConfig()
    adapter = FeedAdapter()
    session = DocumentSession(
        DOC_ID, crypto.SigningKeyPair.generate(), crypto.generate_key(), adapter, config=config
    )
    session.load(None, now=0.0)
    wanted = set(one_keystroke)
    samples: list[tuple[int, int, Any]] = []
    snapshots = 0
    for index, change in enumerate(changes[:limit]):
        adapter.local.append(change)
        for message in session.data_to_send():
            if isinstance(message, Snapshot):
                session.snapshot_stored(message.snapshot_id, now=0.0)
                snapshots += 1
                continue
            session.update_stored(message.public_data.ref_snapshot_id, message.clock)
            if index in wanted:
                samples.append((len(wire.encode(message, include_doc_id=False)), index, message))
    samples.sort(key=lambda sample: sample[:2])
    sizes = [size for size, _, _ in samples]
    breakdown = None
    if samples:
        size, index, message = samples[len(samples) // 2]
        plaintext = len(message.ciphertext) - crypto.CIPHERTEXT_OVERHEAD
        breakdown = {
            "Yjs update": len(changes[index]),
            "change-list framing": plaintext - len(changes[index]),
            "commitment tag + AEAD tag": crypto.CIPHERTEXT_OVERHEAD,
            "nonce": len(message.nonce),
            "signature": len(message.signature),
            "author key": len(message.public_data.pub_key),
            "snapshot id": len(message.public_data.ref_snapshot_id),
        }
        breakdown["msgpack framing, version, kind, clock"] = size - sum(breakdown.values())
        breakdown["clock"] = message.clock
    return {
        "breakdown": breakdown,
        "transactions": limit,
        "snapshot_after_updates": config.snapshot_after_updates,
        "snapshots": snapshots,
        "one_keystroke_count": len(sizes),
        "one_keystroke_median": sizes[len(sizes) // 2] if sizes else None,
        "one_keystroke_max": sizes[-1] if sizes else None,
        "one_keystroke_min": sizes[0] if sizes else None,
    }


def snapshot_bench(replay: YjsReplay, reps: int) -> dict[str, Any]:
    """The final state of the replayed trace as one snapshot: size, create, load."""
    import hmac

    import nacl.bindings as sodium
    import pycrdt

    from secsync.protocol import crypto, sealing, wire
    from secsync.protocol.events import SnapshotApplied
    from secsync.protocol.session import DocumentSession

    state = replay.final_state
    final_text = replay.texts[max(replay.texts)]
    key = crypto.generate_key()
    author = crypto.SigningKeyPair.generate()

    source, _ = _fresh_yjs()
    source.apply_update(state)
    creates = []
    snapshot_bytes = b""
    for index in range(reps + 1):
        session = DocumentSession(DOC_ID, author, key, source)  # existing content is pending
        session.load(None, now=0.0)
        gc.collect()
        start = clock()
        (message,) = session.data_to_send()
        snapshot_bytes = wire.encode(message, include_doc_id=False)
        elapsed = clock() - start
        session.crdt.close()
        if index:
            creates.append(elapsed)
    raw_encode = []
    for _ in range(reps):
        start = clock()
        source.get_update()
        raw_encode.append(clock() - start)

    loads = []
    stages: dict[str, list[float]] = {"decode": [], "verify": [], "decrypt": [], "apply": []}
    for index in range(reps + 1):
        doc, text = _fresh_yjs()
        session = DocumentSession(DOC_ID, crypto.SigningKeyPair.generate(), key, doc)
        gc.collect()
        start = clock()
        snapshot = wire.decode(snapshot_bytes, doc_id=DOC_ID)
        events = session.load(snapshot, now=0.0)
        elapsed = clock() - start
        if not any(isinstance(e, SnapshotApplied) for e in events) or str(text) != final_text:
            raise RuntimeError("the snapshot did not load the final text")
        if index:
            loads.append(elapsed)
            t0 = clock()
            decoded = wire.decode(snapshot_bytes, doc_id=DOC_ID)
            t1 = clock()
            aad = sealing.check_signature(decoded)
            t2 = clock()
            plaintext = sealing.decrypt(decoded, key, aad)
            t3 = clock()
            other, _ = _fresh_yjs()
            t4 = clock()
            other.apply_update(plaintext)
            t5 = clock()
            stages["decode"].append(t1 - t0)
            stages["verify"].append(t2 - t1)
            stages["decrypt"].append(t3 - t2)
            stages["apply"].append(t5 - t4)

    # raw: the same libsodium calls and the same pycrdt apply, sizes as in the snapshot
    message = wire.decode(snapshot_bytes, doc_id=DOC_ID)
    aad = message.public_data.aad()
    body = crypto.signed_bytes(
        message.domain, b64encode(message.ciphertext), b64encode(message.nonce), aad
    )
    signed = message.signature + body
    aead = message.ciphertext[crypto.TAG_BYTES :]
    tag_input = (b64encode(message.nonce) + b64encode(aead) + aad).encode("ascii")
    raw: dict[str, list[float]] = {
        "verify": [],
        "decrypt": [],
        "apply": [],
        "sign": [],
        "encrypt": [],
    }
    secret = author.signing_key._signing_key
    for _ in range(reps):
        t0 = clock()
        sodium.crypto_sign_open(signed, message.public_data.pub_key)
        t1 = clock()
        hmac.digest(key, tag_input, "sha512")
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(aead, aad.encode(), message.nonce, key)
        t2 = clock()
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.get("text", type=pycrdt.Text)
        t3 = clock()
        doc.apply_update(state)
        t4 = clock()
        sodium.crypto_sign(body, secret)
        t5 = clock()
        sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(state, aad.encode(), message.nonce, key)
        hmac.digest(key, tag_input, "sha512")
        t6 = clock()
        raw["verify"].append(t1 - t0)
        raw["decrypt"].append(t2 - t1)
        raw["apply"].append(t4 - t3)
        raw["sign"].append(t5 - t4)
        raw["encrypt"].append(t6 - t5)
    ms = {k: median(v) * 1e3 for k, v in raw.items()}
    ms["load_total"] = ms["verify"] + ms["decrypt"] + ms["apply"]
    ms["encode_state"] = median(raw_encode) * 1e3
    ms["create_total"] = ms["encode_state"] + ms["sign"] + ms["encrypt"]
    return {
        "transactions": max(replay.texts),
        "text_chars": len(final_text),
        "state_bytes": len(state),
        "wire_bytes": len(snapshot_bytes),
        "create_ms": median(creates) * 1e3,
        "load_ms": median(loads) * 1e3,
        "stages_ms": {k: median(v) * 1e3 for k, v in stages.items()},
        "raw_ms": ms,
    }


def automerge_trace(
    txns: Sequence[dict[str, Any]], points: Sequence[int], reps: int, texts: dict[int, str]
) -> list[dict[str, Any]]:
    """Automerge: one change per transaction, created and loaded through secsync."""
    from automerge import core

    from secsync.crdt.automerge import changes_sync_message

    def am_text(doc: Any) -> str:
        found = doc.get(core.ROOT, "text")
        return doc.text(found[1]) if found else ""

    rows = []
    for point in points:
        replays = [replay_automerge(txns[:point]) for _ in range(reps)]
        changes, final_text, _ = replays[0]
        if point in texts and final_text != texts[point]:
            raise RuntimeError("automerge replay differs from the Yjs replay")
        if len(changes) != point:
            raise RuntimeError(f"expected {point} automerge changes, got {len(changes)}")
        empty = core.Document().save()
        streams = [build_stream(changes, state=empty) for _ in range(reps)]
        stream = streams[0]
        session_load(stream, [min(point, 1_000)], core.Document, None, am_text)  # warm-up
        loads = [
            session_load(stream, [point], core.Document, {point: final_text}, am_text)[point]
            for _ in range(reps)
        ]
        raws = []
        for _ in range(reps):
            doc = core.Document()
            gc.collect()
            start = clock()
            for change in changes:
                doc.receive_sync_message(
                    core.SyncState(), core.Message.decode(changes_sync_message([change]))
                )
            raws.append(clock() - start)
            if am_text(doc) != final_text:
                raise RuntimeError("raw automerge apply differs")
        create = median([s.create_elapsed[point] for s in streams])
        rows.append(
            {
                "updates": point,
                "create_s": create,
                "create_us": create / point * 1e6,
                "raw_edit_us": median([r[2] for r in replays]) / point * 1e6,
                "load_s": median(loads),
                "load_us": median(loads) / point * 1e6,
                "raw_apply_s": median(raws),
                "raw_apply_us": median(raws) / point * 1e6,
                "wire_bytes_mean": sum(map(len, stream.updates)) / point,
                "change_bytes_mean": sum(map(len, changes)) / point,
            }
        )
    return rows
