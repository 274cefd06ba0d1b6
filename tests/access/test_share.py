"""Share links: derivation, parsing, joining from the link alone, wrong passphrases."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from typing import Any

import nacl.pwhash.argon2id
import pycrdt
import pytest

import secsync
from secsync.access.share import ARGON2ID_LIMITS, ShareLink, open_shared
from secsync.config import SecsyncConfig
from secsync.errors import InvalidShareLinkError, WrongPassphraseError
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.encoding import b64encode
from tests.factories import plain_yjs_doc

FAST_ARGON = {"opslimit": 1, "memlimit": 8192}

# Made by the release before links carried a version (Argon2id at libsodium's INTERACTIVE
# limits, passphrase bytes as typed): the link, and the keys it derived.
OLD_LINK = "notes#2026#DQKWngPoq8nQijnhAhnRXa6EdidUJXI1nl1J9b2F81o"
OLD_KEYS = {
    None: "8b3bd96efcab50ee167bfd1931a83af5d4b7074a1cc7b2533c4686919da338e2",
    "correct horse battery": "d02e5c3c5a14b4f01f0891b02b245cba47ca6743af28ccb6022fac7c5a83fe8d",
    "caf\u00e9": "a8c4947fd58ab90f25a64c565470d99ddf1b41bfdb158dc8af0eecc83828e1d1",
}


def test_link_round_trip_and_key_derivation() -> None:
    link = ShareLink.create("doc#with#hashes")
    parsed = ShareLink.parse(str(link))
    assert parsed == link and parsed.doc_id == "doc#with#hashes"
    assert b64encode(link.secret) not in repr(link)
    key = link.document_key()
    assert len(key) == 32 and key == parsed.document_key()
    with_pass = link.document_key("correct horse", **FAST_ARGON)
    assert with_pass != key
    assert with_pass == link.document_key("correct horse", **FAST_ARGON)
    assert with_pass != link.document_key("wrong horse", **FAST_ARGON)
    other_doc = ShareLink("other", link.secret)
    assert other_doc.document_key() != key  # the document id is bound in


def test_a_link_without_version_marker_derives_the_keys_it_always_did() -> None:
    link = ShareLink.parse(OLD_LINK)
    assert link.doc_id == "notes#2026" and link.version == 1
    assert str(link) == OLD_LINK  # printed again as it was given
    for passphrase, key in OLD_KEYS.items():
        assert link.document_key(passphrase).hex() == key
    new = ShareLink(link.doc_id, link.secret)
    assert new.version == 2 and str(new) == f"notes#2026#v2.{OLD_LINK.rpartition('#')[2]}"
    assert new.document_key() == link.document_key()  # no passphrase: versions agree
    assert new.document_key("correct horse battery").hex() != OLD_KEYS["correct horse battery"]


def test_new_links_stretch_passphrases_with_the_moderate_limits(monkeypatch) -> None:
    calls: list[tuple[int, int]] = []
    kdf = nacl.pwhash.argon2id.kdf

    def recording(*args: Any, opslimit: int, memlimit: int, **kwargs: Any) -> bytes:
        calls.append((opslimit, memlimit))
        result: bytes = kdf(*args, opslimit=1, memlimit=8192, **kwargs)  # fast: params seen
        return result

    monkeypatch.setattr(nacl.pwhash.argon2id, "kdf", recording)
    link = ShareLink.parse(str(ShareLink.create("d")))
    assert link.version == 2
    link.document_key("pw")
    ShareLink.parse(OLD_LINK).document_key("pw")
    assert calls == [
        (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE),
        (nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE),
    ]
    assert ARGON2ID_LIMITS[2][1] == 256 * 1024 * 1024 and ARGON2ID_LIMITS[2][0] == 3


def test_nfc_and_nfd_passphrases_derive_the_same_key() -> None:
    composed, decomposed = "caf\u00e9 cr\u00e8me", "cafe\u0301 cre\u0300me"
    assert composed != decomposed and unicodedata.normalize("NFC", decomposed) == composed
    link = ShareLink.create("accents")
    assert link.document_key(composed, **FAST_ARGON) == link.document_key(decomposed, **FAST_ARGON)
    assert link.document_key(composed, **FAST_ARGON) != link.document_key(
        "cafe creme", **FAST_ARGON
    )
    # version 1 kept the bytes as typed: its NFC key is the one it derived before
    old = ShareLink.parse(OLD_LINK)
    assert old.document_key("cafe\u0301").hex() != OLD_KEYS["caf\u00e9"]


@pytest.mark.parametrize(
    "bad",
    ["", "no-hash", "#AAAA", "doc#not base64", "doc#AAAA", "doc#v9." + "A" * 43, "doc#v2.AAAA"],
)
def test_invalid_links(bad: str) -> None:
    with pytest.raises(InvalidShareLinkError):
        ShareLink.parse(bad)


@pytest.mark.parametrize("passphrase", [None, "s3cret passphrase", "cafe\u0301"])
async def test_second_client_joins_from_the_link_alone(broker, passphrase: str | None) -> None:
    """With a passphrase: the real MODERATE derivation, three times (owner, guest, stranger)."""
    link = ShareLink.create(f"shared-{passphrase is not None}")
    config = SecsyncConfig(batch_interval=0.002)
    async with secsync.connect(broker.url, config=config) as owner:
        ydoc: pycrdt.Doc = plain_yjs_doc()
        doc = await open_shared(owner, link, crdt=ydoc, passphrase=passphrase)
        ydoc.get("text", type=pycrdt.Text).insert(0, "hello from the owner")
        await doc.flush(5)
    async with secsync.connect(broker.url, config=config) as guest:
        theirs: pycrdt.Doc = plain_yjs_doc()
        # the guest types the passphrase composed (NFC), the owner may have typed it decomposed
        typed = unicodedata.normalize("NFC", passphrase) if passphrase else None
        joined = await open_shared(guest, str(link), crdt=theirs, passphrase=typed)
        assert str(theirs.get("text", type=pycrdt.Text)) == "hello from the owner"
        assert joined.session.public_key != doc.session.public_key  # a fresh anonymous identity
    if passphrase:
        async with secsync.connect(broker.url, config=config) as stranger:
            with pytest.raises(WrongPassphraseError):
                await open_shared(stranger, str(link), crdt=plain_yjs_doc(), passphrase="nope")
            assert stranger.documents == {}  # the failed open left nothing behind


async def test_cli_share_and_join(broker) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "secsync.cli", "share", "cli-doc"],
        capture_output=True,
        text=True,
        check=True,
    )
    link = created.stdout.strip()
    assert ShareLink.parse(link).doc_id == "cli-doc"

    def join(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "secsync.cli", "join", link, f"--url={broker.url}", *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = join("--passphrase=pw", "--create", "--append=written by the CLI")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "written by the CLI"
    again = join("--passphrase=pw")
    assert again.stdout.strip() == "written by the CLI"
    wrong = join("--passphrase=wrong")
    assert wrong.returncode == 1 and "error 1002" in wrong.stderr


async def test_an_old_link_opens_the_document_it_was_made_for(broker) -> None:
    """The document was written under the key the old release derived from the link."""
    config = SecsyncConfig(batch_interval=0.002)
    old_key = bytes.fromhex(OLD_KEYS["correct horse battery"])
    async with secsync.connect(broker.url, config=config) as owner:
        ydoc: pycrdt.Doc = plain_yjs_doc()
        doc = await owner.open(
            "notes#2026", key=old_key, signing_key=SigningKeyPair.generate(), crdt=ydoc
        )
        ydoc.get("text", type=pycrdt.Text).insert(0, "written before links had versions")
        await doc.flush(5)
    async with secsync.connect(broker.url, config=config) as guest:
        theirs: pycrdt.Doc = plain_yjs_doc()
        await open_shared(guest, OLD_LINK, crdt=theirs, passphrase="correct horse battery")
        assert str(theirs.get("text", type=pycrdt.Text)) == "written before links had versions"
