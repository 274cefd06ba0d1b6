"""Unmodified secsync JS clients in Node, driven from a test: tests/js/client/driver.mjs.

``NodeDriver`` starts one Node process that runs any number of ``createSyncMachine`` clients
(named by the test) and keeps every event they report (``loaded``, ``changed``, ``acked``,
``ephemeral``, ``state``, ``error``, ``document-updated``), each with the Node wall clock in ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).parents[1] / "js" / "client"
Event = dict[str, Any]


def unavailable(reason: str) -> None:
    """Skip, except in CI, which installs Node.js to run these (a skip there would hide them)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs the end-to-end tests against the real JS client)")
    pytest.skip(reason)


def node_executable() -> str:
    """``node``, with tests/js/client's packages installed (``npm ci`` when missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("Node.js and npm are not installed: no JS client to run")
    assert node is not None and npm is not None
    if not (JS_DIR / "node_modules" / "secsync").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode:
            unavailable(f"npm ci failed in tests/js/client: {done.stderr.strip()[-500:]}")
    return node


class DriverError(AssertionError):
    """The driver refused a command, or an awaited event did not come."""


class NodeDriver:
    """One Node process running named JS clients."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[Event] = []
        self._replies: dict[int, asyncio.Future[Event]] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> NodeDriver:
        node = node_executable()
        process = await asyncio.create_subprocess_exec(
            node,
            "driver.mjs",
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        driver = cls(process)
        await driver.wait_for(lambda e: e["type"] == "ready", timeout=60)
        return driver

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            event: Event = json.loads(line)
            if event["type"] in ("ok", "failed") and event.get("id") in self._replies:
                future = self._replies.pop(event["id"])
                if not future.done():
                    future.set_result(event)
                continue
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"type": "exited"})
            self._changed.notify_all()

    async def command(self, cmd: str, **fields: Any) -> Event:
        """Send a command; its reply (raises :class:`DriverError` if refused)."""
        assert self.process.stdin is not None
        if self.process.returncode is not None:
            code = self.process.returncode
            raise DriverError(f"the driver exited ({code}): {await self.stderr()}")
        ident = next(self._ids)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._replies[ident] = future
        self.process.stdin.write((json.dumps({"cmd": cmd, "id": ident, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        reply = await asyncio.wait_for(future, 30)
        if reply["type"] == "failed":
            raise DriverError(f"{cmd}: {reply['message']}")
        return reply

    async def open(
        self,
        client: str,
        url: str,
        doc_id: str,
        key: bytes,
        seed: bytes,
        *,
        session_key: str = "session",
        mode: str | None = None,
        known_snapshot_info: dict[str, Any] | None = None,
        content_format: str = "v1",
        snapshot_every: int = 0,
    ) -> None:
        fields: dict[str, Any] = {
            "client": client,
            "url": url,
            "docId": doc_id,
            "keyHex": key.hex(),
            "seedHex": seed.hex(),
            "sessionKey": session_key,
            "format": content_format,
            "snapshotEvery": snapshot_every,
        }
        if mode is not None:
            fields["mode"] = mode
        if known_snapshot_info is not None:
            fields["knownSnapshotInfo"] = known_snapshot_info
        await self.command("open", **fields)

    async def insert(self, client: str, text: str, index: int | None = None) -> None:
        fields: dict[str, Any] = {"client": client, "text": text}
        if index is not None:
            fields["index"] = index
        await self.command("insert", **fields)

    async def text(self, client: str) -> str:
        return str((await self.command("text", client=client))["text"])

    async def snapshot(self, client: str, text: str = "") -> None:
        await self.command("snapshot", client=client, text=text)

    async def ephemeral(self, client: str, data: str) -> None:
        await self.command("ephemeral", client=client, data=data)

    async def state(self, client: str) -> Event:
        return await self.command("state", client=client)

    async def close(self, client: str) -> None:
        await self.command("close", client=client)

    def seen(self, predicate: Callable[[Event], bool]) -> list[Event]:
        return [e for e in self.events if predicate(e)]

    async def wait_for(
        self, predicate: Callable[[Event], bool], *, timeout: float = 30.0, after: int = 0
    ) -> Event:
        """The first event (from index ``after`` on) for which ``predicate`` holds."""
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        for event in self.events[after:]:
                            if predicate(event):
                                return event
                        if self.events and self.events[-1]["type"] == "exited":
                            raise DriverError(f"the driver exited: {await self.stderr()}")
                        await self._changed.wait()
            except TimeoutError:
                raise DriverError(
                    f"no such event within {timeout}s; last events: {self.events[-8:]}"
                ) from None

    async def wait_loaded(self, client: str, timeout: float = 30.0) -> Event:
        return await self.wait_for(
            lambda e: e.get("client") == client and e["type"] in ("loaded", "error"),
            timeout=timeout,
        )

    async def wait_text(self, client: str, expected: str, timeout: float = 30.0) -> None:
        """Until ``client``'s text is ``expected`` (checked after each of its events)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    mark = len(self.events)
                    if await self.text(client) == expected:
                        return
                    await self.wait_for(
                        lambda e: e.get("client") == client, timeout=timeout, after=mark
                    )
        except (TimeoutError, DriverError):
            pass
        actual = await self.text(client)
        if actual != expected:
            raise DriverError(f"{client} has {actual!r}, not {expected!r}")

    async def wait_settled(self, client: str, timeout: float = 30.0) -> Event:
        """Until ``client`` is connected with no change unconfirmed; its state then."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    mark = len(self.events)
                    state = await self.state(client)
                    if state["state"] == "connected" and state["pending"] == 0:
                        return state
                    await self.wait_for(
                        lambda e: e.get("client") == client, timeout=timeout, after=mark
                    )
        except (TimeoutError, DriverError):
            pass
        raise DriverError(f"{client} did not settle: {await self.state(client)}")

    def errors(self, client: str | None = None) -> list[Event]:
        return self.seen(
            lambda e: e["type"] == "error" and (client is None or e.get("client") == client)
        )

    async def stderr(self) -> str:
        if self.process.stderr is None:
            return ""
        with contextlib.suppress(TimeoutError):
            data = await asyncio.wait_for(self.process.stderr.read(65536), 1)
            return data.decode(errors="replace")[-4000:]
        return ""

    async def aclose(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.command("quit"), 5)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()


@contextlib.asynccontextmanager
async def node_driver() -> AsyncIterator[NodeDriver]:
    driver = await NodeDriver.start()
    try:
        yield driver
    finally:
        await driver.aclose()
