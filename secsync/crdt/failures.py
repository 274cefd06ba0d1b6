"""Telling a CRDT library failing on its input from the program being stopped."""

from __future__ import annotations

import sys

_CONTROL_FLOW: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, GeneratorExit)


def crdt_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a CRDT library, is that library failing on its input.

    Native bindings raise more than ``Exception``: pyo3 turns a Rust panic into a
    ``PanicException`` that derives from ``BaseException``. Everything is a failure except the
    exceptions that stop or cancel the program itself.
    """
    if isinstance(exc, _CONTROL_FLOW):
        return False
    # A CancelledError can only exist once asyncio is loaded; looking it up here keeps the
    # sans-IO core free of the import.
    asyncio = sys.modules.get("asyncio")
    return asyncio is None or not isinstance(exc, asyncio.CancelledError)
