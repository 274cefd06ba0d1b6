"""``import secsync`` and the light commands stay light: no nats, asyncio or CRDT library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import secsync

HEAVY = ("nats", "asyncio", "pycrdt", "automerge")

# Runs the command line in-process, then names the heavy modules that got imported.
PROBE = f"""
import contextlib, io, json, sys
import secsync.cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = secsync.cli.main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
heavy = sorted(name for name in {HEAVY!r} if name in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy, "output": out.getvalue()}}))
"""


def probe(*argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["keygen"],
        ["broker", "--help"],
        ["message", "open", "--help"],
        ["demo", "--help"],
    ],
)
def test_light_commands_import_nothing_heavy(argv: list[str]) -> None:
    result = probe(*argv)
    assert result["code"] == 0
    assert result["output"]
    assert result["heavy"] == []


def test_import_secsync_is_light_until_a_name_is_used() -> None:
    code = (
        "import json, sys, secsync\n"
        f"before = sorted(n for n in {HEAVY!r} if n in sys.modules)\n"
        "secsync.connect\n"
        f"after = sorted(n for n in {HEAVY!r} if n in sys.modules)\n"
        "print(json.dumps([before, after]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = json.loads(done.stdout)
    assert before == []
    assert "nats" in after  # the name really loads the transport


def test_lazy_names_are_the_real_objects() -> None:
    from secsync.config import SecsyncConfig
    from secsync.protocol import SigningKeyPair
    from secsync.transport import connect

    assert secsync.SecsyncConfig is SecsyncConfig
    assert secsync.SigningKeyPair is SigningKeyPair
    assert secsync.connect is connect
    assert set(secsync.__all__) <= set(dir(secsync))
    for name in secsync.__all__:
        assert getattr(secsync, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = secsync.no_such_name  # type: ignore[attr-defined]


def test_keygen_prints_keys_the_protocol_accepts() -> None:
    """keygen makes its keys with PyNaCl directly (light); they must be the protocol's forms."""
    from secsync.protocol import crypto
    from secsync.protocol.encoding import b64decode, b64encode

    result = probe("keygen")
    keys = json.loads(str(result["output"]))
    pair = crypto.SigningKeyPair.from_b64(keys["signingSecretKey"])
    assert b64encode(pair.public_key) == keys["signingPublicKey"]
    assert b64encode(pair.secret_key) == keys["signingSecretKey"]
    assert crypto.check_key(b64decode(keys["documentKey"])) == b64decode(keys["documentKey"])
    assert len(b64decode(keys["documentKey"])) == crypto.KEY_BYTES
