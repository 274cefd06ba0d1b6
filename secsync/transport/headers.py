"""A faster drop-in for nats-py's header-line parser (``Client._parse_header_lines``).

nats-py checks every character of every header name for whitespace on every message, which is
most of what a stored message costs to receive. Header names repeat (a document's messages
carry the same few), so the verdict on each raw name is computed once and looked up after
that; values are decoded exactly as nats-py decodes them. The result is the same dict for
every input (``tests/transport/test_headers.py`` compares the two, input by input).
"""

from __future__ import annotations

from typing import Any

from secsync.logs import get_logger

log = get_logger("secsync.transport")

_CRLF = b"\r\n"
# Raw name bytes -> the key nats-py would use, or None where it skips the line. Bounded: a
# server sending ever new names only stops being cached, it is parsed the same.
_NAMES: dict[bytes, str | None] = {}
_MAX_NAMES = 1024


def _key(name: bytes) -> str | None:
    """What nats-py does with a header name: strip, ASCII or skipped, no whitespace inside."""
    try:
        key = name.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    if any(c.isspace() for c in key):
        return None
    return key


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """``Name: Value`` lines (CRLF-separated) as nats-py's ``_parse_header_lines`` reads them."""
    out: dict[str, str] = {}
    names = _NAMES
    for line in raw.split(_CRLF):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = names[name]
        except KeyError:
            key = _key(name)
            if len(names) < _MAX_NAMES:
                names[name] = key
        if key is None:
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


def install(nc: Any) -> bool:
    """Make the nats-py client ``nc`` parse header lines with :func:`parse_header_lines`.

    Only this connection changes (an instance attribute shadows the static method). Returns
    False, changing nothing, when this nats-py has no such function to stand in for.
    """
    if not callable(getattr(type(nc), "_parse_header_lines", None)):
        log.info("header_parser_not_installed")
        return False
    setattr(nc, "_parse_header_lines", parse_header_lines)  # noqa: B010 (mypy: a method)
    return True
