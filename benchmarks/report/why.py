"""§7: why the missed targets are missed, and what would help."""

from __future__ import annotations

from benchmarks.report.format import Add, f0, f1, f2, get, ok
from benchmarks.report.results import Results
from benchmarks.report.targets import targets


def why(r: Results, add: Add) -> None:
    add("## 7. Why targets are missed, and what would help")
    add("")
    found = {t["key"]: t for t in targets(r)}
    load = r.micro["load"] if r.micro else None
    create = r.micro["create"] if r.micro else None
    e2e = r.e2e or {}
    raw = e2e.get("raw") or {}
    notes: list[str] = []
    if load and found.get("load"):
        floor = load["raw"]["crypto"]
        verdict = "meets" if found["load"]["met"] else "misses"
        notes.append(
            f"**Load {verdict} 50 µs** at {f1(load['session'])} µs per update. The "
            f"cryptography alone, called raw, costs {f1(floor)} µs (Ed25519 verify "
            f"{f1(load['raw']['verify'])}, HMAC {f1(load['raw']['hmac'])}, AEAD "
            f"{f1(load['raw']['aead'])}): {floor / 50 * 100:.0f} % of the budget before any "
            f"Python runs. secsync adds {f1(load['session'] - floor)} µs on top: verify "
            f"{f1(load['verify'])} vs {f1(load['raw']['verify'])} raw, decrypt "
            f"{f1(load['decrypt'])} vs {f1(load['raw']['decrypt'])}, decode "
            f"{f1(load['decode'])} vs {f1(load['raw']['decode'])}, apply {f1(load['apply'])} vs "
            f"{f1(load['raw']['apply'])}, interleaving {f1(load.get('interleaving'))}, session "
            f"bookkeeping {f1(load['other'])}. "
            + (
                "Single-threaded, 50 µs is out of reach on this CPU whatever the Python does: "
                "Ed25519 verification alone nearly fills it, and it is the protocol's."
                if floor >= 45
                else f"That leaves {f1(50 - floor)} µs for everything that is not cryptography."
            )
        )
    if found.get("load_parallel") and r.parallel:
        par = r.parallel
        session_row = par.get("receive_many (session, verify_threads)") or {}
        raw_row = par.get("raw crypto_sign_open") or {}
        notes.append(
            f"**Parallel verification {'meets' if found['load_parallel']['met'] else 'misses'} "
            f"30 µs** at {f1(found['load_parallel']['value'])} µs per update "
            f"(`verify_threads=1`: {f2(session_row.get('speedup'), 'x')} over one thread; raw "
            f"`crypto_sign_open` alone gains {f2(raw_row.get('speedup'), 'x')} on 2 threads). "
            + (
                f"Ed25519 verification is {f1(load['raw']['verify'])} µs of CPU per update and "
                f"{f1(load['session'] - load['raw']['crypto'])} µs of Python must hold the GIL: "
                "spread perfectly over 2 cores that is "
                f"{f1((load['session']) / 2)} µs, so 30 µs needs more cores. The workers also "
                "need the GIL back after every libsodium call, and waking a sleeping thread costs "
                "tens of microseconds on this virtual machine, so the session's own processing "
                "and the workers' verification alternate once per part of up to 512 messages "
                "rather than overlap."
                if load
                else ""
            )
            + (
                f" (This run's machine gave a GIL-free reference only "
                f"{f2(par['reference: sha512 of 256 KiB blocks']['speedup'])}x on 2 threads.)"
                if par.get("reference: sha512 of 256 KiB blocks")
                and par["reference: sha512 of 256 KiB blocks"]["speedup"] < 1.5
                else ""
            )
        )
    if create and found.get("create"):
        notes.append(
            f"**Create {'meets' if found['create']['met'] else 'misses'} 35 µs** at "
            f"{f1(create['session'])} µs: raw crypto {f1(create['raw']['crypto'])} µs (Ed25519 "
            f"sign {f1(create['raw']['sign'])}), secsync sign {f1(create['sign'])}, encrypt "
            f"{f1(create['encrypt'])} (raw {f1(create['raw']['encrypt'])}), AAD "
            f"{f1(create['aad'])}, encode {f1(create['encode'])}, serialize "
            f"{f1(create['serialize'])}, bookkeeping {f1(create['other'])}."
        )
    if found.get("wire") and ok(found["wire"]["value"]):
        parts = get(r.yjs, "default_policy", "breakdown") or {}
        fixed = sum(
            parts.get(k, 0)
            for k in (
                "commitment tag + AEAD tag",
                "nonce",
                "signature",
                "author key",
                "snapshot id",
            )
        )
        single = get(r.yjs, "one_keystroke_wire_median")
        framing = parts.get("change-list framing", 0) + parts.get(
            "msgpack framing, version, kind, clock", 0
        )
        notes.append(
            f"**Wire size {'meets' if found['wire']['met'] else 'misses'} 250 bytes** at "
            f"{found['wire']['value']:.0f} bytes"
            + (
                f": {fixed} bytes are fixed by the protocol (tags, nonce, signature, author key, "
                f"snapshot id), the Yjs update itself is {parts.get('Yjs update')} bytes, framing "
                f"{framing} bytes. On one snapshot without the policy the clock grows to 5 "
                f"bytes of msgpack and the median is {single} bytes."
                if parts
                else "."
            )
        )
    one = e2e.get("one_per_edit")
    sat = e2e.get("saturated")
    if sat and raw.get("pipelined") and raw.get("sequential"):
        idle = e2e.get("idle") or {}
        bursts = e2e.get("bursts")
        load_us = load["session"] if load else float("nan")
        create_us = create["session"] if create else float("nan")
        floor = 1e6 / max(load_us, create_us) if load and create else float("nan")
        text = (
            f"**End to end {'meets' if found['e2e']['met'] else 'misses'} 40 %**: with the "
            f"writer at full speed the `Document` carries {f0(sat['items_per_s'])} edits/s to "
            f"the reader in {f0(sat['messages_per_s'])} updates/s "
            f"({sat['items'] / sat['messages']:.1f} edits per update), "
            f"{sat['items_per_s'] / raw['pipelined'] * 100:.0f} % "
            f"of raw pipelined ({f0(raw['pipelined'])}/s). The raw publisher spends "
            f"{f1(raw.get('pipelined_cpu_us'))} µs of CPU per message; here the writer spends "
            f"{f0(sat['writer_cpu_us'])} µs per edit (creating an update: {f1(create_us)} µs) "
            f"and the reader {f0(sat['reader_cpu_us'])} µs (loading it: {f1(load_us)} µs, of which "
            "the "
            "Ed25519 verification alone is the raw column of §1), on 2 cores shared with "
            "nats-server. Even with a free transport, a writer and a reader on a core each could "
            f"not pass {f0(floor)} updates/s (one update per {f1(max(load_us, create_us))} µs "
            f"of the slower side), {floor / raw['pipelined'] * 100:.0f} % of raw pipelined: a "
            "per-update signature and verification through libsodium cost more than a raw "
            "acknowledged publish, so 40 % of an unsigned, unencrypted publish rate is out of "
            "reach for one update per edit. What is left above the cryptography is nats-py's "
            "per-message work (protocol parsing, header parsing of each delivered message, "
            "futures) and the event loop."
        )
        if one:
            text += (
                f" Waiting for each edit's acknowledgement (one-per-edit row) gives "
                f"{f0(one['messages_per_s'])} updates/s, "
                f"{one['messages_per_s'] / raw['sequential'] * 100:.0f} % of raw sequential "
                f"`js.publish` ({f0(raw['sequential'])}/s): a {f0(one['cycle_us'])} µs round "
                "trip per edit."
            )
        if bursts:
            text += (
                f" A program that edits in bursts gets {f0(bursts['items_per_s'])} edits/s "
                f"through ({bursts['items'] / bursts['messages']:.1f} edits per update): "
                "the sender merges what accumulates while it works into one update."
            )
        if idle.get("open_document_pct", 0) >= 5:
            text += (
                f" In this run every open document also spun "
                f"{f0(idle['open_document_pct'])} % of a core while idle (§4)."
            )
        notes.append(text)
    snap = r.snapshot
    if snap and found.get("snapshot"):
        st = snap["stages_ms"]
        notes.append(
            f"**Snapshot load {'meets' if found['snapshot']['met'] else 'misses'} 50 ms** at "
            f"{f1(snap['load_ms'])} ms for {snap['wire_bytes']:,} bytes (decode "
            f"{f2(st['decode'])}, verify {f2(st['verify'])}, decrypt {f2(st['decrypt'])}, apply "
            f"{f2(st['apply'])} ms; raw {f2(snap['raw_ms']['load_total'])} ms)."
        )
    for note in notes:
        add(f"* {note}")
    add("")
    add("**What is left, and what would help** (not made here; the benchmark only measures):")
    add("")
    load = get(r.micro, "load")
    verify_raw = get(r.micro, "load", "raw", "verify")
    facts = []
    if load:
        facts.append(
            "`receive()` per message costs "
            f"{f1(load['session_receive_each'])} µs per update against "
            f"{f1(load['session'])} for one `receive_many`; the transport hands bursts, loads "
            "and catch-ups to `receive_many` as runs of updates."
        )
    facts += [
        f"Ed25519 verification ({f1(verify_raw)} µs raw on this CPU) is most of a received "
        "update. libsodium offers no batch verification; a verifier with batch verification "
        "(about twice as fast per signature in Rust and C implementations) would be the next "
        "lever, at the price of a second cryptographic library. `verify_threads` already uses "
        "the other cores: on more than 2 cores it scales further.",
        "End to end, nats-py's own per-message work (parsing each delivered message's headers "
        "character by character, one `Msg` object and one queue hop per message) is the largest "
        "cost above the cryptography; stored updates carry three headers (message id and the "
        "compare-and-set pair) that every reader parses.",
        "Fewer, larger updates cost less than many small ones: the sender already merges what "
        "accumulates while it works (`batch_interval`, default 20 ms, and the bursts row of "
        "§4); an application that makes many small edits gains most from keeping the default.",
    ]
    idle_now = get(r.e2e, "idle") or {}
    if idle_now.get("open_document_pct", 0) >= 5 and idle_now.get("busiest"):
        top = idle_now["busiest"][0]
        facts.insert(
            0,
            f"An idle open document must not spin: `{top['function']}` runs "
            f"{top['calls_per_s']:,.0f} times a second with nothing to do "
            f"({f0(idle_now['open_document_pct'])} % of a core per open document).",
        )
    for fact in facts:
        add(f"* {fact}")
    add("")
