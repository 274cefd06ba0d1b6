"""Logging: structlog bound to the standard :mod:`logging` module.

secsync never configures logging and never prints: every logger writes to the standard
library logger of its name (``secsync.session``, ``secsync.document``...), so the application
decides where records go and how many (``logging.getLogger("secsync").setLevel(...)``). A
record's message is the event name followed by its fields as ``key=value``; the fields are
also on the record as ``record.secsync_fields`` for structured handlers. Fields never hold
keys or plaintext: ids and public keys are shortened base64url.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

# Without this, Python's last-resort handler would print secsync's warnings to stderr in an
# application that has not configured logging.
logging.getLogger("secsync").addHandler(logging.NullHandler())


def _value(value: object) -> str:
    text = str(value)
    return repr(text) if not text or any(c.isspace() or c in "='\"" for c in text) else text


def _render(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    exc_info = event_dict.pop("exc_info", None)
    event = str(event_dict.pop("event", ""))
    fields = " ".join(f"{key}={_value(value)}" for key, value in event_dict.items())
    return {
        "msg": f"{event} {fields}" if fields else event,
        "extra": {"secsync_event": event, "secsync_fields": dict(event_dict)},
        "exc_info": exc_info,
    }


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # below the level, a call costs one check
    _render,
]


def get_logger(name: str) -> Any:
    """A structlog logger (``log.info("event", key=value)``, ``log.bind(...)``) that writes to
    ``logging.getLogger(name)``, whatever structlog's global configuration is."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
    )
