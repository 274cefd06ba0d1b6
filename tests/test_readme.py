"""The README's quick start runs as printed, twice in a row, against a real broker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from secsync.servers.broker import Broker

README = Path(__file__).resolve().parents[1] / "README.md"


def _quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_quick_start_works_when_run_twice(broker: Broker, tmp_path: Path) -> None:
    code = _quick_start()
    assert "nats://127.0.0.1:4222" in code
    script = tmp_path / "quick_start.py"
    script.write_text(code.replace("nats://127.0.0.1:4222", broker.url))
    outputs = []
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        outputs.append(run.stdout.splitlines())
    assert outputs[0] == ["loaded: ''", "stored: 'hello '"]
    assert outputs[1] == ["loaded: 'hello '", "stored: 'hello hello '"]
    for secret in ("my-document.key", "me.identity"):
        assert (tmp_path / secret).stat().st_mode & 0o077 == 0  # readable by the owner only
