"""The stream sequence of a delivered message: nats-py's metadata, checks and errors included."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg

from secsync.transport.reads import stream_sequence


def _nats(reply: str) -> tuple[str, object]:
    try:
        return "ok", Msg(_client=None, reply=reply).metadata.sequence.stream  # type: ignore[arg-type]
    except Exception as exc:
        return type(exc).__name__, str(exc)


def _ours(reply: str) -> tuple[str, object]:
    try:
        return "ok", stream_sequence(reply)
    except Exception as exc:
        return type(exc).__name__, str(exc)


REPLIES = [
    "$JS.ACK.S.C.1.42.7.1700000000000000000.3",
    "$JS.ACK.dom.hash.S.C.1.42.7.1700000000000000000.3.rand",
    "$JS.ACK._.hash.S.C.1.42.7.1700000000000000000.3",
    "$JS.ACK.S.C.1.x.7.1700000000000000000.3",
    "$JS.ACK.S.C.1.42.y.1700000000000000000.3",
    "$JS.ACK.S.C.z.42.7.1700000000000000000.3",
    "$JS.ACK.S.C.1.42.7.1700000000000000000.w",
    "$JS.ACK.S.C.1.42.7.t.3",
    "$JS.ACK.S.C.1.42.7.99999999999999999999999999999.3",
    "$JS.ACK.S.C.1.42.7",
    "$JS.NAK.S.C.1.42.7.1700000000000000000.3",
    "inbox.reply",
    "",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_replies(reply: str) -> None:
    assert _ours(reply) == _nats(reply)


token = st.one_of(
    st.integers(min_value=-5, max_value=2**70).map(str),
    st.sampled_from(["", "_", "x", " 1", "1_0", "S"]),
)


@settings(max_examples=400)
@given(st.lists(token, min_size=0, max_size=13), st.sampled_from(["$JS", "$js", "X"]))
def test_any_reply(tokens: list[str], prefix: str) -> None:
    reply = ".".join([prefix, "ACK", *tokens])
    assert _ours(reply) == _nats(reply)
