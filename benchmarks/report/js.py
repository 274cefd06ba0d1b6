"""The JavaScript reference side by side: secsync 0.5.0 in Node on the same trace slices, with
the raw libsodium calls of both sides as the calibration."""

from __future__ import annotations

from benchmarks.report.format import Add, add_table, f1, f2, get, ratio
from benchmarks.report.results import Results

TITLE = "The JavaScript reference side by side"


def js_reference(r: Results, add: Add, number: int) -> None:
    add(f"## {number}. {TITLE}")
    add("")
    note = r.provenance("js")
    if note:
        add(note)
        add("")
    measured = r.js_reference
    if not measured:
        add("*Not measured in this run.*")
        add("")
        return
    if not measured.get("node") or "js" not in measured:
        add(f"*{measured.get('reason') or 'Node not found; JS reference not run'}.*")
        add("")
        return
    js = measured["js"]
    versions = js["versions"]
    cal = measured.get("calibration") or {}
    add(
        f"The npm `secsync` {versions.get('secsync')} package (libsodium-wrappers "
        f"{versions.get('libsodium-wrappers')} with libsodium.js {versions.get('libsodium')}, "
        f"Yjs {versions.get('yjs')}) in Node {measured['node']}, run by "
        "`benchmarks/js/reference.mjs` in the same run on the same machine, on the same "
        f"{js['updates']:,} trace updates as §1 and the same final state as the snapshot of §2. "
        "Create: `createUpdate` of each Yjs update (content `serializeUint8ArrayUpdates`, "
        "clocks 0 … n-1) and `JSON.stringify`; load: `JSON.parse`, `parseUpdate`, "
        "`verifyAndDecryptUpdate`, `deserializeUint8ArrayUpdates` and `Y.applyUpdate` into a "
        "fresh `Y.Doc`, the text checked against the trace. Snapshot: `Y.encodeStateAsUpdate` + "
        "`createSnapshot` + `JSON.stringify`; `JSON.parse` + `parseSnapshotWithClientData` + "
        "`verifyAndDecryptSnapshot` + `Y.applyUpdate`. The Python side is this run's §1 and §2 "
        "figures (`DocumentSession`, msgpack wire form). Medians of the repetitions; a ratio "
        "below 1 means Python is faster."
    )
    add("")
    micro_load = get(r.micro, "load", "session")
    micro_create = get(r.micro, "create", "session")
    snap_create = get(r.snapshot, "create_ms")
    snap_load = get(r.snapshot, "load_ms")
    snap_js = js["snapshot"]
    rows = [
        [
            "create, µs per update",
            f1(micro_create),
            f1(js["create_us"]),
            ratio(micro_create, js["create_us"], 2),
        ],
        [
            "load, µs per update",
            f1(micro_load),
            f1(js["load_us"]),
            ratio(micro_load, js["load_us"], 2),
        ],
        [
            "snapshot create, ms",
            f2(snap_create),
            f2(snap_js["create_ms"]),
            ratio(snap_create, snap_js["create_ms"], 2),
        ],
        [
            "snapshot load, ms",
            f2(snap_load),
            f2(snap_js["load_ms"]),
            ratio(snap_load, snap_js["load_ms"], 2),
        ],
    ]
    add_table(add, ["work", "secsync (Python)", "secsync (JS)", "Python / JS"], rows)
    stages = js["load_stages_us"]
    python_wire = get(r.yjs, "rows", 0, "wire_bytes_mean")
    add(
        f"JS load by stage, in separate loops: parse {f1(stages.get('decode'))} µs, verify + "
        f"decrypt {f1(stages.get('verify_decrypt'))} µs, apply {f1(stages.get('apply'))} µs per "
        f"update. On the wire an update is {js['wire_bytes_mean']:,.0f} bytes of JSON in JS"
        + (f" against {python_wire:,.0f} bytes of msgpack here" if python_wire else "")
        + f"; the snapshot {snap_js['wire_bytes']:,} bytes"
        + (f" against {r.snapshot['wire_bytes']:,}" if r.snapshot else "")
        + "."
    )
    add("")
    python = measured.get("python_calibration_us") or {}
    own = js["calibration_us"]
    add("### Calibration: the same libsodium calls on both sides")
    add("")
    add(
        f"{cal.get('calls', 0):,} calls each on the same bytes, µs per call: Ed25519 "
        f"`crypto_sign` / `crypto_sign_open` of {cal.get('sign_input_bytes')}-byte inputs (about "
        "a signed update), XChaCha20-Poly1305 `crypto_aead_xchacha20poly1305_ietf_encrypt` / "
        f"`_decrypt` of the trace's Yjs updates (median {cal.get('aead_plaintext_bytes_median')} "
        f"bytes) with {cal.get('aad_bytes')} bytes of AAD. Python calls libsodium through "
        "PyNaCl's low-level bindings (`nacl.bindings`, cffi); JS through libsodium-wrappers "
        "(libsodium compiled to WebAssembly); the PyNaCl figures are the lower of two medians, "
        "measured before and after Node. Where a Python/JS ratio above differs from these, "
        "the difference is the code around the cryptography, not the libsodium build."
    )
    add("")
    names = (
        ("sign", "Ed25519 sign"),
        ("verify", "Ed25519 verify"),
        ("seal", "XChaCha20-Poly1305 seal"),
        ("open", "XChaCha20-Poly1305 open"),
    )
    add_table(
        add,
        ["libsodium call", "PyNaCl µs", "libsodium-wrappers µs", "Python / JS"],
        [
            [label, f2(python.get(key)), f2(own.get(key)), ratio(python.get(key), own.get(key), 2)]
            for key, label in names
        ],
    )
