"""Local persistence for offline work: one SQLite file, document content encrypted at rest.

Per document (keyed by its opaque token, never its id) the file holds:

* a **checkpoint**: the CRDT state, the session state (active snapshot facts, clocks, the
  outbox of unsent and unacknowledged messages) and the last applied stream sequence;
* a **change log**: local changes made since the checkpoint, one row each, written as soon as
  the change is seen, so a process killed before the next checkpoint loses nothing.

A checkpoint replaces the log in one transaction. Every row is sealed with
XChaCha20-Poly1305 under a subkey of the storage key (``BLAKE2b-256(key=storage key,
person="secsync-store")``, never the key itself), and its associated data binds where the row
belongs: the document token, the table, the checkpoint's generation (a counter raised by
every checkpoint) and, for a change, its position in the log of that generation. So a row
moved to another document or table, two changes swapped, a change deleted from the middle of
the log or a checkpoint older than the log after it fails :meth:`LocalStore.load` with
:class:`LocalStoreError`. A consistent older copy of a document's rows (or of the whole file)
cannot be told from the real thing without state kept elsewhere; ``docs/local-first.md`` says
exactly what is and is not detected. No plaintext, no key and no document id is written to the
file.

Files written before rows carried positions (no generation) are migrated on first load of
each document: its rows are opened the old way, once, and written again the new way.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import nacl.bindings

from secsync.errors import LocalStoreError, SessionStateError
from secsync.protocol import crypto
from secsync.protocol.state import SessionState

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of a file in the current layout (files before it have 0)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoint (
    token TEXT PRIMARY KEY,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL,
    generation INTEGER
);
CREATE TABLE IF NOT EXISTS change_log (
    token TEXT NOT NULL,
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL,
    generation INTEGER,
    position INTEGER
);
CREATE INDEX IF NOT EXISTS change_log_token ON change_log (token, id);
"""
# Rows of files in the first layout have no generation (NULL): see _migrate.
_ADD_COLUMNS = (
    "ALTER TABLE checkpoint ADD COLUMN generation INTEGER",
    "ALTER TABLE change_log ADD COLUMN generation INTEGER",
    "ALTER TABLE change_log ADD COLUMN position INTEGER",
)
_PERSON = b"secsync-store"


@dataclass(slots=True)
class LocalState:
    """What a document needs to resume without the broker."""

    crdt_state: bytes
    session: SessionState | None
    """The document session's state (``None``: none saved, only logged changes)."""
    last_sequence: int
    snapshot_sequences: dict[bytes, int] = field(default_factory=dict)
    changes: list[bytes] = field(default_factory=list)
    """Local changes logged after the checkpoint (already part of no saved state)."""
    last_digest: bytes = b""
    """Digest of the stored message at ``last_sequence`` (empty: not known), so that a stream
    restored from an older backup is noticed."""


def storage_subkey(key: bytes) -> bytes:
    """The key rows are sealed with: derived from the storage key for this use only."""
    return hashlib.blake2b(b"", digest_size=32, key=key, person=_PERSON).digest()


def _checkpoint_aad(token: str, generation: int) -> bytes:
    return f"secsync-store-v2:checkpoint:{token}:{generation}".encode()


def _change_aad(token: str, generation: int, position: int) -> bytes:
    return f"secsync-store-v2:change:{token}:{generation}:{position}".encode()


def _legacy_aad(token: str, table: str) -> bytes:
    return f"secsync-local-v1:{table}:{token}".encode()


def _seal(key: bytes, aad: bytes, data: bytes) -> tuple[bytes, bytes]:
    nonce = crypto.random_nonce()
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(data, aad, nonce, key)
    return nonce, sealed


def _open(key: bytes, aad: bytes, nonce: bytes, sealed: bytes, what: str) -> bytes:
    try:
        data: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed, aad, nonce, key
        )
    except Exception:
        raise LocalStoreError(
            f"local {what} does not decrypt where it is (wrong key, damaged, or moved)"
        ) from None
    return data


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
            self._upgrade_schema()
        except sqlite3.Error as exc:
            raise LocalStoreError(f"cannot open the local store {self.path}: {exc}") from None

    def _upgrade_schema(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise LocalStoreError(
                f"the local store {self.path} was written by a newer secsync (layout {version})"
            )
        self._db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(checkpoint)")}
            if columns and "generation" not in columns:  # a file in the first layout
                for statement in _ADD_COLUMNS:
                    self._db.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # --- writing ---------------------------------------------------------------------------

    def save(self, token: str, key: bytes, state: LocalState) -> None:
        """Write a checkpoint and drop the change log it covers, atomically."""
        payload = msgpack.packb(
            {
                "crdt": state.crdt_state,
                # an empty map stands for no session state, as in every earlier release
                "session": {} if state.session is None else state.session.encode(),
                "seq": state.last_sequence,
                "snapshot_seqs": state.snapshot_sequences,
                "digest": state.last_digest,
            },
            use_bin_type=True,
        )
        subkey = storage_subkey(key)
        with self._lock, self._transaction():
            generation = self._generation(token) + 1
            nonce, sealed = _seal(subkey, _checkpoint_aad(token, generation), payload)
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoint (token, nonce, sealed, generation)"
                " VALUES (?, ?, ?, ?)",
                (token, nonce, sealed, generation),
            )
            self._db.execute("DELETE FROM change_log WHERE token = ?", (token,))

    def append_changes(self, token: str, key: bytes, changes: list[bytes]) -> None:
        """Log local changes made since the last checkpoint (one row each, one transaction)."""
        if not changes:
            return
        subkey = storage_subkey(key)
        with self._lock:
            self._migrate(token, key)
            with self._transaction():
                generation = self._generation(token)
                (last,) = self._db.execute(
                    "SELECT MAX(position) FROM change_log WHERE token = ? AND generation = ?",
                    (token, generation),
                ).fetchone()
                rows = []
                for position, change in enumerate(changes, start=(last or 0) + 1):
                    aad = _change_aad(token, generation, position)
                    nonce, sealed = _seal(subkey, aad, change)
                    rows.append((token, nonce, sealed, generation, position))
                self._db.executemany(
                    "INSERT INTO change_log (token, nonce, sealed, generation, position)"
                    " VALUES (?, ?, ?, ?, ?)",
                    rows,
                )

    # --- reading ---------------------------------------------------------------------------

    def load(self, token: str, key: bytes) -> LocalState | None:
        """The saved state of a document, or ``None`` when there is none.

        Raises :class:`LocalStoreError` when a row does not open under this key where it is,
        or the change log does not follow on from the checkpoint without a gap.
        """
        subkey = storage_subkey(key)
        with self._lock:
            self._migrate(token, key)
            row = self._db.execute(
                "SELECT nonce, sealed, generation FROM checkpoint WHERE token = ?", (token,)
            ).fetchone()
            log = self._db.execute(
                "SELECT nonce, sealed, generation, position FROM change_log WHERE token = ?"
                " ORDER BY position, id",
                (token,),
            ).fetchall()
        generation = 0 if row is None else row[2]
        changes = []
        for expected, (nonce, sealed, change_generation, position) in enumerate(log, start=1):
            if change_generation != generation or position != expected:
                raise LocalStoreError(
                    "the local change log does not follow on from its checkpoint"
                    " (rows missing, duplicated or from another checkpoint)"
                )
            aad = _change_aad(token, generation, position)
            changes.append(_open(subkey, aad, nonce, sealed, "change"))
        if row is None:
            if not changes:
                return None
            return LocalState(b"", None, 0, {}, changes)
        data = _open(subkey, _checkpoint_aad(token, generation), row[0], row[1], "checkpoint")
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
            session = obj["session"]
            return LocalState(
                obj["crdt"],
                SessionState.decode(session) if session else None,
                obj["seq"],
                dict(obj["snapshot_seqs"]),
                changes,
                bytes(obj.get("digest", b"")),
            )
        except SessionStateError:
            raise
        except Exception as exc:
            raise LocalStoreError(f"local state is damaged: {exc}") from None

    def forget(self, token: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM checkpoint WHERE token = ?", (token,))
            self._db.execute("DELETE FROM change_log WHERE token = ?", (token,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- internals -------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _generation(self, token: str) -> int:
        """The generation of the document's checkpoint, 0 when it has none."""
        row = self._db.execute(
            "SELECT generation FROM checkpoint WHERE token = ?", (token,)
        ).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def _migrate(self, token: str, key: bytes) -> None:
        """Rewrite the document's rows of the first layout (document key, no positions)."""
        legacy_checkpoint = self._db.execute(
            "SELECT nonce, sealed FROM checkpoint WHERE token = ? AND generation IS NULL",
            (token,),
        ).fetchone()
        legacy_log = self._db.execute(
            "SELECT nonce, sealed FROM change_log WHERE token = ? AND generation IS NULL"
            " ORDER BY id",
            (token,),
        ).fetchall()
        if legacy_checkpoint is None and not legacy_log:
            return
        (current,) = self._db.execute(
            "SELECT COUNT(*) FROM change_log WHERE token = ? AND generation IS NOT NULL",
            (token,),
        ).fetchone()
        if current or (legacy_checkpoint is None and self._generation(token)):
            raise LocalStoreError("the local store mixes rows of two layouts for one document")
        payload = None
        if legacy_checkpoint is not None:
            nonce, sealed = legacy_checkpoint
            payload = _open(key, _legacy_aad(token, "checkpoint"), nonce, sealed, "checkpoint")
        changes = [_open(key, _legacy_aad(token, "change"), n, s, "change") for n, s in legacy_log]
        subkey = storage_subkey(key)
        generation = 0 if payload is None else 1
        with self._transaction():
            self._db.execute("DELETE FROM checkpoint WHERE token = ?", (token,))
            self._db.execute("DELETE FROM change_log WHERE token = ?", (token,))
            if payload is not None:
                nonce, sealed = _seal(subkey, _checkpoint_aad(token, generation), payload)
                self._db.execute(
                    "INSERT INTO checkpoint (token, nonce, sealed, generation) VALUES (?, ?, ?, ?)",
                    (token, nonce, sealed, generation),
                )
            for position, change in enumerate(changes, start=1):
                nonce, sealed = _seal(subkey, _change_aad(token, generation, position), change)
                self._db.execute(
                    "INSERT INTO change_log (token, nonce, sealed, generation, position)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (token, nonce, sealed, generation, position),
                )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; on failure ``ROLLBACK`` and :class:`LocalStoreError`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise LocalStoreError(f"cannot write the local store: {exc}") from None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as error:
                exc = error
        self._db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise LocalStoreError(f"cannot write the local store: {exc}") from None
