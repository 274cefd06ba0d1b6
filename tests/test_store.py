"""The local store: round trips, and an attacker who edits the SQLite file between runs."""

import sqlite3
from pathlib import Path

import msgpack
import nacl.bindings
import nacl.exceptions
import pytest

from secsync.errors import LocalStoreError
from secsync.protocol import crypto
from secsync.protocol.state import SessionState
from secsync.store import SCHEMA_VERSION, LocalState, LocalStore, storage_subkey

KEY = crypto.generate_key()
STATE = SessionState(local_clock=3, pending=(b"p1", b"p2"), confirmed=((1, (b"c",)),))


def tamper(path: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    """Run SQL on the store file as someone with write access to it would."""
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement, params if "?" in statement else ())
    db.commit()
    db.close()


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def three_changes(path: Path) -> None:
    store = LocalStore(path)
    store.save("t", KEY, LocalState(b"crdt", None, 7))
    store.append_changes("t", KEY, [b"c1", b"c2"])
    store.append_changes("t", KEY, [b"c3"])
    assert store.load("t", KEY) == LocalState(b"crdt", None, 7, {}, [b"c1", b"c2", b"c3"])
    store.close()


def test_checkpoint_and_change_log_round_trip(tmp_path) -> None:
    store = LocalStore(tmp_path / "s.db")
    assert store.load("t", KEY) is None
    store.append_changes("t", KEY, [b"c1"])
    assert store.load("t", KEY) == LocalState(b"", None, 0, {}, [b"c1"])
    store.save("t", KEY, LocalState(b"crdt", STATE, 42, {b"s" * 24: 40}))
    store.append_changes("t", KEY, [b"c2", b"c3"])
    state = store.load("t", KEY)
    assert state == LocalState(b"crdt", STATE, 42, {b"s" * 24: 40}, [b"c2", b"c3"])
    store.save("t", KEY, LocalState(b"crdt2", None, 43))
    assert store.load("t", KEY) == LocalState(b"crdt2", None, 43, {}, [])  # log folded in
    store.close()
    reopened = LocalStore(tmp_path / "s.db")
    assert reopened.load("t", KEY) == LocalState(b"crdt2", None, 43, {}, [])


def test_nothing_readable_in_the_file_and_wrong_key_fails(tmp_path) -> None:
    store = LocalStore(tmp_path / "s.db")
    store.save(
        "tok", KEY, LocalState(b"SECRET-CONTENT", SessionState(pending=(b"SECRET-CHANGE",)), 1)
    )
    store.append_changes("tok", KEY, [b"SECRET-LOGGED"])
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"SECRET" not in raw
    with pytest.raises(LocalStoreError):
        LocalStore(tmp_path / "s.db").load("tok", crypto.generate_key())


def test_rows_cannot_be_moved_between_documents(tmp_path) -> None:
    store = LocalStore(tmp_path / "s.db")
    store.save("a", KEY, LocalState(b"a-state", None, 1))
    store.close()
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("UPDATE checkpoint SET token = 'b' WHERE token = 'a'")
    db.commit()
    db.close()
    with pytest.raises(LocalStoreError):
        LocalStore(tmp_path / "s.db").load("b", KEY)


def test_a_path_under_the_home_directory_is_expanded(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    store = LocalStore("~/.secsync/docs.db")
    store.append_changes("t", KEY, [b"c"])
    store.close()
    assert (home / ".secsync" / "docs.db").is_file()
    assert not (workdir / "~").exists()  # no literal "~" folder


def test_rows_are_sealed_with_a_storage_subkey_not_the_key(tmp_path) -> None:
    path = tmp_path / "s.db"
    store = LocalStore(path)
    store.save("t", KEY, LocalState(b"crdt", None, 1))
    store.close()
    assert storage_subkey(KEY) != KEY and len(storage_subkey(KEY)) == 32
    ((nonce, sealed, generation),) = rows(path, "SELECT nonce, sealed, generation FROM checkpoint")
    aad = f"secsync-store-v2:checkpoint:t:{generation}".encode()
    open_ = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
    assert msgpack.unpackb(open_(sealed, aad, nonce, storage_subkey(KEY)))["crdt"] == b"crdt"
    with pytest.raises(nacl.exceptions.CryptoError):
        open_(sealed, aad, nonce, KEY)


def test_swapped_change_rows_are_detected(tmp_path) -> None:
    path = tmp_path / "s.db"
    three_changes(path)
    (first, second) = rows(path, "SELECT id, nonce, sealed FROM change_log ORDER BY id LIMIT 2")
    db = sqlite3.connect(path)
    for (row_id, _, _), (_, nonce, sealed) in ((first, second), (second, first)):
        db.execute(
            "UPDATE change_log SET nonce = ?, sealed = ? WHERE id = ?", (nonce, sealed, row_id)
        )
    db.commit()
    db.close()
    with pytest.raises(LocalStoreError):
        LocalStore(path).load("t", KEY)


def test_swapping_the_positions_too_changes_nothing(tmp_path) -> None:
    """Moving whole rows around (ids) is not an attack: the log is read in its own order."""
    path = tmp_path / "s.db"
    three_changes(path)
    tamper(path, "UPDATE change_log SET id = id + 100 WHERE position = 1")
    assert LocalStore(path).load("t", KEY) == LocalState(
        b"crdt", None, 7, {}, [b"c1", b"c2", b"c3"]
    )


@pytest.mark.parametrize("renumber", [False, True])
def test_a_change_deleted_from_the_middle_is_detected(tmp_path, renumber: bool) -> None:
    path = tmp_path / "s.db"
    three_changes(path)
    statements = ["DELETE FROM change_log WHERE position = 2"]
    if renumber:  # close the gap in the plaintext column: the sealed position stays 3
        statements.append("UPDATE change_log SET position = 2 WHERE position = 3")
    tamper(path, *statements)
    with pytest.raises(LocalStoreError):
        LocalStore(path).load("t", KEY)


def test_a_change_copied_from_another_document_is_detected(tmp_path) -> None:
    path = tmp_path / "s.db"
    three_changes(path)
    store = LocalStore(path)
    store.save("other", KEY, LocalState(b"other", None, 1))  # same key, same generation (1)
    store.append_changes("other", KEY, [b"x1", b"x2", b"x3", b"x4"])
    store.close()
    # the other document's fourth change, passed off as this document's fourth
    tamper(
        path,
        "INSERT INTO change_log (token, nonce, sealed, generation, position)"
        " SELECT 't', nonce, sealed, generation, position FROM change_log"
        " WHERE token = 'other' AND position = 4",
    )
    with pytest.raises(LocalStoreError):
        LocalStore(path).load("t", KEY)
    assert LocalStore(path).load("other", KEY) is not None  # the control: its own rows open


def test_a_checkpoint_replaced_by_an_older_one_is_detected(tmp_path) -> None:
    path = tmp_path / "s.db"
    store = LocalStore(path)
    store.save("t", KEY, LocalState(b"old", None, 1))
    (old,) = rows(path, "SELECT nonce, sealed, generation FROM checkpoint")
    store.save("t", KEY, LocalState(b"new", None, 2))
    store.append_changes("t", KEY, [b"after new"])
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE checkpoint SET nonce = ?, sealed = ?, generation = ?", old)
    db.commit()
    db.close()
    with pytest.raises(LocalStoreError, match="does not follow on"):
        LocalStore(path).load("t", KEY)
    # claiming the current generation for the old row: its sealed generation says otherwise
    tamper(path, "UPDATE checkpoint SET generation = 2")
    with pytest.raises(LocalStoreError, match="decrypt"):
        LocalStore(path).load("t", KEY)


def test_an_older_checkpoint_with_no_log_after_it_is_not_detected(tmp_path) -> None:
    """The documented limit: a consistent older copy of a document's rows is a rollback that
    only state kept outside the file could reveal."""
    path = tmp_path / "s.db"
    store = LocalStore(path)
    store.save("t", KEY, LocalState(b"old", None, 1))
    (old,) = rows(path, "SELECT nonce, sealed, generation FROM checkpoint")
    store.save("t", KEY, LocalState(b"new", None, 2))
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE checkpoint SET nonce = ?, sealed = ?, generation = ?", old)
    db.commit()
    db.close()
    assert LocalStore(path).load("t", KEY) == LocalState(b"old", None, 1)


def test_a_checkpoint_deleted_under_its_log_is_detected(tmp_path) -> None:
    path = tmp_path / "s.db"
    three_changes(path)
    tamper(path, "DELETE FROM checkpoint")
    with pytest.raises(LocalStoreError):
        LocalStore(path).load("t", KEY)


def _first_layout_file(path: Path) -> None:
    """A store as the first layout wrote it: the document key itself, no positions."""
    seal = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE checkpoint (token TEXT PRIMARY KEY, nonce BLOB NOT NULL,"
        " sealed BLOB NOT NULL);"
        "CREATE TABLE change_log (token TEXT NOT NULL, id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " nonce BLOB NOT NULL, sealed BLOB NOT NULL);"
        "CREATE INDEX change_log_token ON change_log (token, id);"
    )
    payload = msgpack.packb(
        {"crdt": b"legacy", "session": STATE.encode(), "seq": 9, "snapshot_seqs": {b"s" * 24: 8}},
        use_bin_type=True,
    )
    nonce = crypto.random_nonce()
    sealed = seal(payload, b"secsync-local-v1:checkpoint:t", nonce, KEY)
    db.execute("INSERT INTO checkpoint VALUES ('t', ?, ?)", (nonce, sealed))
    for change in (b"l1", b"l2"):
        nonce = crypto.random_nonce()
        sealed = seal(change, b"secsync-local-v1:change:t", nonce, KEY)
        db.execute(
            "INSERT INTO change_log (token, nonce, sealed) VALUES ('t', ?, ?)", (nonce, sealed)
        )
    nonce = crypto.random_nonce()
    sealed = seal(b"only logged", b"secsync-local-v1:change:u", nonce, KEY)
    db.execute("INSERT INTO change_log (token, nonce, sealed) VALUES ('u', ?, ?)", (nonce, sealed))
    db.commit()
    db.close()


def test_a_store_of_the_first_layout_is_migrated_on_first_load(tmp_path) -> None:
    path = tmp_path / "s.db"
    _first_layout_file(path)
    expected = LocalState(b"legacy", STATE, 9, {b"s" * 24: 8}, [b"l1", b"l2"])
    store = LocalStore(path)
    assert store.load("t", KEY) == expected
    store.append_changes("u", KEY, [b"new"])  # a document not loaded yet is migrated first
    store.close()
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "SELECT COUNT(*) FROM change_log WHERE generation IS NULL") == [(0,)]
    assert rows(path, "SELECT COUNT(*) FROM checkpoint WHERE generation IS NULL") == [(0,)]
    reopened = LocalStore(path)
    assert reopened.load("t", KEY) == expected  # now read the new way
    assert reopened.load("u", KEY) == LocalState(b"", None, 0, {}, [b"only logged", b"new"])
    # and the rewritten rows carry positions: a middle change deleted is detected
    reopened.close()
    tamper(path, "DELETE FROM change_log WHERE token = 't' AND position = 1")
    with pytest.raises(LocalStoreError):
        LocalStore(path).load("t", KEY)


def test_first_layout_rows_mixed_into_a_migrated_document_are_refused(tmp_path) -> None:
    path = tmp_path / "s.db"
    _first_layout_file(path)
    (legacy,) = rows(path, "SELECT nonce, sealed FROM change_log WHERE token = 'u'")
    store = LocalStore(path)
    assert store.load("u", KEY) is not None
    store.close()
    db = sqlite3.connect(path)  # an old row put back next to the migrated ones
    db.execute("INSERT INTO change_log (token, nonce, sealed) VALUES ('u', ?, ?)", legacy)
    db.commit()
    db.close()
    with pytest.raises(LocalStoreError, match="two layouts"):
        LocalStore(path).load("u", KEY)
