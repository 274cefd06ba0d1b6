"""§1 (per message, by stage, next to the raw calls) and §3 (parallel verification)."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.report.format import Add, f1, f2, get, ratio, table
from benchmarks.report.results import Results, Stages
from benchmarks.report.targets import projected_parallel_load

LOAD_STAGES = (
    ("decode", "decode (msgpack + checks)", "msgpack.unpackb"),
    ("verify", "verify (Ed25519)", "crypto_sign_open"),
    ("decrypt", "decrypt (commitment tag + AEAD)", "HMAC-SHA-512-256 + XChaCha20-Poly1305"),
    ("apply", "apply (changes → pycrdt)", "pycrdt apply_update"),
    ("interleaving", "interleaving (stages per message, not in separate loops)", "—"),
    ("other", "session bookkeeping (`receive_many` minus the interleaved stages)", "—"),
)
CREATE_STAGES = (
    ("serialize", "serialize changes", "msgpack.packb"),
    ("aad", "public data → AAD", "—"),
    ("encrypt", "encrypt (nonce + AEAD + commitment tag)", "urandom + XChaCha20-Poly1305 + HMAC"),
    ("sign", "sign (Ed25519)", "crypto_sign"),
    ("encode", "encode (msgpack wire form)", "msgpack.packb"),
    ("interleaving", "interleaving (stages per message, not in separate loops)", "—"),
    ("other", "session bookkeeping (`data_to_send` + encode minus `seal` + encode)", "—"),
)


def stage_table(
    measured: Stages,
    stages: Sequence[tuple[str, str, str]],
    own: tuple[str, ...],
    total: str,
    crypto_keys: tuple[str, str],
) -> list[str]:
    """The per-stage table of §1: each stage next to its raw call, the total, the crypto."""
    raw = measured["raw"]
    rows = []
    for key, name, raw_name in stages:
        mine = key in own
        rows.append(
            [
                name,
                f1(measured.get(key)),
                raw_name,
                "—" if mine else f1(raw.get(key)),
                "" if mine else ratio(measured.get(key), raw.get(key)),
            ]
        )
    rows.append(
        [
            f"**total (`{total}`)**",
            f"**{f1(measured['session'])}**",
            "sum of the raw calls",
            f"**{f1(raw['total'])}**",
            f"**{ratio(measured['session'], raw['total'])}**",
        ]
    )
    crypto = sum(get(measured, key) or 0 for key in crypto_keys)
    rows.append(
        [
            f"{' + '.join(crypto_keys)} only",
            f1(crypto),
            "libsodium + HMAC only",
            f1(raw["crypto"]),
            ratio(crypto, raw["crypto"]),
        ]
    )
    return table(["stage", "secsync µs", "raw call", "raw µs", "secsync / raw"], rows, "lrlrr")


def per_message(r: Results, add: Add, png: str | None, note: str | None) -> None:
    micro = r.micro
    add("## 1. Per message")
    add("")
    if not micro:
        add("*Not measured in this run.*")
        add("")
        return
    load, create = micro["load"], micro["create"]
    add(
        f"The first {load['messages']:,} updates of the trace (median plaintext "
        f"{load['plaintext_bytes']:.0f} bytes, signed input {load['signed_bytes']:.0f} bytes), "
        "each stage over all of them, median of the repetitions, µs per update. The raw column "
        "makes the same libsodium calls through PyNaCl on the same bytes (inputs prepared "
        "beforehand, so it excludes base64, AAD and message building), the same msgpack and "
        "pycrdt calls; HMAC-SHA-512-256 is `hmac.digest(key, msg, 'sha512')` truncated, because "
        "PyNaCl does not bind libsodium's `crypto_auth` (the package computes it with "
        "`hmac.new`, also OpenSSL)."
    )
    add("")
    add("### Load: decode → verify → decrypt → apply")
    add("")
    raw = load["raw"]
    for line in stage_table(
        load, LOAD_STAGES, ("other", "interleaving"), "receive_many", ("verify", "decrypt")
    ):
        add(line)
    add(
        f"Raw detail: Ed25519 verify {f1(raw['verify'])} µs, HMAC {f1(raw['hmac'])} µs, AEAD "
        f"decrypt {f1(raw['aead'])} µs. The four stages are timed in separate loops over all "
        f"messages (sum {f1(load['stages_sum'])} µs); run one message after the other without a "
        f"session they take {f1(load.get('interleaved'))} µs (caches and branch predictors see "
        "mixed work); the session adds policy, clocks, events, `handle_timer` and dispatch on "
        "top. Delivering the same updates one `receive()` call each, as the transport does, "
        f"costs {f1(load['session_receive_each'])} µs per update instead of "
        f"{f1(load['session'])}."
    )
    add("")
    add("### Create: serialize → AAD → encrypt → sign → encode")
    add("")
    raw = create["raw"]
    for line in stage_table(
        create,
        CREATE_STAGES,
        ("other", "aad", "interleaving"),
        "data_to_send` + `wire.encode",
        ("encrypt", "sign"),
    ):
        add(line)
    add(
        f"Raw detail: Ed25519 sign {f1(raw['sign'])} µs, AEAD encrypt {f1(raw['aead'])} µs, "
        f"HMAC {f1(raw['hmac'])} µs (`hmac.new` as the package calls it: "
        f"{f1(raw['hmac_new'])} µs), 24 random bytes {f1(raw['nonce'])} µs. Stages timed in "
        f"separate loops sum to {f1(create['stages_sum'])} µs; `sealing.seal` + `wire.encode` "
        f"one message after the other, without a session, take "
        f"{f1(create.get('interleaved'))} µs. The broker "
        f"acknowledgement (`update_stored`) adds {f1(create['ack'])} µs per update, not "
        "counted above."
    )
    add("")
    if png:
        add(f"![µs per update by stage, and JetStream rates]({png})")
    else:
        add(f"*No chart: {note}.*")
    add("")


def parallel(r: Results, add: Add) -> None:
    add("## 3. Parallel verification")
    add("")
    par = r.parallel
    if not par:
        add("*Not measured in this run.*")
        add("")
        return
    add(
        f"{par['messages']:,} received updates, split into 16 chunks over a 2-thread pool "
        "versus one thread, µs per update. `verify+decrypt` is the package's "
        "`sealing.check_signature` then `sealing.decrypt` (AAD passed on); `raw` is "
        "`crypto_sign_open` on prepared inputs. cffi releases the GIL around each libsodium call, "
        "the Python around it (AAD, base64, slicing) does not."
    )
    add("")
    rows = [
        [name, f1(v["1 thread"]), f1(v["2 threads"]), f2(v["speedup"], "x")]
        for name, v in par.items()
        if isinstance(v, dict) and "1 thread" in v
    ]
    for line in table(["work", "1 thread µs", "2 threads µs", "speed-up"], rows):
        add(line)
    ref = par.get("reference: sha512 of 256 KiB blocks")
    if ref:
        add(
            f"The reference row is work that certainly runs without the GIL: its "
            f"{f2(ref['speedup'])}x is what this machine offered a second thread during the run"
            + (
                " — less than 1.5x means another process held a core, and the speed-ups above "
                "say nothing about secsync."
                if ref["speedup"] < 1.5
                else "."
            )
        )
        add("")
    measured = projected_parallel_load(r)
    if measured is not None:
        add(
            f"Load with parallel verification: {f1(measured)} µs per update, measured: a "
            "loaded `DocumentSession.receive_many` of the same updates with `verify_threads=1` "
            "(the calling thread and one worker decode, verify and open each part of up to 512 "
            "messages ahead, then the session applies them in order), row `receive_many "
            "(session, verify_threads)` above."
        )
        add("")
