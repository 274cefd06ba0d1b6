"""Seal messages with the Python implementation for ``interop/js/verify.mjs`` to check.

Usage (from the project root)::

    .venv/bin/python interop/make_python_sealed.py [output]

The default output is ``tests/interop/fixtures/python_sealed.json``: a list of cases in the
same format as ``js_sealed.json`` (``name``, ``kind``, ``key``, ``signingPublicKey``, optional
``parent`` / ``ephemeral``, the secsync JSON ``message`` and the expected ``plaintext``, all
binary values base64url). Most cases go through the Python API; the ``cli-*`` cases go through
the ``secsync message seal`` command. The ``ephemeral-proof-and-request-proof`` case answers the
JS-sealed ``ephemeral-initialize`` of ``js_sealed.json``, so regenerate that file first when
both change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from secsync.protocol import crypto, sealing, wire
from secsync.protocol.encoding import b64decode, b64encode
from secsync.protocol.ephemeral import EphemeralPlaintext, EphemeralSessions, EphemeralType
from secsync.protocol.messages import (
    INITIAL_PARENT_PROOF,
    EphemeralPublicData,
    Message,
    Snapshot,
    SnapshotPublicData,
    UpdatePublicData,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "interop" / "fixtures"
SECSYNC_CLI = ROOT / ".venv" / "bin" / "secsync"

# The fixed, public test identity and document key of the secsync JS test suite.
SIGNING_SECRET_KEY = (
    "g3dtwb9XzhSzZGkxTfg11t1KEIb4D8rO7K54R6dnxArvgg_OzZ2GgREtG7F5LvNp3MS8p9vsio4r6Mq7SZDEgw"  # noqa: S105
)
SIGNING_PUBLIC_KEY = "74IPzs2dhoERLRuxeS7zadzEvKfb7IqOK-jKu0mQxIM"
DOCUMENT_KEY = bytes.fromhex("724b092810ec86d7e35c9d067702b31ef90bc43a7b598626749914d6a3e033ed")

DOC_ID = "6e46c006-5541-11ec-bf63-0242ac130002"
NON_ASCII_DOC_ID = "dök-ü-😀"
# A docId full of characters that JSON escaping treats specially.
ESCAPES_DOC_ID = 'doc "q" \\ \n\t\x01\x7f\u2028 ü😀'

SIGNER = crypto.SigningKeyPair.from_b64(SIGNING_SECRET_KEY)
PUB_KEY = SIGNER.public_key
assert b64encode(PUB_KEY) == SIGNING_PUBLIC_KEY

EPHEMERAL_TYPE_NAMES = {
    EphemeralType.INITIALIZE: "initialize",
    EphemeralType.PROOF_AND_REQUEST_PROOF: "proofAndRequestProof",
    EphemeralType.PROOF: "proof",
    EphemeralType.MESSAGE: "message",
}


class Cases:
    def __init__(self) -> None:
        self.cases: list[dict[str, Any]] = []
        self.messages: dict[str, Message] = {}

    def add(
        self,
        name: str,
        message: Message,
        plaintext: bytes,
        *,
        parent: str | None = None,
        ephemeral: dict[str, Any] | None = None,
        message_json: dict[str, Any] | None = None,
    ) -> Message:
        # Sanity check before the JS side sees it.
        assert sealing.open_message(message, DOCUMENT_KEY) == plaintext, name
        case: dict[str, Any] = {
            "name": name,
            "kind": message.kind.name.lower(),
            "key": b64encode(DOCUMENT_KEY),
            "signingPublicKey": SIGNING_PUBLIC_KEY,
        }
        if parent is not None:
            case["parent"] = parent
        if ephemeral is not None:
            case["ephemeral"] = ephemeral
        case["message"] = wire.to_json_dict(message) if message_json is None else message_json
        case["plaintext"] = b64encode(plaintext)
        self.cases.append(case)
        self.messages[name] = message
        return message

    def snapshot(self, name: str) -> Snapshot:
        message = self.messages[name]
        assert isinstance(message, Snapshot)
        return message


def child_proof(parent: Snapshot) -> bytes:
    """The parentSnapshotProof of a child of ``parent``, computed from its parts."""
    return b64decode(
        crypto.snapshot_proof(
            b64encode(parent.public_data.parent_snapshot_proof),
            crypto.ciphertext_hash(parent.ciphertext),
            b64encode(parent.public_data.snapshot_id),
        )
    )


def seal_snapshot(
    cases: Cases,
    name: str,
    plaintext: bytes,
    *,
    doc_id: str = DOC_ID,
    parent: str | None = None,
    clocks: dict[bytes, int] | None = None,
    extra: dict[str, Any] | None = None,
) -> Snapshot:
    if parent is None:
        parent_id, proof = b"", INITIAL_PARENT_PROOF
    else:
        parent_snapshot = cases.snapshot(parent)
        parent_id, proof = parent_snapshot.public_data.snapshot_id, child_proof(parent_snapshot)
    public = SnapshotPublicData(
        doc_id=doc_id,
        pub_key=PUB_KEY,
        snapshot_id=crypto.generate_id(),
        parent_snapshot_id=parent_id,
        parent_snapshot_proof=proof,
        parent_snapshot_update_clocks=clocks or {},
        extra=extra or {},
    )
    message = sealing.seal(public, plaintext, DOCUMENT_KEY, SIGNER)
    cases.add(name, message, plaintext, parent=parent)
    return message


def seal_update(
    cases: Cases,
    name: str,
    plaintext: bytes,
    clock: int,
    snapshot: str,
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    ref = cases.snapshot(snapshot).public_data
    public = UpdatePublicData(
        doc_id=ref.doc_id,
        pub_key=PUB_KEY,
        ref_snapshot_id=ref.snapshot_id,
        clock=clock,
        extra=extra or {},
    )
    cases.add(
        name, sealing.seal(public, plaintext, DOCUMENT_KEY, SIGNER), plaintext, parent=snapshot
    )


def ephemeral_info(plaintext: bytes, receiver_session_id: bytes | None = None) -> dict[str, Any]:
    plain = EphemeralPlaintext.decode(plaintext)
    info: dict[str, Any] = {
        "type": EPHEMERAL_TYPE_NAMES[EphemeralType(plain.type)],
        "sessionId": b64encode(plain.session_id),
        "counter": plain.counter,
    }
    if receiver_session_id is not None:
        info["receiverSessionId"] = b64encode(receiver_session_id)
    return info


def add_ephemeral(
    cases: Cases, name: str, message: Message, receiver_session_id: bytes | None = None
) -> None:
    plaintext = sealing.open_message(message, DOCUMENT_KEY)
    cases.add(name, message, plaintext, ephemeral=ephemeral_info(plaintext, receiver_session_id))


def cli_seal(kind: str, public_data: dict[str, Any], plaintext: bytes) -> dict[str, Any]:
    """``secsync message seal`` with the plaintext on stdin; returns the printed JSON."""
    result = subprocess.run(
        [
            str(SECSYNC_CLI),
            "message",
            "seal",
            "--kind",
            kind,
            f"--key={b64encode(DOCUMENT_KEY)}",  # "=" form: base64url may start with "-"
            f"--signing-key={SIGNING_SECRET_KEY}",
            "--public-data",
            json.dumps(public_data, ensure_ascii=False),
        ],
        input=plaintext,
        capture_output=True,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def build(js_sealed: Path) -> list[dict[str, Any]]:
    cases = Cases()

    # --- snapshots: a proof chain of three, extra public data, a non-ASCII docId
    seal_snapshot(cases, "snapshot-initial", b"Hello World")
    seal_snapshot(
        cases, "snapshot-child", os.urandom(200), parent="snapshot-initial", clocks={PUB_KEY: 7}
    )
    seal_snapshot(
        cases,
        "snapshot-grandchild",
        "Grüße aus dem Enkel 👋".encode(),
        parent="snapshot-child",
        clocks={os.urandom(32): 3, PUB_KEY: 0},
    )
    seal_snapshot(
        cases,
        "snapshot-extra-public-data",
        b"snapshot with key derivation trace",
        extra={
            "keyDerivationTrace": {
                "workspaceKeyId": "wk_0123456789",
                "trace": [
                    {"entryId": "e1", "subkeyId": 0, "parentId": None, "context": "doc_ctx"},
                    {
                        "entryId": "e2",
                        "subkeyId": 2**53 - 1,
                        "parentId": "e1",
                        "context": "ünïcödé ✓",
                        "negative": -42,
                        "flag": True,
                    },
                ],
                "\uff5a": "fullwidth z",
                "😀": "astral key",
                "Z": 1,
                "a": [],
                "escapes": 'quote " backslash \\ newline \n tab \t ctrl \x01 del \x7f ls \u2028 /',
            }
        },
    )
    seal_snapshot(cases, "snapshot-non-ascii-docid", "ä".encode(), doc_id=NON_ASCII_DOC_ID)

    seal_snapshot(cases, "snapshot-docid-escapes", b"escapes", doc_id=ESCAPES_DOC_ID)

    # --- updates
    changes = json.dumps([b64encode(os.urandom(17)), b64encode(bytes([0, 255, 128]))])
    seal_update(cases, "update-clock-0", changes.encode(), 0, "snapshot-initial")
    seal_update(cases, "update-clock-7", os.urandom(64), 7, "snapshot-initial")
    seal_update(cases, "update-empty-content", b"", 1, "snapshot-initial")
    seal_update(
        cases,
        "update-extra-public-data",
        b"update with extras",
        2,
        "snapshot-initial",
        extra={"origin": {"app": "ünï", "build": 12}},
    )
    seal_update(cases, "update-non-ascii-docid", "ö".encode(), 0, "snapshot-non-ascii-docid")

    seal_update(cases, "update-docid-escapes", b"escapes", 0, "snapshot-docid-escapes")

    # --- ephemeral messages, through the session object that real peers use
    session_a = EphemeralSessions(DOC_ID, SIGNER)
    add_ephemeral(
        cases,
        "ephemeral-initialize",
        session_a.create(DOCUMENT_KEY, b"", EphemeralType.INITIALIZE),
    )
    add_ephemeral(cases, "ephemeral-message", session_a.create(DOCUMENT_KEY, os.urandom(40)))
    plain = EphemeralPlaintext(
        EphemeralType.MESSAGE, session_a.session_id, 4294967294, bytes([1, 2, 3, 0xFF])
    )
    add_ephemeral(
        cases,
        "ephemeral-message-non-ascii-docid",
        sealing.seal(
            EphemeralPublicData(doc_id=NON_ASCII_DOC_ID, pub_key=PUB_KEY),
            plain.encode(),
            DOCUMENT_KEY,
            SIGNER,
        ),
    )
    # Answer the JS-sealed initialize: the proof must verify for the JS session that sent it.
    js_initialize = next(
        c for c in json.loads(js_sealed.read_text("utf-8")) if c["name"] == "ephemeral-initialize"
    )
    js_session_id = b64decode(js_initialize["ephemeral"]["sessionId"])
    session_b = EphemeralSessions(DOC_ID, SIGNER)
    result = session_b.receive(wire.from_json_dict(js_initialize["message"]), DOCUMENT_KEY, now=0.0)
    (reply,) = result.replies
    add_ephemeral(cases, "ephemeral-proof-and-request-proof", reply, js_session_id)

    # --- the same through the command line
    initial = cases.snapshot("snapshot-initial").public_data
    cli_cases: list[tuple[str, str, dict[str, Any], bytes]] = [
        (
            "cli-snapshot-child",
            "snapshot",
            {
                "docId": DOC_ID,
                "snapshotId": b64encode(crypto.generate_id()),
                "parentSnapshotId": b64encode(initial.snapshot_id),
                "parentSnapshotProof": b64encode(child_proof(cases.snapshot("snapshot-initial"))),
                "parentSnapshotUpdateClocks": {SIGNING_PUBLIC_KEY: 4},
                "keyDerivationTrace": {"workspaceKeyId": "wk", "trace": []},
            },
            "snapshot via the CLI ✓".encode(),
        ),
        (
            "cli-update",
            "update",
            {"docId": DOC_ID, "refSnapshotId": b64encode(initial.snapshot_id), "clock": 3},
            os.urandom(33),
        ),
        (
            "cli-ephemeral-message",
            "ephemeral",
            {"docId": NON_ASCII_DOC_ID},
            EphemeralPlaintext(EphemeralType.MESSAGE, crypto.generate_id(), 0, b"cli").encode(),
        ),
    ]
    for name, kind, public_data, plaintext in cli_cases:
        message_json = cli_seal(kind, public_data, plaintext)
        message = wire.from_json_dict(message_json)
        parent = "snapshot-initial" if kind != "ephemeral" else None
        ephemeral = ephemeral_info(plaintext) if kind == "ephemeral" else None
        cases.add(
            name, message, plaintext, parent=parent, ephemeral=ephemeral, message_json=message_json
        )
    return cases.cases


def main(argv: list[str]) -> int:
    output = Path(argv[1]) if len(argv) > 1 else FIXTURES / "python_sealed.json"
    cases = build(FIXTURES / "js_sealed.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for case in cases:
        print(f"sealed {case['kind']:<9} {case['name']}")
    print(f"wrote {len(cases)} cases to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
