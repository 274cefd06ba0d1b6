import asyncio
import io
import json
import logging
import subprocess
import sys

import pytest
import structlog

from secsync.cli import common
from secsync.cli import main as cli
from secsync.protocol.encoding import b64encode
from tests.factories import plain_yjs_doc

CLI = (sys.executable, "-m", "secsync.cli")


def run(argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    err = io.StringIO()
    buf = io.BytesIO()

    class In:
        buffer = io.BytesIO(stdin)

    class Out(io.StringIO):
        buffer = buf

    old = sys.stdin, sys.stdout, sys.stderr
    # The CLI configures structlog for its process; the other tests here keep theirs.
    configured, config = structlog.is_configured(), structlog.get_config()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    sys.stdin, sys.stdout, sys.stderr = In(), Out(), err  # type: ignore[assignment]
    try:
        code = cli.main(argv)
        text = sys.stdout.getvalue()  # type: ignore[attr-defined]
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
        if configured:
            structlog.configure(**config)
        else:
            structlog.reset_defaults()
        root.setLevel(level)
        root.handlers[:] = handlers
    return code, text + buf.getvalue().decode("latin-1"), err.getvalue()


@pytest.fixture
def keys() -> dict[str, str]:
    code, out, _ = run(["keygen"])
    assert code == 0
    return json.loads(out)


@pytest.mark.parametrize("kind", ["snapshot", "update", "ephemeral"])
def test_seal_then_open(keys: dict[str, str], kind: str, tmp_path) -> None:
    public = {"docId": "doc-1"}
    if kind == "update":
        public |= {"refSnapshotId": b64encode(bytes(24)), "clock": 3}
    code, sealed, _ = run(
        [
            "message",
            "seal",
            "--kind",
            kind,
            # "=" form: a base64url key may start with "-"
            f"--key={keys['documentKey']}",
            f"--signing-key={keys['signingSecretKey']}",
            "--public-data",
            json.dumps(public),
        ],
        "héllo".encode(),
    )
    assert code == 0
    message = json.loads(sealed)
    assert message["publicData"]["pubKey"] == keys["signingPublicKey"]
    path = tmp_path / "m.json"
    path.write_text(sealed)
    code, opened, _ = run(["message", "open", f"--key={keys['documentKey']}", str(path)])
    assert code == 0
    result = json.loads(opened)
    assert result["kind"] == kind and result["plaintext"] == "héllo"


def test_open_fails_with_error_code(keys: dict[str, str], tmp_path) -> None:
    _, sealed, _ = run(
        [
            "message",
            "seal",
            "--kind",
            "snapshot",
            # "=" form: a base64url key may start with "-"
            f"--key={keys['documentKey']}",
            f"--signing-key={keys['signingSecretKey']}",
            "--public-data",
            '{"docId":"d"}',
        ],
        b"x",
    )
    other = b64encode(bytes(32))
    code, _, err = run(["message", "open", f"--key={other}"], sealed.encode())
    assert code == 1 and "error 101" in err
    tampered = sealed.replace('"docId":"d"', '"docId":"e"')
    code, _, err = run(["message", "open", f"--key={keys['documentKey']}"], tampered.encode())
    assert code == 1 and "error 111" in err
    code, _, err = run(["message", "open", f"--key={keys['documentKey']}"], b"{nope")
    assert code == 1 and "error 700" in err


def test_native_format_round_trip(keys: dict[str, str]) -> None:
    code, packed, _ = run(
        [
            "message",
            "seal",
            "--kind",
            "ephemeral",
            "--format",
            "msgpack",
            # "=" form: a base64url key may start with "-"
            f"--key={keys['documentKey']}",
            f"--signing-key={keys['signingSecretKey']}",
            "--public-data",
            '{"docId":"d"}',
        ],
        b"bytes",
    )
    assert code == 0
    code, out, _ = run(
        ["message", "open", "--raw", f"--key={keys['documentKey']}"], packed.encode("latin-1")
    )
    assert code == 0 and out == "bytes"


def seal(keys: dict[str, str], public: str = '{"docId":"d"}', plaintext: bytes = b"x") -> str:
    code, sealed, err = run(
        [
            "message",
            "seal",
            "--kind",
            "snapshot",
            f"--key={keys['documentKey']}",
            f"--signing-key={keys['signingSecretKey']}",
            "--public-data",
            public,
        ],
        plaintext,
    )
    assert code == 0, err
    return sealed


def test_dash_is_stdin_for_a_file_argument(keys: dict[str, str]) -> None:
    sealed = seal(keys, plaintext=b"from stdin")
    code, out, err = run(
        ["message", "open", "--raw", f"--key={keys['documentKey']}", "-"], sealed.encode()
    )
    assert code == 0, err
    assert out == "from stdin"


def test_keys_from_files_and_from_the_environment(
    keys: dict[str, str], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "doc.key"
    key_file.write_text(keys["documentKey"] + "\n")
    signing_file = tmp_path / "me.key"
    signing_file.write_text(keys["signingSecretKey"] + "\n")
    code, sealed, err = run(
        [
            "message",
            "seal",
            "--kind",
            "ephemeral",
            "--key-file",
            str(key_file),
            "--signing-key-file",
            str(signing_file),
            "--public-data",
            '{"docId":"d"}',
        ],
        b"secret",
    )
    assert code == 0, err
    assert json.loads(sealed)["publicData"]["pubKey"] == keys["signingPublicKey"]

    message = tmp_path / "m.json"
    message.write_text(sealed)
    monkeypatch.setenv("SECSYNC_KEY", keys["documentKey"])
    code, out, err = run(["message", "open", "--raw", str(message)])
    assert code == 0, err
    assert out == "secret"
    # the key file, read from stdin, wins over the environment
    monkeypatch.setenv("SECSYNC_KEY", b64encode(bytes(32)))
    code, out, err = run(
        ["message", "open", "--raw", "--key-file", "-", str(message)],
        keys["documentKey"].encode(),
    )
    assert code == 0, err
    assert out == "secret"


def test_a_missing_key_or_two_inputs_on_stdin_are_usage_errors(
    keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SECSYNC_KEY", raising=False)
    code, _, err = run(["message", "open", "-"], b"{}")
    assert code == 2
    assert "--key=VALUE, --key-file PATH or $SECSYNC_KEY" in err
    code, _, err = run(["message", "open", "--key-file", "-", "-"], b"{}")
    assert code == 2
    assert "cannot both come from stdin" in err
    code, _, err = run(["message", "open", "--key=x", "--key-file", "k"], b"")
    assert code == 2
    assert "give one of them" in err
    code, _, err = run(["message", "open", "--key-file", "/nonexistent/doc.key"])
    assert code == 2
    assert "cannot read" in err and "/nonexistent/doc.key" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("field", ["nonce", "ciphertext", "signature", "publicData"])
def test_a_message_without_a_field_names_it(keys: dict[str, str], field: str) -> None:
    message = json.loads(seal(keys))
    del message[field]
    code, _, err = run(
        ["message", "open", f"--key={keys['documentKey']}"], json.dumps(message).encode()
    )
    assert code == 1
    assert f"has no field {field}" in err
    assert "Traceback" not in err and "KeyError" not in err


def test_public_data_without_a_field_names_it(keys: dict[str, str]) -> None:
    message = json.loads(seal(keys))
    del message["publicData"]["docId"]
    code, _, err = run(
        ["message", "open", f"--key={keys['documentKey']}"], json.dumps(message).encode()
    )
    assert code == 1
    assert "missing field docId in publicData" in err
    code, _, err = run(
        [
            "message",
            "seal",
            "--kind",
            "update",
            f"--key={keys['documentKey']}",
            f"--signing-key={keys['signingSecretKey']}",
            "--public-data",
            '{"docId":"d","clock":0}',
        ],
        b"x",
    )
    assert code == 1
    assert "missing field refSnapshotId in publicData" in err


def test_error_messages_carry_no_markup() -> None:
    from secsync import errors

    assert common.plain("Not a share link of the form ``<id>#<secret>``.") == (
        "Not a share link of the form <id>#<secret>."
    )
    assert common.plain("see :class:`Broker` and :meth:`~x.stop`") == "see Broker and x.stop"
    # every error's default message, as the CLI shows it
    stack: list[type[errors.SecsyncError]] = [errors.SecsyncError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        shown = common.plain(cls().message)
        assert "`" not in shown and ":class:" not in shown, cls
    code, _, err = run(["join", "not-a-link"])
    assert code == 1
    assert "error 1001" in err and "<document id>#<secret>" in err and "`" not in err


def test_url_lists_are_split_on_commas() -> None:
    assert common.split_urls("nats://a:1") == ["nats://a:1"]
    assert common.split_urls("nats://a:1,nats://b:2, nats://c:3,") == [
        "nats://a:1",
        "nats://b:2",
        "nats://c:3",
    ]
    with pytest.raises(common.UsageError):
        common.split_urls(" , ")


def test_a_port_in_use_is_one_line_naming_it(tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["broker", "--port", str(port), "--http-port", "0", "--data-dir", str(tmp_path)]
        code, out, err = run(argv)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"port {port} on 127.0.0.1 is not available" in err


async def test_join_refuses_a_document_the_broker_does_not_have(broker) -> None:

    import secsync
    from secsync.access.share import ShareLink
    from secsync.protocol.crypto import SigningKeyPair

    link = ShareLink.create("nobody-wrote-this")
    code, out, err = await asyncio.to_thread(run, ["join", str(link), "--url", broker.url])
    assert code == 1
    assert out == ""
    assert "error 909 (DocumentNotFoundError)" in err and "'nobody-wrote-this'" in err
    # the refused join left nothing on the broker
    async with secsync.connect(broker.url) as client:
        document = await client.open(
            link.doc_id,
            key=link.document_key(),
            signing_key=SigningKeyPair.generate(),
            crdt=plain_yjs_doc(),
        )
        assert document.last_sequence == 0
        assert document.session.active_snapshot is None
        await document.close()


def test_join_logs_go_to_stderr_and_verbose_shows_info(broker, tmp_path) -> None:
    link_file = tmp_path / "link"
    code, out, _ = run(["share", "logged-doc"])
    assert code == 0
    link_file.write_text(out)
    done = subprocess.run(
        [
            *CLI,
            "-v",
            "join",
            "--link-file",
            str(link_file),
            "--url",
            broker.url,
            "--create",
            "--append=logged",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "logged\n"  # stdout carries the text only
    info = [line for line in done.stderr.splitlines() if " INFO secsync." in line]
    assert info, done.stderr
    quiet = subprocess.run(
        [*CLI, "join", "--link-file", str(link_file), "--url", broker.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "logged\n"
    assert " INFO " not in quiet.stderr


def test_passphrase_from_a_file_keeps_its_spaces(tmp_path, monkeypatch) -> None:
    inputs = common.Inputs(environ={"SECSYNC_PASSPHRASE": "from the environment"})
    parsed = cli.build_parser().parse_args(["join", "d#x"])
    assert inputs.passphrase(parsed) == "from the environment"
    path = tmp_path / "pw"
    path.write_text(" two words \n")
    parsed = cli.build_parser().parse_args(["join", "d#x", "--passphrase-file", str(path)])
    assert inputs.passphrase(parsed) == " two words "
    parsed = cli.build_parser().parse_args(["join", "d#x", "--passphrase-env", "MY_PW"])
    with pytest.raises(common.UsageError, match=r"\$MY_PW is not set"):
        inputs.passphrase(parsed)


def test_the_passphrase_can_be_asked_for_on_the_terminal(monkeypatch) -> None:
    asked: list[str] = []

    def fake_getpass(prompt: str) -> str:
        asked.append(prompt)
        return "typed, not echoed"

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    parsed = cli.build_parser().parse_args(["join", "d#x", "--ask-passphrase"])
    assert common.Inputs({}).passphrase(parsed) == "typed, not echoed"
    assert asked == ["passphrase: "]


async def test_join_shows_how_far_loading_has_come(broker) -> None:
    import secsync
    from secsync.access.share import ShareLink
    from tests.transport.helpers import store_document

    link = ShareLink.create("a-long-document")
    async with secsync.connect(broker.url) as client:
        text = await store_document(client, link.doc_id, 2_500, key=link.document_key())
    argv = ["join", str(link), "--url", broker.url, "--progress"]
    code, out, err = await asyncio.to_thread(run, argv)
    assert code == 0, err
    assert out == text + "\n"
    assert "a-long-document: [" in err
    assert err.count("\r") >= 3  # a page of 1,024 at a time, redrawn in place
    assert "2,500 / 2,500 messages (100%)\n" in err
    # without --progress, and not on a terminal: nothing is drawn
    code, out, err = await asyncio.to_thread(run, argv[:-1])
    assert code == 0 and "\r" not in err
