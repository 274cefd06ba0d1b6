import sqlite3

import pytest

from secsync.errors import LocalStoreError
from secsync.protocol import crypto
from secsync.store import LocalState, LocalStore

KEY = crypto.generate_key()


def test_checkpoint_and_change_log_round_trip(tmp_path) -> None:
    store = LocalStore(tmp_path / "s.db")
    assert store.load("t", KEY) is None
    store.append_changes("t", KEY, [b"c1"])
    assert store.load("t", KEY) == LocalState(b"", {}, 0, {}, [b"c1"])
    store.save("t", KEY, LocalState(b"crdt", {"v": 1}, 42, {b"s" * 24: 40}))
    store.append_changes("t", KEY, [b"c2", b"c3"])
    state = store.load("t", KEY)
    assert state == LocalState(b"crdt", {"v": 1}, 42, {b"s" * 24: 40}, [b"c2", b"c3"])
    store.save("t", KEY, LocalState(b"crdt2", {}, 43))
    assert store.load("t", KEY) == LocalState(b"crdt2", {}, 43, {}, [])  # log folded in
    store.close()
    reopened = LocalStore(tmp_path / "s.db")
    assert reopened.load("t", KEY) == LocalState(b"crdt2", {}, 43, {}, [])


def test_nothing_readable_in_the_file_and_wrong_key_fails(tmp_path) -> None:
    store = LocalStore(tmp_path / "s.db")
    store.save("tok", KEY, LocalState(b"SECRET-CONTENT", {"pending": [b"SECRET-CHANGE"]}, 1))
    store.append_changes("tok", KEY, [b"SECRET-LOGGED"])
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"SECRET" not in raw
    with pytest.raises(LocalStoreError):
        LocalStore(tmp_path / "s.db").load("tok", crypto.generate_key())


def test_rows_cannot_be_moved_between_documents(tmp_path) -> None:
    store = LocalStore(tmp_path / "s.db")
    store.save("a", KEY, LocalState(b"a-state", {}, 1))
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
