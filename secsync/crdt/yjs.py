"""Yjs documents through pycrdt: updates are Yjs v1 updates, a snapshot is the full state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pycrdt

_EMPTY_UPDATE = b"\x00\x00"


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
        self._applying = True
        try:
            if len(changes) == 1:
                self.doc.apply_update(changes[0])
            elif changes:
                self.doc.apply_update(pycrdt.merge_updates(*changes))
        finally:
            self._applying = False

    def apply_snapshot(self, state: bytes) -> None:
        self.apply_changes([state])

    def encode_state(self) -> bytes:
        return self.doc.get_update()

    def missing_from(self, state: bytes) -> list[bytes]:
        other: pycrdt.Doc[Any] = pycrdt.Doc()
        other.apply_update(state)
        missing = self.doc.get_update(other.get_state())
        return [] if missing == _EMPTY_UPDATE else [missing]

    def close(self) -> None:
        self.doc.unobserve(self._subscription)
