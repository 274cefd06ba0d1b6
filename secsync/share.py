"""Share links: anyone holding ``<document id>#<secret>`` (and the passphrase, if one is set)
can derive the document key. The secret never reaches the broker: the part after ``#`` is, as
in a URL fragment, for the participants only.

Key derivation (all libsodium through PyNaCl):

* without a passphrase: ``key = BLAKE2b-256(key=secret, data="secsync-doc-key" ‖ docId)``;
* with one: ``stretched = Argon2id(passphrase, salt = BLAKE2b-128(secret ‖ docId))`` and
  ``key = BLAKE2b-256(key=secret, data="secsync-doc-key" ‖ docId ‖ 0x00 ‖ stretched)``,
  so the passphrase alone opens nothing and the link alone opens nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nacl.encoding
import nacl.hash
import nacl.pwhash.argon2id

from secsync.errors import (
    InvalidShareLinkError,
    SecsyncError,
    WrongKeyError,
    WrongPassphraseError,
)
from secsync.protocol.encoding import b64decode, b64encode

if TYPE_CHECKING:
    from secsync.protocol.crypto import SigningKeyPair
    from secsync.transport.client import SecsyncClient
    from secsync.transport.document import Document

SECRET_BYTES = 32
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


@dataclass(frozen=True, slots=True, repr=False)
class ShareLink:
    doc_id: str
    secret: bytes

    @classmethod
    def create(cls, doc_id: str) -> ShareLink:
        """A new link with a fresh 32-byte secret."""
        if not doc_id:
            raise InvalidShareLinkError("a share link needs a document id")
        return cls(doc_id, os.urandom(SECRET_BYTES))

    @classmethod
    def parse(cls, text: str) -> ShareLink:
        doc_id, sep, secret = text.strip().rpartition("#")
        if not sep or not doc_id:
            raise InvalidShareLinkError()
        try:
            raw = b64decode(secret)
        except SecsyncError:
            raise InvalidShareLinkError("the secret part of the link is not base64url") from None
        if len(raw) != SECRET_BYTES:
            raise InvalidShareLinkError("the secret part of the link has the wrong length")
        return cls(doc_id, raw)

    def __str__(self) -> str:
        return f"{self.doc_id}#{b64encode(self.secret)}"

    def __repr__(self) -> str:
        return f"ShareLink(doc_id={self.doc_id!r}, secret=<hidden>)"

    def document_key(
        self, passphrase: str | None = None, *, opslimit: int = OPSLIMIT, memlimit: int = MEMLIMIT
    ) -> bytes:
        """The 32-byte document key this link (and passphrase) stands for."""
        doc = self.doc_id.encode("utf-8")
        data = b"secsync-doc-key" + doc
        if passphrase:
            salt = nacl.hash.blake2b(
                self.secret + doc, digest_size=16, encoder=nacl.encoding.RawEncoder
            )
            stretched = nacl.pwhash.argon2id.kdf(
                32, passphrase.encode("utf-8"), salt, opslimit=opslimit, memlimit=memlimit
            )
            data += b"\x00" + stretched
        key: bytes = nacl.hash.blake2b(
            data, digest_size=32, key=self.secret, encoder=nacl.encoding.RawEncoder
        )
        return key


async def open_shared(
    client: SecsyncClient,
    link: ShareLink | str,
    *,
    crdt: object,
    passphrase: str | None = None,
    signing_key: SigningKeyPair | None = None,
) -> Document:
    """Open the document a share link points to, as an anonymous participant by default.

    Raises :class:`WrongPassphraseError` when the derived key does not open the document.
    """
    from secsync.protocol.crypto import SigningKeyPair as _SigningKeyPair

    link = ShareLink.parse(link) if isinstance(link, str) else link
    key = link.document_key(passphrase)
    try:
        return await client.open(
            link.doc_id,
            key=key,
            signing_key=signing_key or _SigningKeyPair.generate(),
            crdt=crdt,
        )
    except WrongKeyError:
        raise WrongPassphraseError() from None
