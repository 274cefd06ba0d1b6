"""The header-line parser gives exactly nats-py's result, on every input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from secsync.transport import headers

nats_parse = Client._parse_header_lines

FORMS = [
    b"",
    b"\r\n",
    b"Nats-Msg-Id: u.abc.1\r\n\r\n",
    b"Nats-Msg-Id: u.abc.1\r\nNats-Expected-Last-Subject-Sequence: 12\r\n"
    b"Nats-Expected-Last-Subject-Sequence-Subject: secsync.d.x.s\r\n\r\n",
    b"a:b",
    b"a:\tb\r\n",
    b"a :b\r\n",
    b" a: b \r\n",
    b"a b: c\r\n",
    b"\x1ca: b\r\n",  # str.isspace, not bytes.strip
    b"a\x1c: b\r\n",
    b"\xffname: v\r\n",
    b"name: \xff\xfe\r\n",
    b"name: caf\xc3\xa9\r\n",
    b"noseparator\r\n",
    b": empty name\r\n",
    b"dup: 1\r\ndup: 2\r\n",  # a repeated name: the last value wins, as in nats-py
    b"x: a: b\r\n",
    b"Nats-Pending-Messages: 3\r\nNats-Last-Sequence: 7\r\n\r\n",
]


@pytest.mark.parametrize("raw", FORMS)
def test_forms(raw: bytes) -> None:
    assert headers.parse_header_lines(raw) == nats_parse(raw)


line = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda n, s, v: n + s + v,
        st.sampled_from([b"Nats-Msg-Id", b" k ", b"a b", b"\x1ck", b"\xffk", b"", b"K\t"]),
        st.sampled_from([b":", b": ", b"", b":\t"]),
        st.binary(max_size=20),
    ),
)


@settings(max_examples=500)
@given(st.lists(line, max_size=6), st.booleans())
def test_any_input(lines: list[bytes], crlf_end: bool) -> None:
    raw = b"\r\n".join(lines) + (b"\r\n\r\n" if crlf_end else b"")
    assert headers.parse_header_lines(raw) == nats_parse(raw)
    # and again, now that the names are cached
    assert headers.parse_header_lines(raw) == nats_parse(raw)


BLOCKS = [
    b"",
    b"NATS/1.0\r\nNats-Msg-Id: u.1\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: u.1\r\nNats-Msg-Id: u.2\r\n\r\n",
    b"NATS/1.0 404\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
    b"NATS/1.0 404 No Messages\r\n\r\n",
    b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\nNats-Pending-Bytes: 0\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1016\r\nNats-Last-Stream: 1024\r\n\r\n",
    b"NATS/1.0 100 FlowControl Request\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Consumer-Stalled: $JS.FC.x\r\n\r\n",
    b"NATS/1.0\r\nNats-Stream: S\r\nNats-Subject: a.b\r\nNats-Sequence: 9\r\n"
    b"Nats-Time-Stamp: 2026-01-01T00:00:00Z\r\nNats-Msg-Id: s.x\r\n\r\n",
]


@pytest.mark.parametrize("block", BLOCKS)
def test_whole_header_blocks_as_the_server_sends_them(block: bytes) -> None:
    """Through nats-py's own ``_process_headers`` (status lines, descriptions, no headers)."""
    plain, patched = Client(), Client()
    assert headers.install(patched)
    assert patched._parse_header_lines is headers.parse_header_lines
    assert plain._parse_header_lines is not headers.parse_header_lines

    async def both() -> tuple[Any, Any]:
        return await plain._process_headers(block), await patched._process_headers(block)

    expected, got = asyncio.run(both())
    assert got == expected
    assert [type(k) for k in got or {}] == [type(k) for k in expected or {}]


def test_install_leaves_a_client_without_the_function_alone() -> None:
    class Other:
        pass

    other = Other()
    assert not headers.install(other)
    assert not hasattr(other, "_parse_header_lines")
