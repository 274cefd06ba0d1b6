"""The package as a user gets it: a wheel built once per run, installed into a clean virtual
environment, used from a directory that has nothing to do with the checkout."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the package build reads (the Dockerfile copies the same).
BUILD_INPUTS = ("pyproject.toml", "README.md", "secsync", "broker-config")
CREATE = ("--create", "--append", "from the wheel")


def test_every_package_under_secsync_is_listed_in_pyproject() -> None:
    """The packages are listed by hand (one of them is broker-config/): a new one must be too."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    inits = ROOT.glob("secsync/**/__init__.py")
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in inits}
    assert found <= listed
    assert listed - found == {"secsync.broker_config"}
    assert config["package-dir"] == {"secsync.broker_config": "broker-config"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps`` of a copy of the build inputs (the checkout stays untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (built,) = out.glob("secsync-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtual environment with the wheel installed (dependencies from the index);
    its ``bin`` directory."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return root / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory outside the checkout."""
    where = tmp_path / "elsewhere"
    where.mkdir()
    return where


def clean_env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_the_wheel_carries_broker_config_byte_for_byte(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        packaged = {
            Path(name).name: archive.read(name)
            for name in archive.namelist()
            if name.startswith("secsync/broker_config/")
        }
    in_repository = {path.name: path.read_bytes() for path in (ROOT / "broker-config").iterdir()}
    assert "single.conf" in in_repository
    assert packaged == in_repository


@pytest.mark.slow
def test_the_installed_package_is_not_the_checkout(venv: Path, elsewhere: Path) -> None:
    done = subprocess.run(
        [
            str(venv / "python"),
            "-c",
            "import secsync, secsync.servers.binary as b; print(secsync.__file__); "
            "print(b.default_config_path())",
        ],
        cwd=elsewhere,
        env=clean_env(venv),
        capture_output=True,
        text=True,
        check=True,
    )
    module, config = (Path(line) for line in done.stdout.splitlines())
    site = venv.parent / "lib"
    assert module.is_relative_to(site) and not module.is_relative_to(ROOT)
    assert config.is_relative_to(site) and config.name == "single.conf"
    assert config.read_bytes() == (ROOT / "broker-config" / "single.conf").read_bytes()


class Lines:
    """A process's stdout, line by line, read by a thread (so that waiting can time out)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, marker: str, timeout: float) -> list[str]:
        """Every line up to the first that contains ``marker``."""
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} within {timeout} s: {self.seen}"
            line = self._queue.get(timeout=remaining)
            assert line is not None, f"the process ended before {marker!r}: {self.seen}"
            self.seen.append(line)
        return self.seen

    def rest(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while (line := self._queue.get(timeout=max(0.01, deadline - time.monotonic()))) is not None:
            self.seen.append(line)
        return self.seen


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; stopped if the test leaves one running (SIGINT first: a killed
    ``secsync broker`` would leave its servers behind)."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def healthy(monitor_url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{monitor_url}/healthz", timeout=5) as response:
        return bool(response.status == 200)


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["single", "cluster", "supercluster", "leaf"])
def test_secsync_broker_runs_from_anywhere(
    venv: Path,
    elsewhere: Path,
    topology: str,
    started: list[subprocess.Popen[str]],
) -> None:
    command = [str(venv / "secsync"), "broker", "--topology", topology, "--data-dir", "data"]
    if topology == "single":
        command += ["--port", "0", "--http-port", "0"]
    env = clean_env(venv)
    proc = subprocess.Popen(
        command,
        cwd=elsewhere,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started.append(proc)
    lines = Lines(proc)
    text = "\n".join(lines.until("ready in", timeout=60))
    monitors = re.findall(r"monitoring:? +(http://[\d.:]+)", text)
    assert monitors and all(healthy(url) for url in monitors)
    assert (elsewhere / "data").is_dir()

    if topology in ("single", "cluster"):
        # The URLs as printed (a comma-separated list for a cluster) are what --url takes.
        printed = re.search(r"(?:listening on|cluster \w+:) (nats://\S+)", text)
        assert printed is not None, text
        urls = printed[1].rstrip(",")
        share = subprocess.run(
            [str(venv / "secsync"), "share", "installed-doc"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        join = subprocess.run(
            [str(venv / "secsync"), "join", "--link-file=-", f"--url={urls}", *CREATE],
            input=share.stdout,
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert join.returncode == 0, join.stderr
        assert join.stdout.strip() == "from the wheel"

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert any(line.startswith("stopped") for line in lines.rest(timeout=10))


@pytest.mark.slow
def test_secsync_demo_runs_from_anywhere(venv: Path, elsewhere: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [str(venv / "secsync"), "demo"],
        cwd=elsewhere,
        env=clean_env(venv),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "converged: yes" in done.stdout
    assert "none found, only ciphertext" in done.stdout
    assert time.monotonic() - started < 30
    assert list(elsewhere.iterdir()) == []  # the broker's data went to a temporary directory
