"""The secsync 0.5.0 JavaScript reference on the same trace slices, and the libsodium calibration.

Node runs ``benchmarks/js/reference.mjs`` (its packages pinned by ``benchmarks/js/package.json``
and ``package-lock.json``, installed with ``npm ci`` when ``node_modules`` is missing) on the
updates of the per-message section and the final state of the snapshot section. The raw
libsodium calls (Ed25519 sign and verify, XChaCha20-Poly1305 seal and open) run on the same
bytes through PyNaCl here and through libsodium-wrappers there: the calibration that tells how
much of a Python/JS ratio is the two libsodium builds rather than the code around them.

Without Node the section records why and the report says so; the run goes on.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import DOC_ID, REPO, per_item_us

JS_DIR = REPO / "benchmarks" / "js"
SCRIPT = JS_DIR / "reference.mjs"
SIGN_INPUT_BYTES = 440  # about the signed input of a one-keystroke update (§1)
AAD_BYTES = 180  # about the base64 AAD of an update
CALIBRATION_CALLS = 2_000
NOT_FOUND = "Node not found; JS reference not run"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def node_binary() -> str | None:
    return shutil.which("node")


def ensure_packages(js_dir: Path = JS_DIR) -> None:
    """``npm ci`` in ``js_dir`` unless its ``node_modules`` is already there."""
    if (js_dir / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: cannot install benchmarks/js (npm ci)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--silent"],
        cwd=js_dir,
        check=True,
        timeout=600,
    )


def calibration_inputs(changes: Sequence[bytes]) -> dict[str, Any]:
    """The bytes both sides sign and seal: random sign inputs the size of a signed update, the
    trace's own Yjs updates as AEAD plaintexts (fresh random keys, one fixed nonce and AAD)."""
    count = min(CALIBRATION_CALLS, max(1, len(changes)))
    plaintexts = list(changes[:count]) or [b"x"]
    return {
        "seed": os.urandom(32),
        "key": os.urandom(32),
        "nonce": os.urandom(24),
        "aad": os.urandom(AAD_BYTES),
        "sign_inputs": [os.urandom(SIGN_INPUT_BYTES) for _ in range(count)],
        "aead_plaintexts": plaintexts,
    }


def python_calibration(cal: dict[str, Any], reps: int) -> dict[str, float]:
    """µs per call of the four libsodium calls through PyNaCl's low-level bindings."""
    import nacl.bindings as sodium

    public, secret = sodium.crypto_sign_seed_keypair(cal["seed"])
    key, nonce, aad = cal["key"], cal["nonce"], cal["aad"]
    inputs: list[bytes] = cal["sign_inputs"]
    plaintexts: list[bytes] = cal["aead_plaintexts"]
    signed = [sodium.crypto_sign(m, secret) for m in inputs]
    sealed = [
        sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(p, aad, nonce, key) for p in plaintexts
    ]
    return {
        "sign": per_item_us(
            lambda: [sodium.crypto_sign(m, secret) for m in inputs], len(inputs), reps
        ),
        "verify": per_item_us(
            lambda: [sodium.crypto_sign_open(sm, public) for sm in signed], len(signed), reps
        ),
        "seal": per_item_us(
            lambda: [
                sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(p, aad, nonce, key)
                for p in plaintexts
            ],
            len(plaintexts),
            reps,
        ),
        "open": per_item_us(
            lambda: [
                sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(c, aad, nonce, key)
                for c in sealed
            ],
            len(sealed),
            reps,
        ),
    }


def run(
    changes: Sequence[bytes],
    changes_text: str,
    state: bytes,
    state_text: str,
    *,
    reps: int,
    snapshot_reps: int,
) -> dict[str, Any]:
    """Measure the JS reference and both calibrations; ``{"node": None, ...}`` without Node."""
    node = node_binary()
    if node is None:
        return {"node": None, "reason": NOT_FOUND}
    ensure_packages()
    cal = calibration_inputs(changes)
    request = {
        "docId": DOC_ID,
        "updates": [_b64(c) for c in changes],
        "updatesText": changes_text,
        "state": _b64(state),
        "stateText": state_text,
        "reps": reps,
        "snapshotReps": snapshot_reps,
        "calibration": {
            "seed": _b64(cal["seed"]),
            "key": _b64(cal["key"]),
            "nonce": _b64(cal["nonce"]),
            "aad": _b64(cal["aad"]),
            "signInputs": [_b64(m) for m in cal["sign_inputs"]],
            "aeadPlaintexts": [_b64(p) for p in cal["aead_plaintexts"]],
        },
    }
    # The Python calls run before and after Node, the lower median kept: a burst of load from
    # elsewhere on the machine during one of them does not decide the calibration.
    before = python_calibration(cal, reps)
    with tempfile.TemporaryDirectory(prefix="secsync-bench-js-") as tmp:
        path = Path(tmp) / "input.json"
        path.write_text(json.dumps(request), encoding="utf-8")
        done = subprocess.run(
            [node, str(SCRIPT), str(path)],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"node {SCRIPT.name} failed: {done.stderr.strip()[-500:]}")
    js = json.loads(done.stdout)
    after = python_calibration(cal, reps)
    python = {name: min(before[name], after[name]) for name in before}
    return {
        "node": js.pop("node"),
        "js": js,
        "python_calibration_us": python,
        "calibration": {
            "calls": len(cal["sign_inputs"]),
            "sign_input_bytes": SIGN_INPUT_BYTES,
            "aead_plaintext_bytes_median": sorted(len(p) for p in cal["aead_plaintexts"])[
                len(cal["aead_plaintexts"]) // 2
            ],
            "aad_bytes": AAD_BYTES,
        },
    }
