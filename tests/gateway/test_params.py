"""The JS client's connection URL: doc id, session key, mode, known snapshot and clocks."""

from __future__ import annotations

from urllib.parse import quote

from secsync.gateway import BadConnection, ConnectionParams, parse_connection
from secsync.protocol.encoding import b64encode
from tests.gateway.helpers import DOC_ID, A, B

SNAPSHOT_ID = bytes(range(24))


def test_the_doc_id_is_url_decoded_and_mode_and_key_read() -> None:
    parsed = parse_connection(f"/{quote(DOC_ID, safe='')}?sessionKey=secret&mode=delta")
    assert isinstance(parsed, ConnectionParams)
    assert parsed.document_id == DOC_ID
    assert parsed.session_key.reveal() == "secret"
    assert parsed.mode == "delta"
    assert parsed.known_snapshot_id is None and parsed.known_clocks is None


def test_any_mode_but_delta_is_complete_and_the_first_of_a_repeated_key_counts() -> None:
    for mode in ("complete", "DELTA", "", "x"):
        parsed = parse_connection(f"/d?sessionKey=k&mode={mode}&sessionKey=other")
        assert isinstance(parsed, ConnectionParams)
        assert parsed.mode == "complete"
        assert parsed.session_key.reveal() == "k"


def test_known_snapshot_and_clocks_as_the_client_encodes_them() -> None:
    clocks = quote(f'{{"{b64encode(A)}":2,"{b64encode(B)}":9999}}', safe="")
    parsed = parse_connection(
        f"/d?sessionKey=k&mode=delta&knownSnapshotId={b64encode(SNAPSHOT_ID)}"
        f"&knownSnapshotUpdateClocks={clocks}"
    )
    assert isinstance(parsed, ConnectionParams)
    assert parsed.known_snapshot_id == SNAPSHOT_ID
    assert dict(parsed.known_clocks or {}) == {A: 2, B: 9999}


def test_unparsable_clocks_are_absent() -> None:
    for clocks in ("%7Bnot-json", "%5B1%5D", quote('{"x":1}'), quote(f'{{"{b64encode(A)}":-1}}')):
        parsed = parse_connection(f"/d?sessionKey=k&knownSnapshotUpdateClocks={clocks}")
        assert isinstance(parsed, ConnectionParams)
        assert parsed.known_clocks is None, clocks


def test_missing_doc_id_or_session_key_is_a_bad_connection() -> None:
    for target in ("/?sessionKey=k", "/d", "/d?sessionKey=", "", "/%ff?sessionKey=k"):
        assert isinstance(parse_connection(target), BadConnection), target


def test_the_session_key_never_shows_in_a_repr() -> None:
    parsed = parse_connection("/d?sessionKey=very-secret-value")
    assert isinstance(parsed, ConnectionParams)
    assert "very-secret-value" not in repr(parsed)
    assert "very-secret-value" not in str(parsed.session_key)


def test_the_session_key_never_shows_in_an_access_question() -> None:
    from secsync.gateway import DocumentView, GatewayConnection
    from tests.gateway.helpers import SUBJECTS

    parsed = parse_connection("/d?sessionKey=very-secret-value")
    assert isinstance(parsed, ConnectionParams)
    connection = GatewayConnection(parsed, DocumentView("d", SUBJECTS), ephemeral_subject="e")
    (ask,) = connection.open()
    assert "very-secret-value" not in repr(ask)
    assert ask.session_key.reveal() == "very-secret-value"
