"""Per message: create and load by stage, next to the same libsodium/msgpack/pycrdt calls raw.

Every stage runs over the same real update messages (the first transactions of the trace, one
Yjs update each), so secsync and the raw baseline see identical sizes.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import DOC_ID, Stream, build_stream, clock, median, per_item_us


def _timed_with_setup(
    setup: Callable[[], Any], run: Callable[[Any], Any], reps: int, warmup: int = 1
) -> list[float]:
    times = []
    for index in range(warmup + reps):
        state = setup()
        gc.collect()
        start = clock()
        run(state)
        elapsed = clock() - start
        if index >= warmup:
            times.append(elapsed)
    return times


def _safe(fn: Callable[[], float]) -> float | None:
    """A stage that the package no longer offers is reported as n/a instead of failing."""
    try:
        return fn()
    except Exception as exc:
        print(f"  stage failed: {type(exc).__name__}: {exc}")
        return None


def load_stages(stream: Stream, reps: int) -> dict[str, Any]:
    """decode → verify → decrypt → apply, each over all messages; the session total; raw."""
    import msgpack
    import nacl.bindings as sodium
    import pycrdt

    from secsync.crdt import adapter_for
    from secsync.protocol import crypto, sealing, wire
    from secsync.protocol.changes import deserialize_changes
    from secsync.protocol.events import MessageRejected, UpdateApplied
    from secsync.protocol.session import DocumentSession

    payloads = stream.updates
    n = len(payloads)
    key = stream.key
    doc_id = stream.doc_id
    snapshot = wire.decode(stream.snapshot, doc_id=doc_id)
    messages = [wire.decode(p, doc_id=doc_id) for p in payloads]
    plaintexts = [sealing.open_message(m, key) for m in messages]
    changes = [deserialize_changes(p) for p in plaintexts]

    out: dict[str, Any] = {"messages": n}

    # --- secsync, stage by stage -----------------------------------------------------------
    out["decode"] = _safe(
        lambda: per_item_us(lambda: [wire.decode(p, doc_id=doc_id) for p in payloads], n, reps)
    )
    out["verify"] = _safe(
        lambda: per_item_us(lambda: [sealing.check_signature(m) for m in messages], n, reps)
    )
    # The session decrypts without handing over the AAD that verification computed.
    out["decrypt"] = _safe(
        lambda: per_item_us(lambda: [sealing.decrypt(m, key) for m in messages], n, reps)
    )

    def fresh_yjs() -> Any:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.get("text", type=pycrdt.Text)
        return adapter_for(doc)

    def apply_all(adapter: Any) -> None:
        for plaintext in plaintexts:
            adapter.apply_changes(deserialize_changes(plaintext))

    out["apply"] = _safe(lambda: median(_timed_with_setup(fresh_yjs, apply_all, reps)) / n * 1e6)

    reader = crypto.SigningKeyPair.generate()

    def fresh_session() -> Any:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.get("text", type=pycrdt.Text)
        session = DocumentSession(doc_id, reader, key, doc)
        session.load(snapshot)
        return session

    results: list[list[Any]] = []

    def receive(session: Any) -> None:
        results.append(session.receive_many(payloads))

    out["session"] = median(_timed_with_setup(fresh_session, receive, reps)) / n * 1e6
    events = results[-1]
    applied = sum(isinstance(e, UpdateApplied) for e in events)
    rejected = [e for e in events if isinstance(e, MessageRejected)]
    if applied != n or rejected:
        raise RuntimeError(f"session applied {applied}/{n}, rejected {len(rejected)}")
    # One message at a time, as the transport's live delivery and open() call it.
    out["session_receive_each"] = (
        median(_timed_with_setup(fresh_session, lambda s: [s.receive(p) for p in payloads], reps))
        / n
        * 1e6
    )

    # The four stages one message after the other, as the session runs them, without the
    # session: the difference to the separate loops is the cost of interleaving them.
    def pipeline(adapter: Any) -> None:
        for payload in payloads:
            message = wire.decode(payload, doc_id=doc_id)
            sealing.check_signature(message)
            adapter.apply_changes(deserialize_changes(sealing.decrypt(message, key)))

    out["interleaved"] = _safe(
        lambda: median(_timed_with_setup(fresh_yjs, pipeline, reps)) / n * 1e6
    )
    stages = [out[k] for k in ("decode", "verify", "decrypt", "apply")]
    out["stages_sum"] = sum(s for s in stages if s is not None)
    inter = out["interleaved"] if out["interleaved"] is not None else out["stages_sum"]
    out["interleaving"] = inter - out["stages_sum"]
    out["other"] = out["session"] - inter

    # --- raw: the same calls without secsync ----------------------------------------------
    signed = []
    tag_inputs = []
    aeads = []
    for m in messages:
        aad = m.public_data.aad()
        body = crypto.signed_bytes(
            m.domain, crypto.b64encode(m.ciphertext), crypto.b64encode(m.nonce), aad
        )
        signed.append((m.signature + body, m.public_data.pub_key))
        aead = m.ciphertext[crypto.TAG_BYTES :]
        tag_inputs.append(
            (crypto.b64encode(m.nonce) + crypto.b64encode(aead) + aad).encode("ascii")
        )
        aeads.append((aead, aad.encode("ascii"), m.nonce))
    raw: dict[str, float | None] = {}
    raw["decode"] = per_item_us(lambda: [msgpack.unpackb(p) for p in payloads], n, reps)
    raw["verify"] = per_item_us(
        lambda: [sodium.crypto_sign_open(sm, pk) for sm, pk in signed], n, reps
    )
    raw["hmac"] = per_item_us(lambda: [hmac.digest(key, t, "sha512") for t in tag_inputs], n, reps)
    raw["aead"] = per_item_us(
        lambda: [
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(c, ad, nonce, key)
            for c, ad, nonce in aeads
        ],
        n,
        reps,
    )
    raw["decrypt"] = (raw["hmac"] or 0) + (raw["aead"] or 0)

    def fresh_doc() -> Any:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.get("text", type=pycrdt.Text)
        return doc

    def raw_apply(doc: Any) -> None:
        for change_list in changes:
            for change in change_list:
                doc.apply_update(change)

    raw["apply"] = median(_timed_with_setup(fresh_doc, raw_apply, reps)) / n * 1e6
    raw["total"] = sum(raw[k] or 0 for k in ("decode", "verify", "decrypt", "apply"))
    raw["crypto"] = (raw["verify"] or 0) + (raw["decrypt"] or 0)
    out["raw"] = raw
    out["signed_bytes"] = median([len(sm) - 64 for sm, _ in signed])
    out["plaintext_bytes"] = median([len(p) for p in plaintexts])
    return out


def create_stages(changes: Sequence[bytes], reps: int) -> dict[str, Any]:
    """serialize → public data/AAD → encrypt → sign → encode; session total; raw."""
    import msgpack
    import nacl.bindings as sodium

    from secsync.protocol import crypto, sealing, wire
    from secsync.protocol.changes import serialize_changes
    from secsync.protocol.messages import UpdatePublicData

    n = len(changes)
    out: dict[str, Any] = {"messages": n}
    totals = []
    stream = None
    for index in range(reps + 1):  # the first run is the warm-up
        stream = build_stream(changes, keep_messages=True)
        if index:
            totals.append(stream.create_elapsed[n])
    assert stream is not None
    out["session"] = median(totals) / n * 1e6
    out["ack"] = stream.ack_elapsed / n * 1e6
    key = stream.key
    author = stream.author
    messages = stream.messages
    ref = messages[0].public_data.ref_snapshot_id
    plaintexts = [serialize_changes([c]) for c in changes]
    aads = [m.public_data.aad() for m in messages]
    nonces = [crypto.random_nonce() for _ in changes]
    ciphertexts = [m.ciphertext for m in messages]

    out["serialize"] = _safe(
        lambda: per_item_us(lambda: [serialize_changes([c]) for c in changes], n, reps)
    )
    out["aad"] = _safe(
        lambda: per_item_us(
            lambda: [
                UpdatePublicData(
                    doc_id=DOC_ID, pub_key=author.public_key, ref_snapshot_id=ref, clock=i
                ).aad()
                for i in range(n)
            ],
            n,
            reps,
        )
    )
    out["encrypt"] = _safe(
        lambda: per_item_us(
            lambda: [
                crypto.encrypt(p, a, key, crypto.random_nonce())
                for p, a in zip(plaintexts, aads, strict=True)
            ],
            n,
            reps,
        )
    )
    out["sign"] = _safe(
        lambda: per_item_us(
            lambda: [
                crypto.sign_message(
                    author, crypto.DOMAIN_UPDATE, crypto.b64encode(c), crypto.b64encode(nc), a
                )
                for c, nc, a in zip(ciphertexts, nonces, aads, strict=True)
            ],
            n,
            reps,
        )
    )
    out["encode"] = _safe(
        lambda: per_item_us(
            lambda: [wire.encode(m, include_doc_id=False) for m in messages], n, reps
        )
    )
    publics = [m.public_data for m in messages]

    def pipeline() -> None:
        for change, public in zip(changes, publics, strict=True):
            message = sealing.seal(public, serialize_changes([change]), key, author)
            wire.encode(message, include_doc_id=False)

    out["interleaved"] = _safe(lambda: per_item_us(pipeline, n, reps))
    stages = [out[k] for k in ("serialize", "aad", "encrypt", "sign", "encode")]
    out["stages_sum"] = sum(s for s in stages if s is not None)
    inter = out["interleaved"] if out["interleaved"] is not None else out["stages_sum"]
    out["interleaving"] = inter - out["stages_sum"]
    out["other"] = out["session"] - inter

    # --- raw -------------------------------------------------------------------------------
    secret = author.signing_key._signing_key  # the 64-byte libsodium secret key
    aads_ascii = [a.encode("ascii") for a in aads]
    signed = [
        crypto.signed_bytes(
            crypto.DOMAIN_UPDATE, crypto.b64encode(m.ciphertext), crypto.b64encode(m.nonce), a
        )
        for m, a in zip(messages, aads, strict=True)
    ]
    tag_inputs = [
        (crypto.b64encode(m.nonce) + crypto.b64encode(m.ciphertext[crypto.TAG_BYTES :]) + a).encode(
            "ascii"
        )
        for m, a in zip(messages, aads, strict=True)
    ]
    bodies = [
        [1, 2, None, author.public_key, ref, m.clock, None, m.nonce, m.ciphertext, m.signature]
        for m in messages
    ]
    raw: dict[str, float | None] = {}
    raw["serialize"] = per_item_us(
        lambda: [msgpack.packb([c], use_bin_type=True) for c in changes], n, reps
    )
    raw["nonce"] = per_item_us(lambda: [os.urandom(24) for _ in range(n)], n, reps)
    raw["aead"] = per_item_us(
        lambda: [
            sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(p, ad, nc, key)
            for p, ad, nc in zip(plaintexts, aads_ascii, nonces, strict=True)
        ],
        n,
        reps,
    )
    raw["hmac"] = per_item_us(lambda: [hmac.digest(key, t, "sha512") for t in tag_inputs], n, reps)
    raw["encrypt"] = (raw["nonce"] or 0) + (raw["aead"] or 0) + (raw["hmac"] or 0)
    raw["sign"] = per_item_us(lambda: [sodium.crypto_sign(s, secret) for s in signed], n, reps)
    raw["encode"] = per_item_us(
        lambda: [msgpack.packb(b, use_bin_type=True) for b in bodies], n, reps
    )
    raw["total"] = sum(raw[k] or 0 for k in ("serialize", "encrypt", "sign", "encode"))
    raw["crypto"] = (raw["encrypt"] or 0) + (raw["sign"] or 0)
    # hmac.new (what the package calls) next to the one-shot hmac.digest used as raw
    raw["hmac_new"] = per_item_us(
        lambda: [hmac.new(key, t, hashlib.sha512).digest() for t in tag_inputs], n, reps
    )
    out["raw"] = raw
    return out


def _chunks(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    size = max(1, -(-len(items) // parts))
    return [items[i : i + size] for i in range(0, len(items), size)]


def parallel_verification(stream: Stream, reps: int) -> dict[str, Any]:
    """Verify + decrypt a batch of received updates on 1 thread and on 2 threads.

    libsodium runs without the GIL (cffi releases it around each call); the Python around
    each call (AAD, base64, slicing) still holds it, which bounds the speed-up.
    """
    import nacl.bindings as sodium

    from secsync.protocol import crypto, sealing, wire

    key = stream.key
    messages = [wire.decode(p, doc_id=stream.doc_id) for p in stream.updates]
    n = len(messages)

    def verify_decrypt(chunk: Sequence[Any]) -> None:
        for m in chunk:
            aad = sealing.check_signature(m)
            sealing.decrypt(m, key, aad)

    def verify_only(chunk: Sequence[Any]) -> None:
        for m in chunk:
            sealing.check_signature(m)

    signed = [
        (
            m.signature
            + crypto.signed_bytes(
                m.domain,
                crypto.b64encode(m.ciphertext),
                crypto.b64encode(m.nonce),
                m.public_data.aad(),
            ),
            m.public_data.pub_key,
        )
        for m in messages
    ]

    def raw_verify(chunk: Sequence[Any]) -> None:
        for sm, pk in chunk:
            sodium.crypto_sign_open(sm, pk)

    blocks = [os.urandom(256 * 1024) for _ in range(64)]

    def reference(chunk: Sequence[bytes]) -> None:
        for block in chunk:  # hashlib drops the GIL for inputs above 2 KiB
            hashlib.sha512(block).digest()

    out: dict[str, Any] = {"messages": n}
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(len, [[1], [2]]))  # start both threads before timing
        for name, fn, items in (
            ("verify+decrypt", verify_decrypt, messages),
            ("verify", verify_only, messages),
            ("raw crypto_sign_open", raw_verify, signed),
            ("reference: sha512 of 256 KiB blocks", reference, blocks),
        ):
            parts = _chunks(items, 16)
            count = len(items)
            one = per_item_us(lambda fn=fn, items=items: fn(items), count, reps)
            two = per_item_us(lambda fn=fn, parts=parts: list(pool.map(fn, parts)), count, reps)
            out[name] = {"1 thread": one, "2 threads": two, "speedup": one / two}
    return out
