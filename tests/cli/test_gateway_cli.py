"""``secsync gateway``: the command serves JS clients until it is told to stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

from secsync.cli.main import main
from secsync.servers.broker import Broker

ACCESS = """
def has_access(action, document_id, session_key, public_key):
    return session_key == "letmein"
"""


async def start(broker: Broker, cwd: Path, *options: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "secsync.cli.main",
        "gateway",
        "--url",
        broker.url,
        "--port",
        "0",
        *options,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    found = re.search(r"(ws://\S+)/\{docId\}", line)
    if found is None:
        process.kill()
        _, err = await process.communicate()
        pytest.fail(f"no URL printed: {line!r} {err.decode()[-2000:]}")
    return process, found.group(1)


async def first_frame(url: str) -> dict[str, object]:
    async with ws_connect(url) as ws:
        frame: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 15))
        return frame


async def test_the_command_serves_with_the_access_check_and_stops_on_sigterm(
    broker: Broker, tmp_path: Path
) -> None:
    (tmp_path / "myaccess.py").write_text(ACCESS)
    process, url = await start(broker, tmp_path, "--access", "myaccess:has_access")
    try:
        assert (await first_frame(f"{url}/doc-1?sessionKey=letmein"))["type"] == "document"
        assert (await first_frame(f"{url}/doc-1?sessionKey=nope"))["type"] == "unauthorized"
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0


def test_an_access_check_is_required_and_must_exist(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit):
        main(["gateway"])
    assert "--access" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["gateway", "--access", "no_such_module:check"]) == 2
    assert "cannot import" in capsys.readouterr().err
    (tmp_path / "notcallable.py").write_text("check = 3\n")
    assert main(["gateway", "--access", "notcallable:check"]) == 2
    assert "not a function" in capsys.readouterr().err
