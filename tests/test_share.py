"""Share links: derivation, parsing, joining from the link alone, wrong passphrases."""

from __future__ import annotations

import subprocess
import sys

import pycrdt
import pytest

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import InvalidShareLinkError, WrongPassphraseError
from secsync.protocol.encoding import b64encode
from secsync.share import ShareLink, open_shared

FAST_ARGON = {"opslimit": 1, "memlimit": 8192}


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


@pytest.mark.parametrize("bad", ["", "no-hash", "#AAAA", "doc#not base64", "doc#AAAA"])
def test_invalid_links(bad: str) -> None:
    with pytest.raises(InvalidShareLinkError):
        ShareLink.parse(bad)


@pytest.mark.parametrize("passphrase", [None, "s3cret passphrase"])
async def test_second_client_joins_from_the_link_alone(broker, passphrase: str | None) -> None:
    link = ShareLink.create(f"shared-{passphrase is not None}")
    config = SecsyncConfig(batch_interval=0.002)
    async with secsync.connect(broker.url, config=config) as owner:
        ydoc: pycrdt.Doc = pycrdt.Doc()
        doc = await open_shared(owner, link, crdt=ydoc, passphrase=passphrase)
        ydoc.get("text", type=pycrdt.Text).insert(0, "hello from the owner")
        await doc.flush(5)
    async with secsync.connect(broker.url, config=config) as guest:
        theirs: pycrdt.Doc = pycrdt.Doc()
        joined = await open_shared(guest, str(link), crdt=theirs, passphrase=passphrase)
        assert str(theirs.get("text", type=pycrdt.Text)) == "hello from the owner"
        assert joined.session.public_key != doc.session.public_key  # a fresh anonymous identity
    if passphrase:
        async with secsync.connect(broker.url, config=config) as stranger:
            with pytest.raises(WrongPassphraseError):
                await open_shared(stranger, str(link), crdt=pycrdt.Doc(), passphrase="nope")
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
