"""The browser demo in a real browser: headless Chromium (the system's, driven by Playwright)
opens the page of ``secsync demo --web``, an unmodified ``secsync-react-yjs`` app, and edits one
document with the Python participant through the gateway.

Without Chromium or Playwright these tests skip, except in CI, which installs both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import secsync
from secsync.apps.webdemo import CONFIG, FIRST_LINE, WebDemo
from secsync.servers.broker import Broker
from secsync.transport.subjects import DocumentSubjects
from tests.gateway.node_client import unavailable

WAIT_MS = 30_000


def chromium_executable() -> str:
    """The system's Chromium: ``SECSYNC_CHROMIUM``, Debian's binary, or one on the PATH."""
    candidates = [os.environ.get("SECSYNC_CHROMIUM", ""), "/usr/lib/chromium/chromium"]
    candidates += [shutil.which(name) or "" for name in ("chromium", "chromium-browser")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    unavailable("no Chromium installed (apt install chromium): no browser to run the page in")
    raise AssertionError("unreachable")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install playwright)")
    executable = chromium_executable()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def demo(broker: Broker) -> AsyncIterator[WebDemo]:
    started = await WebDemo(broker).start()
    try:
        yield started
    finally:
        await started.stop()


async def open_page(browser: Any, demo: WebDemo, name: str) -> tuple[Any, list[str]]:
    """A new page on the demo's link as ``name``, and the list its page errors go to."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    await page.goto(f"{demo.url}&name={name}")
    return page, errors


async def editor_contains(page: Any, text: str) -> None:
    await page.wait_for_function(
        "text => (document.querySelector('#editor')?.value ?? '').includes(text)",
        arg=text,
        timeout=WAIT_MS,
    )


async def python_sees(demo: WebDemo, condition: Callable[[str], bool]) -> None:
    """Until the Python participant's text satisfies ``condition`` (woken by its changes)."""
    changed = asyncio.Event()
    subscription = demo.text.observe(lambda _event: changed.set())
    try:
        async with asyncio.timeout(WAIT_MS / 1000):
            while not condition(str(demo.text)):
                await changed.wait()
                changed.clear()
    finally:
        demo.text.unobserve(subscription)


async def test_a_browser_and_the_python_backend_edit_one_document(
    browser: Any, demo: WebDemo
) -> None:
    page, errors = await open_page(browser, demo, "Chromium")
    await editor_contains(page, FIRST_LINE.strip())  # the Python participant's first snapshot

    # the browser types: each keystroke a Yjs v2 update, encrypted in the page
    await page.click("#editor")
    await page.keyboard.press("Control+End")
    await page.keyboard.type("Browser: typed in Chromium.")
    await python_sees(demo, lambda text: "Browser: typed in Chromium." in text)

    # remote typing before the caret moves it along: what the browser types next lands where
    # its user left the caret (at the end), not where the remote characters pushed it
    for i, character in enumerate("Top line from Python.\n"):
        demo.text.insert(i, character)
        await asyncio.sleep(0)
    await editor_contains(page, "Top line from Python.\n")
    await page.keyboard.type(" More.")
    await python_sees(demo, lambda text: "Browser: typed in Chromium. More." in text)

    # the Python participant types: the page shows it
    await demo.type_line("\nPython: answered from the backend.", delay=0)
    await editor_contains(page, "Python: answered from the backend.")
    assert await page.input_value("#editor") == str(demo.text)

    # presence: the page lists the Python participant, named by its signing key
    await page.wait_for_selector('#people li[data-name="Python"]', timeout=WAIT_MS)
    await page.wait_for_selector('#people li[data-name="Chromium"]', timeout=WAIT_MS)

    # the page reports what the broker holds: ciphertext only
    await page.wait_for_function(
        "() => Number(document.querySelector('#stored-count')?.textContent) >= 3",
        timeout=WAIT_MS,
    )
    assert await page.inner_text("#plaintext-found") == "none"
    stored = await demo.stored()
    assert stored["plaintextFound"] is False and stored["checkedWords"] >= 8
    assert {m["kind"] for m in stored["messages"]} <= {"snapshot", "update"}

    # a second tab opening later loads everything from the broker (snapshot + updates)
    late, late_errors = await open_page(browser, demo, "Latecomer")
    await editor_contains(late, "Python: answered from the backend.")
    assert await late.input_value("#editor") == str(demo.text)
    await late.click("#editor")
    await late.keyboard.press("Control+End")
    await late.keyboard.type(" Latecomer was here.")
    await python_sees(demo, lambda text: "Latecomer was here." in text)
    await editor_contains(page, "Latecomer was here.")
    assert await page.input_value("#editor") == await late.input_value("#editor")

    assert errors == [] and late_errors == []


async def test_the_stored_panel_would_show_plaintext_if_the_broker_held_any(
    broker: Broker, demo: WebDemo
) -> None:
    """The panel's "none" means something: a message carrying a word of the text in clear is
    found (and shown as unreadable), as it would be if a client leaked plaintext."""
    before = await demo.stored()
    assert before["plaintextFound"] is False
    word = next(w for w in FIRST_LINE.split() if len(w) > 3)
    subjects = DocumentSubjects.of(demo.doc_id)
    async with secsync.connect(broker.url, config=CONFIG) as client:
        await client.js.publish(subjects.update, f"leaked: {word}".encode())
    after = await demo.stored()
    assert after["plaintextFound"] is True
    assert after["total"] == before["total"] + 1
    assert after["messages"][-1]["kind"] == "unreadable"
    # what is stored honestly decodes: the first message is the Python participant's snapshot
    assert before["messages"][0]["kind"] == "snapshot"
    assert before["messages"][0]["author"]


def test_the_committed_bundle_is_what_web_builds(tmp_path: Path) -> None:
    """secsync/apps/web/app.js is the build of web/src with the locked packages (``make
    web-bundle``): a page edited without rebuilding, or a hand-edited bundle, fails here."""
    web = Path(__file__).parents[2] / "web"
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        unavailable("Node.js and npm are not installed: the bundle cannot be rebuilt")
    assert npm is not None
    if not (web / "node_modules" / "esbuild").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=web, check=True, capture_output=True
        )
    script = json.loads((web / "package.json").read_text())["scripts"]["build"]
    arguments = [
        f"--outfile={tmp_path / 'app.js'}" if a.startswith("--outfile=") else a
        for a in shlex.split(script)
    ]
    assert arguments[0] == "esbuild"
    subprocess.run(
        [str(web / "node_modules" / ".bin" / "esbuild"), *arguments[1:]],
        cwd=web,
        check=True,
        capture_output=True,
    )
    committed = Path(__file__).parents[2] / "secsync" / "apps" / "web" / "app.js"
    assert (tmp_path / "app.js").read_bytes() == committed.read_bytes()
