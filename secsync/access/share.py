"""Share links: anyone holding ``<document id>#<secret>`` (and the passphrase, if one is set)
can derive the document key. The secret never reaches the broker: the part after ``#`` is, as
in a URL fragment, for the participants only.

Link format: ``<document id>#v2.<secret, base64url>`` for links made now; a link without a
version marker (``<document id>#<secret>``) is version 1. The version says how a passphrase is
stretched, so links made by earlier releases keep opening.

Key derivation (all libsodium through PyNaCl):

* without a passphrase (every version): ``key = BLAKE2b-256(key=secret, data="secsync-doc-key"
  ‖ docId)``;
* with one: ``stretched = Argon2id(passphrase, salt = BLAKE2b-128(secret ‖ docId))`` and
  ``key = BLAKE2b-256(key=secret, data="secsync-doc-key" ‖ docId ‖ 0x00 ‖ stretched)``,
  so the passphrase alone opens nothing and the link alone opens nothing. Version 2 stretches
  the passphrase normalised to Unicode NFC with libsodium's MODERATE limits; version 1 took its
  UTF-8 bytes as typed, with the INTERACTIVE limits.
"""

from __future__ import annotations

import os
import re
import unicodedata
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
    from collections.abc import Callable

    from secsync.crdt import CrdtDocument
    from secsync.protocol.crypto import SigningKeyPair
    from secsync.transport.client import SecsyncClient
    from secsync.transport.document import Document
    from secsync.transport.events import LoadProgress

SECRET_BYTES = 32
VERSION = 2
"""The link version :meth:`ShareLink.create` makes."""
ARGON2ID_LIMITS: dict[int, tuple[int, int]] = {
    1: (nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE),
    2: (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE),
}
"""Argon2id (opslimit, memlimit) of each link version."""
_MARKER = re.compile(r"v([0-9]+)\.")


@dataclass(frozen=True, slots=True, repr=False)
class ShareLink:
    doc_id: str
    secret: bytes
    version: int = VERSION
    """How a passphrase is stretched: see :data:`ARGON2ID_LIMITS`."""

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
        version = 1  # no marker: made before links carried one
        # "." is not in the base64url alphabet, so a version-1 secret never looks like a marker
        marker = _MARKER.match(secret)
        if marker:
            version = int(marker.group(1))
            secret = secret[marker.end() :]
        if version not in ARGON2ID_LIMITS:
            raise InvalidShareLinkError(f"share link version {version} is not supported")
        try:
            raw = b64decode(secret)
        except SecsyncError:
            raise InvalidShareLinkError("the secret part of the link is not base64url") from None
        if len(raw) != SECRET_BYTES:
            raise InvalidShareLinkError("the secret part of the link has the wrong length")
        return cls(doc_id, raw, version)

    def __str__(self) -> str:
        marker = "" if self.version == 1 else f"v{self.version}."
        return f"{self.doc_id}#{marker}{b64encode(self.secret)}"

    def __repr__(self) -> str:
        return f"ShareLink(doc_id={self.doc_id!r}, secret=<hidden>, version={self.version})"

    @property
    def limits(self) -> tuple[int, int]:
        """Argon2id ``(opslimit, memlimit)`` of this link's version."""
        try:
            return ARGON2ID_LIMITS[self.version]
        except KeyError:
            raise InvalidShareLinkError(
                f"share link version {self.version} is not supported"
            ) from None

    def document_key(
        self,
        passphrase: str | None = None,
        *,
        opslimit: int | None = None,
        memlimit: int | None = None,
    ) -> bytes:
        """The 32-byte document key this link (and passphrase) stands for.

        ``opslimit``/``memlimit`` override the version's Argon2id limits (tests only: a link
        opened with other limits derives another key).
        """
        default_ops, default_mem = self.limits
        doc = self.doc_id.encode("utf-8")
        data = b"secsync-doc-key" + doc
        if passphrase:
            if self.version >= 2:
                # the same passphrase typed on another keyboard or OS may arrive decomposed
                passphrase = unicodedata.normalize("NFC", passphrase)
            salt = nacl.hash.blake2b(
                self.secret + doc, digest_size=16, encoder=nacl.encoding.RawEncoder
            )
            stretched = nacl.pwhash.argon2id.kdf(
                32,
                passphrase.encode("utf-8"),
                salt,
                opslimit=default_ops if opslimit is None else opslimit,
                memlimit=default_mem if memlimit is None else memlimit,
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
    crdt: CrdtDocument,
    passphrase: str | None = None,
    signing_key: SigningKeyPair | None = None,
    on_progress: Callable[[LoadProgress], None] | None = None,
) -> Document:
    """Open the document a share link points to, as an anonymous participant by default
    (``on_progress`` as for :meth:`SecsyncClient.open`).

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
            on_progress=on_progress,
        )
    except WrongKeyError:
        raise WrongPassphraseError() from None
