"""``import secsync`` and the light commands stay light: no nats, asyncio or CRDT library."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import typing

import pytest

import secsync

HEAVY = ("nats", "asyncio", "pycrdt", "automerge")

# Runs the command line in-process, then names the heavy modules that got imported.
PROBE = f"""
import contextlib, io, json, sys
from secsync.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
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
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = secsync.no_such_name  # type: ignore[attr-defined]


def test_every_public_name_resolves_to_the_object_of_its_module() -> None:
    lazy: dict[str, str] = secsync._LAZY  # type: ignore[attr-defined]
    assert len(secsync.__all__) == len(set(secsync.__all__))
    assert set(secsync.__all__) == {*lazy, "__version__"}
    assert set(secsync.__all__) <= set(dir(secsync))
    for name, module in lazy.items():
        assert getattr(secsync, name) is getattr(importlib.import_module(module), name), name


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from secsync import *", namespace)
    assert set(secsync.__all__) <= set(namespace)


def test_an_application_needs_no_submodule() -> None:
    """Every event, the errors an application catches, and the API it calls are names of
    ``secsync``."""
    from secsync import errors
    from secsync.protocol import events

    event_classes = {
        name
        for name, value in vars(events).items()
        if isinstance(value, type)
        and issubclass(value, events.BaseEvent)
        and value is not events.BaseEvent
    }
    assert event_classes  # the events module defines them
    assert event_classes | {"Event"} <= set(secsync.__all__)
    assert set(typing.get_args(events.Event)) == {getattr(events, n) for n in event_classes}
    categories = {
        value.__name__
        for value in vars(errors).values()
        if isinstance(value, type)
        and value.__bases__ == (errors.SecsyncError,)
        and value.__subclasses__()
    }
    assert {"SecsyncError", *categories} <= set(secsync.__all__)
    for name in secsync.__all__:
        value = getattr(secsync, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, errors.SecsyncError), name
            assert getattr(errors, name) is value
    assert {
        "AccessError",
        "Connecting",
        "CrdtDocument",
        "Device",
        "DeviceCertificate",
        "Document",
        "DocumentNotFoundError",
        "Group",
        "IdentityInUseError",
        "InvalidKeyError",
        "MembershipError",
        "NotAMemberError",
        "SecsyncClient",
        "SecsyncConfig",
        "ShareLink",
        "TransportError",
        "UserIdentity",
        "WrongKeyError",
        "connect",
        "new_yjs_doc",
        "open_shared",
    } <= set(secsync.__all__)


def test_every_public_name_loads_without_the_transport_until_used() -> None:
    """Names that need no broker (errors, events, keys, configuration) load no nats."""
    light = [
        name
        for name, module in secsync._LAZY.items()  # type: ignore[attr-defined]
        if module in ("secsync.errors", "secsync.config", "secsync.crdt", "secsync.protocol.keys")
    ]
    code = (
        "import json, sys, secsync\n"
        f"for name in {light!r}: getattr(secsync, name)\n"
        f"print(json.dumps(sorted(n for n in {HEAVY!r} if n in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


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
