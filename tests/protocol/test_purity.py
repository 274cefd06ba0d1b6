"""The protocol core is sans-IO: no event loop, broker client, threads or clock of its own."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import secsync.protocol

CORE = Path(secsync.protocol.__file__).parent
# What the core must not import; the transport owns all of it.
FORBIDDEN = {
    "asyncio",
    "concurrent",
    "multiprocessing",
    "nats",
    "selectors",
    "socket",
    "subprocess",
    "threading",
    "time",
}
# The gateway's decision core; its pump (server, serving) owns the I/O.
GATEWAY_CORE = ("__init__", "connection", "frames", "params", "view")
# Helpers the core may import from the rest of the package; each is held to the same rule.
SHARED = ("secsync.config", "secsync.crdt", "secsync.errors", "secsync.logs", "secsync._lazy")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _files() -> list[Path]:
    package = CORE.parent
    files = sorted(CORE.glob("*.py")) + [package / "gateway" / f"{m}.py" for m in GATEWAY_CORE]
    for name in SHARED:
        relative = name.removeprefix("secsync.").replace(".", "/")
        module = package / f"{relative}.py"
        files.append(module if module.exists() else package / relative / "__init__.py")
    return files


def test_no_module_of_the_core_imports_io_threads_or_the_clock() -> None:
    offenders = {
        str(path.relative_to(CORE.parent)): sorted(_imports(path) & FORBIDDEN) for path in _files()
    }
    assert {path: names for path, names in offenders.items() if names} == {}
    assert len(offenders) >= 16


def test_no_module_of_the_core_reads_the_clock_another_way() -> None:
    clock_reads = ("monotonic", "perf_counter", "utcnow", "datetime.now", "time_ns")
    found = [
        f"{path.name}: {word}"
        for path in _files()
        for word in clock_reads
        if f"{word}(" in path.read_text()
    ]
    assert found == []


PROBE = """
import importlib.abc, json, pkgutil, sys

class NoNats(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "nats" or name.startswith("nats."):
            raise ImportError("nats-py is not installed")
        return None

sys.meta_path.insert(0, NoNats())
# automerge, not pycrdt: pycrdt itself loads asyncio (through anyio) when a type is created.
from automerge import core
import secsync.gateway, secsync.protocol
for info in pkgutil.iter_modules(secsync.protocol.__path__):
    __import__(f"secsync.protocol.{info.name}")
for name in GATEWAY_CORE:
    __import__(f"secsync.gateway.{name}")
from secsync.protocol import DocumentSession, SigningKeyPair, generate_key

doc = core.Document()
session = DocumentSession("doc", SigningKeyPair.generate(), generate_key(), doc)
session.load(None, now=0.0)
with doc.transaction() as tx:
    tx.put(core.ROOT, "title", core.ScalarType.Str, "hello")
sent = session.data_to_send()
heavy = ["asyncio", "concurrent.futures", "nats", "structlog", "threading._dummy"]
print(json.dumps({"sent": len(sent), "loaded": sorted(n for n in heavy if n in sys.modules)}))
"""


def test_the_core_runs_without_nats_and_loads_no_event_loop_or_pool() -> None:
    probe = f"GATEWAY_CORE = {GATEWAY_CORE!r}\n{PROBE}"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["sent"] >= 1  # a real session wrote its first snapshot
    assert result["loaded"] == []
