"""A library does not print: secsync's log records go to the standard logging module only."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from secsync.servers.broker import Broker

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, sys
    import pycrdt
    import secsync

    if sys.argv[2] == "configured":
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")

    async def main():
        key, me = secsync.generate_key(), secsync.SigningKeyPair.generate()
        ydoc = pycrdt.Doc()
        text = ydoc.get("text", type=pycrdt.Text)
        async with secsync.connect(sys.argv[1]) as client:
            doc = await client.open(sys.argv[2], key=key, signing_key=me, crdt=ydoc)
            text.insert(0, "hello")
            await doc.flush(5)
        try:
            async with secsync.connect(sys.argv[1]) as client:  # a wrong key: warnings
                await client.open(
                    sys.argv[2], key=secsync.generate_key(), signing_key=me, crdt=pycrdt.Doc()
                )
        except secsync.SecsyncError:
            pass

    asyncio.run(main())
    """
)


def _run(url: str, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, url, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_nothing_is_printed_unless_the_application_asks(broker: Broker) -> None:
    quiet = _run(broker.url, "unconfigured")
    assert quiet.stdout == ""
    assert quiet.stderr == ""  # not even warnings through logging's last resort
    loud = _run(broker.url, "configured")
    assert loud.stdout == ""
    lines = loud.stderr.splitlines()
    assert any(line.startswith("secsync.client connected servers=") for line in lines)
    assert any(line.startswith("secsync.session snapshot_created doc=") for line in lines), lines
    assert any("message_rejected" in line and "code=101" in line for line in lines), lines


def test_a_record_names_the_line_that_logged_it(caplog: pytest.LogCaptureFixture) -> None:
    from secsync.logs import get_logger

    log = get_logger("secsync.test").bind(doc="abc")
    with caplog.at_level(logging.DEBUG, logger="secsync.test"):
        log.info("something_happened", count=2, name="a b")
        line = sys._getframe().f_lineno - 1
    (record,) = caplog.records
    assert (record.filename, record.lineno, record.funcName) == (
        "test_logs.py",
        line,
        "test_a_record_names_the_line_that_logged_it",
    )
    assert record.getMessage() == "something_happened doc=abc count=2 name='a b'"
    assert record.secsync_fields == {"doc": "abc", "count": 2, "name": "a b"}  # type: ignore[attr-defined]


def test_a_record_below_the_level_loads_nothing() -> None:
    code = (
        "import sys\n"
        "from secsync.logs import get_logger\n"
        "get_logger('secsync.quiet').info('ignored', a=1)\n"
        "print('structlog' in sys.modules, 'asyncio' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
