import io
import json
import sys

import pytest

from secsync import cli
from secsync.protocol.encoding import b64encode


def run(argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    err = io.StringIO()
    buf = io.BytesIO()

    class In:
        buffer = io.BytesIO(stdin)

    class Out(io.StringIO):
        buffer = buf

    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = In(), Out(), err  # type: ignore[assignment]
    try:
        code = cli.main(argv)
        text = sys.stdout.getvalue()  # type: ignore[attr-defined]
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
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
