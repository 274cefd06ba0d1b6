"""Local persistence for offline work: one SQLite file, document content encrypted at rest.

Per document (keyed by its opaque token, never its id) the file holds:

* a **checkpoint**: the CRDT state, the session state (active snapshot facts, clocks, the
  outbox of unsent and unacknowledged messages) and the last applied stream sequence, sealed
  with XChaCha20-Poly1305 under the storage key;
* a **change log**: local changes made since the checkpoint, each sealed the same way, written
  as soon as the change is seen, so a process killed before the next checkpoint loses nothing.

A checkpoint replaces the log in one transaction. No plaintext, no key and no document id is
written to the file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import nacl.bindings

from secsync.errors import LocalStoreError
from secsync.protocol import crypto

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoint (
    token TEXT PRIMARY KEY,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS change_log (
    token TEXT NOT NULL,
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS change_log_token ON change_log (token, id);
"""


@dataclass(slots=True)
class LocalState:
    """What a document needs to resume without the broker."""

    crdt_state: bytes
    session: dict[str, Any]
    last_sequence: int
    snapshot_sequences: dict[bytes, int] = field(default_factory=dict)
    changes: list[bytes] = field(default_factory=list)
    """Local changes logged after the checkpoint (already part of no saved state)."""


class LocalStore:
    """An SQLite file holding the encrypted local state of any number of documents."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()  # "~/..." is the home directory, not a folder "~"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed write survives a killed process (not power loss)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise LocalStoreError(f"cannot open the local store {self.path}: {exc}") from None

    @staticmethod
    def _aad(token: str, table: str) -> bytes:
        return f"secsync-local-v1:{table}:{token}".encode()

    @staticmethod
    def _seal(key: bytes, aad: bytes, data: bytes) -> tuple[bytes, bytes]:
        nonce = crypto.random_nonce()
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(data, aad, nonce, key)
        return nonce, sealed

    @staticmethod
    def _open(key: bytes, aad: bytes, nonce: bytes, sealed: bytes) -> bytes:
        try:
            data: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed, aad, nonce, key
            )
        except Exception:
            raise LocalStoreError("local state does not decrypt (wrong key or damaged)") from None
        return data

    def save(self, token: str, key: bytes, state: LocalState) -> None:
        """Write a checkpoint and drop the change log it covers, atomically."""
        payload = msgpack.packb(
            {
                "crdt": state.crdt_state,
                "session": state.session,
                "seq": state.last_sequence,
                "snapshot_seqs": state.snapshot_sequences,
            },
            use_bin_type=True,
        )
        nonce, sealed = self._seal(key, self._aad(token, "checkpoint"), payload)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT OR REPLACE INTO checkpoint (token, nonce, sealed) VALUES (?, ?, ?)",
                    (token, nonce, sealed),
                )
                self._db.execute("DELETE FROM change_log WHERE token = ?", (token,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise LocalStoreError(f"cannot write the local store: {exc}") from None

    def append_changes(self, token: str, key: bytes, changes: list[bytes]) -> None:
        """Log local changes made since the last checkpoint (one row each, one transaction)."""
        if not changes:
            return
        rows = []
        aad = self._aad(token, "change")
        for change in changes:
            nonce, sealed = self._seal(key, aad, change)
            rows.append((token, nonce, sealed))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO change_log (token, nonce, sealed) VALUES (?, ?, ?)", rows
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise LocalStoreError(f"cannot write the local store: {exc}") from None

    def load(self, token: str, key: bytes) -> LocalState | None:
        """The saved state of a document, or ``None`` when there is none."""
        with self._lock:
            row = self._db.execute(
                "SELECT nonce, sealed FROM checkpoint WHERE token = ?", (token,)
            ).fetchone()
            log = self._db.execute(
                "SELECT nonce, sealed FROM change_log WHERE token = ? ORDER BY id", (token,)
            ).fetchall()
        changes = [self._open(key, self._aad(token, "change"), n, s) for n, s in log]
        if row is None:
            if not changes:
                return None
            return LocalState(b"", {}, 0, {}, changes)
        data = self._open(key, self._aad(token, "checkpoint"), row[0], row[1])
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
            return LocalState(
                obj["crdt"], obj["session"], obj["seq"], dict(obj["snapshot_seqs"]), changes
            )
        except Exception as exc:
            raise LocalStoreError(f"local state is damaged: {exc}") from None

    def forget(self, token: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM checkpoint WHERE token = ?", (token,))
            self._db.execute("DELETE FROM change_log WHERE token = ?", (token,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
