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
import os
import sys
from collections.abc import MutableMapping
from types import FrameType
from typing import Any

# Without this, Python's last-resort handler would print secsync's warnings to stderr in an
# application that has not configured logging.
logging.getLogger("secsync").addHandler(logging.NullHandler())

_HERE = os.path.normcase(os.path.abspath(__file__))


def _value(value: object) -> str:
    text = str(value)
    return repr(text) if not text or any(c.isspace() or c in "='\"" for c in text) else text


def _caller_level(structlog_dir: str) -> int | None:
    """The ``stacklevel`` that makes a record name secsync's calling line, not structlog's."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and not (
        frame.f_code.co_name == "_proxy_to_logger" and frame.f_code.co_filename.endswith("_base.py")
    ):
        frame = frame.f_back
    if frame is None:
        return None
    level = 1
    while frame is not None:
        filename = os.path.normcase(os.path.abspath(frame.f_code.co_filename))
        if filename != _HERE and not filename.startswith(structlog_dir):
            return level
        frame = frame.f_back
        level += 1
    return None


def _render(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    exc_info = event_dict.pop("exc_info", None)
    event = str(event_dict.pop("event", ""))
    fields = " ".join(f"{key}={_value(value)}" for key, value in event_dict.items())
    rendered: dict[str, Any] = {
        "msg": f"{event} {fields}" if fields else event,
        "extra": {"secsync_event": event, "secsync_fields": dict(event_dict)},
        "exc_info": exc_info,
    }
    level = _caller_level(_structlog_dir())
    if level is not None:
        rendered["stacklevel"] = level
    return rendered


def _structlog_dir() -> str:
    import structlog

    return os.path.normcase(os.path.dirname(os.path.abspath(structlog.__file__)))


class Logger:
    """A structlog logger bound to ``logging.getLogger(name)``, created on its first record.

    structlog loads asyncio when imported; a record below the logger's level costs one check
    and imports nothing, so the sans-IO core stays free of it until something is logged.
    """

    __slots__ = ("_bound", "_context", "_name")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}
        self._bound: Any = None

    def bind(self, **fields: Any) -> Logger:
        return Logger(self._name, {**self._context, **fields})

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if not logging.getLogger(self._name).isEnabledFor(level):
            return
        if self._bound is None:
            import structlog

            self._bound = structlog.wrap_logger(
                logging.getLogger(self._name),
                processors=[_render],
                wrapper_class=structlog.stdlib.BoundLogger,
            ).bind(**self._context)
        getattr(self._bound, method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, "error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._emit(logging.ERROR, "error", event, fields)


def get_logger(name: str) -> Logger:
    """A logger (``log.info("event", key=value)``, ``log.bind(...)``) that writes to
    ``logging.getLogger(name)`` through structlog, whatever structlog's global configuration
    is."""
    return Logger(name)
