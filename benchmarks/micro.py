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
from secsync.protocol.encoding import b64encode


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


Side = tuple[Callable[[], Any], Callable[[Any], Any]]  # (setup, run): only run is timed


def _plain(fn: Callable[[], Any]) -> Side:
    return (lambda: None, lambda _state: fn())


def paired(a: Side, b: Side, items: int, reps: int, warmup: int = 1) -> tuple[float, float]:
    """Median µs per item of ``a`` and of ``b``, their runs alternating (a b, b a, a b ...).

    A secsync stage and its raw baseline are timed side by side, so that a burst of load from
    elsewhere on the machine hits both and their ratio stays meaningful.
    """
    times: tuple[list[float], list[float]] = ([], [])
    for index in range(warmup + reps):
        order = (0, 1) if index % 2 == 0 else (1, 0)
        for side in order:
            setup, run = (a, b)[side]
            state = setup()
            gc.collect()
            start = clock()
            run(state)
            elapsed = clock() - start
            if index >= warmup:
                times[side].append(elapsed)
    return median(times[0]) / items * 1e6, median(times[1]) / items * 1e6


def _stage(
    out: dict[str, Any],
    raw: dict[str, float | None],
    name: str,
    mine: Side,
    theirs: Side | None,
    *,
    items: int,
    reps: int,
) -> None:
    """Time one stage into ``out[name]`` and its raw baseline (if any) into ``raw[name]``."""
    try:
        if theirs is None:
            out[name] = per_item_us(lambda: mine[1](None), items, reps)
        else:
            out[name], raw[name] = paired(mine, theirs, items, reps)
    except Exception as exc:  # a stage the package no longer offers: n/a, not a crash
        print(f"  stage {name} failed: {type(exc).__name__}: {exc}")
        out[name] = None
        raw[name] = None


def load_stages(stream: Stream, reps: int) -> dict[str, Any]:
    """decode → verify → decrypt → apply, each over all messages, each next to its raw
    baseline; the session total next to the same stages interleaved without a session."""
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

    # Inputs of the raw calls, prepared beforehand: the bytes libsodium sees in secsync.
    signed = []
    tag_inputs = []
    aeads = []
    for m in messages:
        aad = m.public_data.aad()
        body = crypto.signed_bytes(m.domain, b64encode(m.ciphertext), b64encode(m.nonce), aad)
        signed.append((m.signature + body, m.public_data.pub_key))
        aead = m.ciphertext[crypto.TAG_BYTES :]
        tag_inputs.append((b64encode(m.nonce) + b64encode(aead) + aad).encode("ascii"))
        aeads.append((aead, aad.encode("ascii"), m.nonce))

    def raw_decrypt() -> None:
        for tag_input, (c, ad, nonce) in zip(tag_inputs, aeads, strict=True):
            hmac.digest(key, tag_input, "sha512")
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(c, ad, nonce, key)

    def fresh_yjs() -> Any:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.get("text", type=pycrdt.Text)
        return adapter_for(doc)

    def fresh_doc() -> Any:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.get("text", type=pycrdt.Text)
        return doc

    def apply_all(adapter: Any) -> None:
        for plaintext in plaintexts:
            adapter.apply_changes(deserialize_changes(plaintext))

    def raw_apply(doc: Any) -> None:
        for change_list in changes:
            for change in change_list:
                doc.apply_update(change)

    reader = crypto.SigningKeyPair.generate()

    def fresh_session() -> Any:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.get("text", type=pycrdt.Text)
        session = DocumentSession(doc_id, reader, key, doc)
        session.load(snapshot, now=0.0)
        return session

    results: list[list[Any]] = []

    def receive(session: Any) -> None:
        results.append(session.receive_many(payloads, now=0.0))

    # The four stages one message after the other, as the session runs them, without the
    # session: the difference to the separate loops is the cost of interleaving them.
    def pipeline(adapter: Any) -> None:
        for payload in payloads:
            message = wire.decode(payload, doc_id=doc_id)
            sealing.check_signature(message)
            adapter.apply_changes(deserialize_changes(sealing.decrypt(message, key)))

    out: dict[str, Any] = {"messages": n}
    raw: dict[str, float | None] = {}

    def stage(name: str, mine: Side, theirs: Side) -> None:
        _stage(out, raw, name, mine, theirs, items=n, reps=reps)

    stage(
        "decode",
        _plain(lambda: [wire.decode(p, doc_id=doc_id) for p in payloads]),
        _plain(lambda: [msgpack.unpackb(p) for p in payloads]),
    )
    stage(
        "verify",
        _plain(lambda: [sealing.check_signature(m) for m in messages]),
        _plain(lambda: [sodium.crypto_sign_open(sm, pk) for sm, pk in signed]),
    )
    # Decrypt as a stage of its own computes the AAD again (the session hands it over).
    stage(
        "decrypt", _plain(lambda: [sealing.decrypt(m, key) for m in messages]), _plain(raw_decrypt)
    )
    stage("apply", (fresh_yjs, apply_all), (fresh_doc, raw_apply))
    out["session"], out["interleaved"] = paired(
        (fresh_session, receive), (fresh_yjs, pipeline), n, reps
    )
    events = results[-1]
    applied = sum(isinstance(e, UpdateApplied) for e in events)
    rejected = [e for e in events if isinstance(e, MessageRejected)]
    if applied != n or rejected:
        raise RuntimeError(f"session applied {applied}/{n}, rejected {len(rejected)}")
    # One message at a time, as the transport's live delivery and open() call it.
    out["session_receive_each"] = (
        median(
            _timed_with_setup(
                fresh_session, lambda s: [s.receive(p, now=0.0) for p in payloads], reps
            )
        )
        / n
        * 1e6
    )
    stages = [out[k] for k in ("decode", "verify", "decrypt", "apply")]
    out["stages_sum"] = sum(s for s in stages if s is not None)
    out["interleaving"] = out["interleaved"] - out["stages_sum"]
    out["other"] = out["session"] - out["interleaved"]

    # details of the raw decrypt, unpaired
    raw["hmac"] = per_item_us(lambda: [hmac.digest(key, t, "sha512") for t in tag_inputs], n, reps)
    raw["aead"] = per_item_us(
        lambda: [
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(c, ad, nonce, key)
            for c, ad, nonce in aeads
        ],
        n,
        reps,
    )
    raw["total"] = sum(raw[k] or 0 for k in ("decode", "verify", "decrypt", "apply"))
    raw["crypto"] = (raw["verify"] or 0) + (raw["decrypt"] or 0)
    out["raw"] = raw
    out["signed_bytes"] = median([len(sm) - 64 for sm, _ in signed])
    out["plaintext_bytes"] = median([len(p) for p in plaintexts])
    return out


def create_stages(changes: Sequence[bytes], reps: int) -> dict[str, Any]:
    """serialize → public data/AAD → encrypt → sign → encode, each next to its raw baseline;
    the session total next to ``seal`` + ``encode`` without a session."""
    import msgpack
    import nacl.bindings as sodium

    from secsync.protocol import crypto, sealing, wire
    from secsync.protocol.changes import serialize_changes
    from secsync.protocol.messages import UpdatePublicData

    n = len(changes)
    out: dict[str, Any] = {"messages": n}
    stream = build_stream(changes, keep_messages=True)  # the messages the stages work on
    key = stream.key
    author = stream.author
    messages = stream.messages
    publics = [m.public_data for m in messages]
    ref = messages[0].public_data.ref_snapshot_id
    plaintexts = [serialize_changes([c]) for c in changes]
    aads = [m.public_data.aad() for m in messages]
    nonces = [crypto.random_nonce() for _ in changes]
    ciphertexts = [m.ciphertext for m in messages]

    # raw inputs, prepared beforehand
    secret = author.signing_key._signing_key  # the 64-byte libsodium secret key
    aads_ascii = [a.encode("ascii") for a in aads]
    signed = [
        crypto.signed_bytes(crypto.DOMAIN_UPDATE, b64encode(m.ciphertext), b64encode(m.nonce), a)
        for m, a in zip(messages, aads, strict=True)
    ]
    tag_inputs = [
        (b64encode(m.nonce) + b64encode(m.ciphertext[crypto.TAG_BYTES :]) + a).encode("ascii")
        for m, a in zip(messages, aads, strict=True)
    ]
    bodies = [
        [1, 2, None, author.public_key, ref, m.clock, None, m.nonce, m.ciphertext, m.signature]
        for m in messages
    ]

    def raw_encrypt() -> None:
        for p, ad, t in zip(plaintexts, aads_ascii, tag_inputs, strict=True):
            nonce = os.urandom(24)
            sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(p, ad, nonce, key)
            hmac.digest(key, t, "sha512")

    session_times: list[float] = []

    def session_create(_state: Any) -> None:
        session_times.append(build_stream(changes).create_elapsed[n])

    def seal_encode(_state: Any) -> None:
        for change, public in zip(changes, publics, strict=True):
            message = sealing.seal(public, serialize_changes([change]), key, author)
            wire.encode(message, include_doc_id=False)

    raw: dict[str, float | None] = {}

    def stage(name: str, mine: Side, theirs: Side | None) -> None:
        _stage(out, raw, name, mine, theirs, items=n, reps=reps)

    stage(
        "serialize",
        _plain(lambda: [serialize_changes([c]) for c in changes]),
        _plain(lambda: [msgpack.packb([c], use_bin_type=True) for c in changes]),
    )
    stage(
        "aad",
        _plain(
            lambda: [
                UpdatePublicData(
                    doc_id=DOC_ID, pub_key=author.public_key, ref_snapshot_id=ref, clock=i
                ).aad()
                for i in range(n)
            ]
        ),
        None,
    )
    stage(
        "encrypt",
        _plain(
            lambda: [
                crypto.encrypt(p, a, key, crypto.random_nonce())
                for p, a in zip(plaintexts, aads, strict=True)
            ]
        ),
        _plain(raw_encrypt),
    )
    stage(
        "sign",
        _plain(
            lambda: [
                crypto.sign_message(author, crypto.DOMAIN_UPDATE, b64encode(c), b64encode(nc), a)
                for c, nc, a in zip(ciphertexts, nonces, aads, strict=True)
            ]
        ),
        _plain(lambda: [sodium.crypto_sign(s, secret) for s in signed]),
    )
    stage(
        "encode",
        _plain(lambda: [wire.encode(m, include_doc_id=False) for m in messages]),
        _plain(lambda: [msgpack.packb(b, use_bin_type=True) for b in bodies]),
    )
    # The session times its own create path per update (build_stream); pair it with seal +
    # encode run one message after the other without a session.
    _, out["interleaved"] = paired(
        (lambda: None, session_create), (lambda: None, seal_encode), n, reps
    )
    out["session"] = median(session_times[1:]) / n * 1e6  # the first was the warm-up
    out["ack"] = stream.ack_elapsed / n * 1e6
    stages = [out[k] for k in ("serialize", "aad", "encrypt", "sign", "encode")]
    out["stages_sum"] = sum(s for s in stages if s is not None)
    out["interleaving"] = out["interleaved"] - out["stages_sum"]
    out["other"] = out["session"] - out["interleaved"]

    # details of the raw encrypt, unpaired
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
    # hmac.new (what the package calls) next to the one-shot hmac.digest used as raw
    raw["hmac_new"] = per_item_us(
        lambda: [hmac.new(key, t, hashlib.sha512).digest() for t in tag_inputs], n, reps
    )
    raw["total"] = sum(raw[k] or 0 for k in ("serialize", "encrypt", "sign", "encode"))
    raw["crypto"] = (raw["encrypt"] or 0) + (raw["sign"] or 0)
    out["raw"] = raw
    return out


def _chunks(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    size = max(1, -(-len(items) // parts))
    return [items[i : i + size] for i in range(0, len(items), size)]


def parallel_verification(stream: Stream, reps: int) -> dict[str, Any]:
    """Verify + decrypt a batch of received updates on 1 thread and on 2 threads.

    libsodium runs without the GIL (cffi releases it around each call); the Python around
    each call (AAD, base64, slicing) still holds it, which bounds the speed-up.

    ``receive_many`` is the package's own parallel path, measured whole: a loaded
    ``DocumentSession`` receiving the batch with ``verify_threads=0`` (1 thread) and with
    ``verify_threads=1`` (the calling thread and one worker of the same 2-thread pool).
    """
    import nacl.bindings as sodium
    import pycrdt

    from secsync.config import SecsyncConfig
    from secsync.protocol import crypto, sealing, wire
    from secsync.protocol.events import MessageRejected, UpdateApplied
    from secsync.protocol.session import DocumentSession

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
                b64encode(m.ciphertext),
                b64encode(m.nonce),
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

    snapshot = wire.decode(stream.snapshot, doc_id=stream.doc_id)
    reader = crypto.SigningKeyPair.generate()
    results: dict[int, list[Any]] = {}

    out: dict[str, Any] = {"messages": n}
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(len, [[1], [2]]))  # start both threads before timing

        def fresh_session(threads: int) -> Callable[[], Any]:
            def setup() -> Any:
                doc: pycrdt.Doc[Any] = pycrdt.Doc()
                doc.get("text", type=pycrdt.Text)
                session = DocumentSession(
                    stream.doc_id,
                    reader,
                    key,
                    doc,
                    config=SecsyncConfig(verify_threads=threads),
                    verify_executor=pool,
                )
                session.load(snapshot, now=0.0)
                return session

            return setup

        def receive(threads: int) -> Callable[[Any], None]:
            def run(session: Any) -> None:
                results[threads] = session.receive_many(stream.updates, now=0.0)

            return run

        one, two = paired((fresh_session(0), receive(0)), (fresh_session(1), receive(1)), n, reps)
        for events in results.values():
            applied = sum(isinstance(e, UpdateApplied) for e in events)
            if applied != n or any(isinstance(e, MessageRejected) for e in events):
                raise RuntimeError(f"receive_many applied {applied}/{n}")
        out["receive_many (session, verify_threads)"] = {
            "1 thread": one,
            "2 threads": two,
            "speedup": one / two,
        }
        for name, fn, items in (
            ("verify+decrypt", verify_decrypt, messages),
            ("verify", verify_only, messages),
            ("raw crypto_sign_open", raw_verify, signed),
            ("reference: sha512 of 256 KiB blocks", reference, blocks),
        ):
            parts = _chunks(items, 16)
            one, two = paired(  # 1 and 2 threads alternate, so both see the same machine
                _plain(lambda fn=fn, items=items: fn(items)),
                _plain(lambda fn=fn, parts=parts: list(pool.map(fn, parts))),
                len(items),
                reps,
            )
            out[name] = {"1 thread": one, "2 threads": two, "speedup": one / two}
    out["load_parallel_us"] = out["receive_many (session, verify_threads)"]["2 threads"]
    return out
