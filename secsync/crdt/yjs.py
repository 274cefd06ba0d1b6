"""Yjs documents through pycrdt: updates are Yjs v1 updates, a snapshot is the full state.

Remote content is checked by :mod:`secsync.crdt.yjs_format` before pycrdt sees it (yrs decodes
recursively and trusts declared lengths), and any failure of pycrdt, a Rust panic included, is
the typed rejection of that one message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pycrdt

from secsync.crdt import crdt_failure
from secsync.crdt.yjs_format import YjsFormatError, check_updates
from secsync.errors import SecsyncError, SnapshotApplyError, UpdateApplyError

_EMPTY_UPDATE = b"\x00\x00"


def _checked(changes: Sequence[bytes], error: type[SecsyncError]) -> None:
    try:
        check_updates(changes)
    except YjsFormatError as exc:
        raise error(f"not a valid Yjs update: {exc}") from None


class YjsAdapter:
    """Observes a ``pycrdt.Doc``; each local transaction becomes one change."""

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.doc = doc
        self._local: list[bytes] = []
        self._applying = False
        self._listener: Callable[[], None] | None = None
        existing = doc.get_update()
        if existing != _EMPTY_UPDATE:
            # Content the application put in before opening is a local change like any other.
            self._local.append(existing)
        self._subscription = doc.observe(self._on_transaction)

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if self._applying:
            return
        update = event.update
        if update != _EMPTY_UPDATE:
            self._local.append(update)
            if self._listener is not None:
                self._listener()

    def set_change_listener(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener`` after every local transaction (to wake a sender)."""
        self._listener = listener

    def take_local_changes(self) -> list[bytes]:
        changes, self._local = self._local, []
        return changes

    def untaken_changes(self) -> int:
        """Local transactions not taken yet (nothing is taken by asking)."""
        return len(self._local)

    def apply_changes(self, changes: Sequence[bytes]) -> None:
        self._apply(changes, UpdateApplyError)

    def apply_snapshot(self, state: bytes) -> None:
        self._apply([state], SnapshotApplyError)

    def _apply(self, changes: Sequence[bytes], error: type[SecsyncError]) -> None:
        if not changes:
            return
        _checked(changes, error)
        self._applying = True
        try:
            # One by one: yrs merges adjacent items at the end of each transaction, at a cost
            # growing with the square of what one transaction brings (20,000 keystrokes merged
            # into one update took 3.9 s and 256 MB, applied one by one 0.25 s).
            for change in changes:
                self.doc.apply_update(change)
        except BaseException as exc:
            if not crdt_failure(exc):
                raise
            raise error(f"pycrdt refused the content: {type(exc).__name__}") from None
        finally:
            self._applying = False

    def encode_state(self) -> bytes:
        return self.doc.get_update()

    def missing_from(self, state: bytes) -> list[bytes]:
        _checked([state], SnapshotApplyError)
        try:
            other: pycrdt.Doc[Any] = pycrdt.Doc()
            other.apply_update(state)
            missing = self.doc.get_update(other.get_state())
        except BaseException as exc:
            if not crdt_failure(exc):
                raise
            raise SnapshotApplyError(f"pycrdt refused the state: {type(exc).__name__}") from None
        return [] if missing == _EMPTY_UPDATE else [missing]

    def close(self) -> None:
        self.doc.unobserve(self._subscription)
