"""The cryptography of secsync, byte-exact with the JavaScript reference.

* XChaCha20-Poly1305-IETF with a random 24-byte nonce and a 32-byte document key;
* a commitment ("robustness") tag, HMAC-SHA-512-256 keyed by the document key over
  ``nonceB64 + b64(aead_output) + aadB64``, prepended to the AEAD output and checked first;
* Ed25519 signatures over ``domain + canonical_json({ciphertext, nonce, publicData: aadB64})``;
* BLAKE2b-256 hashes of UTF-8 strings, base64url encoded.

Every primitive comes from PyNaCl (libsodium) or the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Final

import nacl.bindings
import nacl.exceptions
import nacl.signing

from secsync.errors import InvalidKeyError
from secsync.protocol.encoding import b64decode, b64encode, b64encode_ascii, canonical_json

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
TAG_BYTES: Final = 32  # commitment tag
AEAD_TAG_BYTES: Final = 16
CIPHERTEXT_OVERHEAD: Final = TAG_BYTES + AEAD_TAG_BYTES
SIGNATURE_BYTES: Final = 64
PUBLIC_KEY_BYTES: Final = 32
ID_BYTES: Final = 24
HASH_BYTES: Final = 32

DOMAIN_SNAPSHOT: Final = "secsync_snapshot"
DOMAIN_UPDATE: Final = "secsync_update"
DOMAIN_EPHEMERAL: Final = "secsync_ephemeral_message"
DOMAIN_SESSION_PROOF: Final = "secsync_ephemeral_session_proof"

# hash("") chain start: the proof every initial snapshot carries.
INITIAL_PARENT_PROOF_B64: Final = "k_CZR7BveaeM7FOc0TYtEtTtTi0ElwG9XrDVLxb9tR0"


class CryptoFailure(Exception):
    """A verification or decryption failed; callers map it to the kind-specific error."""


@dataclass(frozen=True, slots=True, repr=False)
class SigningKeyPair:
    """An Ed25519 identity. ``repr`` never shows the secret."""

    signing_key: nacl.signing.SigningKey
    _public: bytes = field(init=False, default=b"", compare=False)
    _secret: bytes = field(init=False, default=b"", compare=False)

    def __post_init__(self) -> None:
        public = bytes(self.signing_key.verify_key)
        object.__setattr__(self, "_public", public)
        object.__setattr__(self, "_secret", bytes(self.signing_key) + public)

    @classmethod
    def generate(cls) -> SigningKeyPair:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_secret(cls, secret: bytes) -> SigningKeyPair:
        """From a 32-byte seed or a 64-byte libsodium secret key (seed ‖ public key)."""
        if len(secret) == 64:
            seed, public = secret[:32], secret[32:]
            pair = cls(nacl.signing.SigningKey(seed))
            if pair.public_key != public:
                raise InvalidKeyError("secret key's public half does not match its seed")
            return pair
        if len(secret) == 32:
            return cls(nacl.signing.SigningKey(secret))
        raise InvalidKeyError("a signing secret is 32 (seed) or 64 (libsodium) bytes")

    @classmethod
    def from_b64(cls, text: str) -> SigningKeyPair:
        """From the text form :meth:`to_b64` writes (``signingSecretKey`` of ``keygen``)."""
        return cls.from_secret(b64decode(text.strip()))

    def to_b64(self) -> str:
        """The secret key as text (unpadded base64url of the 64-byte form): store it like a
        password; :meth:`from_b64` reads it back."""
        return b64encode(self.secret_key)

    @property
    def public_key(self) -> bytes:
        return self._public

    @property
    def secret_key(self) -> bytes:
        """The 64-byte libsodium form (seed ‖ public key), as secsync JS stores it."""
        return self._secret

    def sign(self, message: bytes) -> bytes:
        """A detached Ed25519 signature (libsodium ``crypto_sign``, its first 64 bytes)."""
        signed: bytes = nacl.bindings.crypto_sign(message, self.secret_key)
        return signed[:SIGNATURE_BYTES]

    def __repr__(self) -> str:
        return f"SigningKeyPair(public_key={b64encode(self.public_key)!r})"


def document_token(doc_id: str, size: int = 20) -> str:
    """An opaque hex token for ``doc_id`` (broker subjects, logs): personalised BLAKE2b."""
    return hashlib.blake2b(
        doc_id.encode("utf-8"), digest_size=size, person=b"secsync-subject"
    ).hexdigest()


def check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise InvalidKeyError("a document key is 32 bytes")
    return bytes(key)


def generate_key() -> bytes:
    """A new random 32-byte document key."""
    return os.urandom(KEY_BYTES)


def generate_id() -> bytes:
    """24 random bytes, the raw form of a secsync id (32 base64url characters)."""
    return os.urandom(ID_BYTES)


def random_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


# --- the AEAD and Ed25519 verification, straight into PyNaCl's libsodium -----------------------
#
# ``nacl.bindings``' AEAD functions check their arguments with ``ensure(...)`` calls whose error
# messages are ``str.format``-ed eagerly on every call, which costs twice the cipher itself on a
# short update. Where the callers here have already checked the sizes (nonce 24 bytes, key 32,
# ciphertext at least the tags; public key 32, signature 64), the same libsodium function is
# called through PyNaCl's own cffi module (which, like the bindings, releases the GIL around
# it); anything else goes through the public binding, unchanged.

try:
    _sodium: Any = importlib.import_module("nacl._sodium")
    _ffi: Any = _sodium.ffi
    _aead_encrypt_c: Any = _sodium.lib.crypto_aead_xchacha20poly1305_ietf_encrypt
    _aead_decrypt_c: Any = _sodium.lib.crypto_aead_xchacha20poly1305_ietf_decrypt
    _sign_open_c: Any = _sodium.lib.crypto_sign_open
except (ImportError, AttributeError):  # pragma: no cover - every PyNaCl release has both
    _sodium = None


def _direct(data: object, nonce: object, key: object) -> bool:
    return (
        _sodium is not None
        and type(data) is bytes
        and type(nonce) is bytes
        and type(key) is bytes
        and len(nonce) == NONCE_BYTES
        and len(key) == KEY_BYTES
    )


def _aead_encrypt(plaintext: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """XChaCha20-Poly1305-IETF, ``crypto_aead_xchacha20poly1305_ietf_encrypt``."""
    if not _direct(plaintext, nonce, key) or type(ad) is not bytes:
        out: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, ad, nonce, key
        )
        return out
    buffer = _ffi.new("unsigned char[]", len(plaintext) + AEAD_TAG_BYTES)
    if (
        _aead_encrypt_c(
            buffer, _ffi.NULL, plaintext, len(plaintext), ad, len(ad), _ffi.NULL, nonce, key
        )
        != 0
    ):  # pragma: no cover - libsodium only fails on inputs above 2^64 bytes
        raise nacl.exceptions.CryptoError("Encryption failed.")
    sealed: bytes = _ffi.buffer(buffer)[:]
    return sealed


def _aead_decrypt(aead: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """Inverse of :func:`_aead_encrypt`; raises ``CryptoFailure`` when authentication fails."""
    if not _direct(aead, nonce, key) or type(ad) is not bytes or len(aead) < AEAD_TAG_BYTES:
        try:
            out: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                aead, ad, nonce, key
            )
        except nacl.exceptions.CryptoError as exc:
            raise CryptoFailure("AEAD authentication failed") from exc
        return out
    buffer = _ffi.new("unsigned char[]", len(aead) - AEAD_TAG_BYTES)
    if _aead_decrypt_c(buffer, _ffi.NULL, _ffi.NULL, aead, len(aead), ad, len(ad), nonce, key):
        raise CryptoFailure("AEAD authentication failed")
    plaintext: bytes = _ffi.buffer(buffer)[:]
    return plaintext


# --- the commitment tag and the AEAD ------------------------------------------------------------

_HMAC_BLOCK = 128  # SHA-512's block size
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def commitment_tag(key: bytes, nonce_b64: str, aead_b64: str, aad_b64: str) -> bytes:
    """HMAC-SHA-512 truncated to 32 bytes (libsodium ``crypto_auth``)."""
    message = (nonce_b64 + aead_b64 + aad_b64).encode("ascii")
    return hmac.digest(key, message, "sha512")[:TAG_BYTES]


class Cipher:
    """One document key, ready to seal and open many messages.

    The commitment tag is HMAC-SHA-512 (RFC 2104) with the key's two padded blocks hashed once
    here; each tag then only copies those two SHA-512 states (what ``hmac.HMAC.copy`` does),
    which halves its cost against a one-shot ``hmac.digest``. The bytes are the same.
    ``repr`` never shows the key.
    """

    __slots__ = ("_inner", "_outer", "key")

    @classmethod
    def of(cls, key: bytes) -> Cipher | bytes:
        """A ``Cipher`` for a well-formed key; anything else is handed back unchanged, so that
        it fails where and as it always did (in :func:`decrypt`)."""
        return cls(key) if type(key) is bytes and len(key) == KEY_BYTES else key

    def __init__(self, key: bytes) -> None:
        self.key = check_key(key)
        block = self.key.ljust(_HMAC_BLOCK, b"\0")
        self._inner = hashlib.sha512(block.translate(_IPAD))
        self._outer = hashlib.sha512(block.translate(_OPAD))

    def tag(self, message: bytes) -> bytes:
        """HMAC-SHA-512-256 of ``message`` under this key (the commitment tag)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:TAG_BYTES]

    def encrypt(self, plaintext: bytes, aad_b64: bytes, nonce: bytes) -> bytes:
        """``tag32 ‖ xchacha20poly1305(plaintext)``; ``aad_b64`` as ASCII bytes."""
        aead = _aead_encrypt(plaintext, aad_b64, nonce, self.key)
        return self.tag(b"".join((b64encode_ascii(nonce), b64encode_ascii(aead), aad_b64))) + aead

    def decrypt(self, ciphertext: bytes, nonce: bytes, aad_b64: bytes) -> bytes:
        """Check the commitment tag in constant time, then decrypt; raise ``CryptoFailure``."""
        if len(ciphertext) < CIPHERTEXT_OVERHEAD or len(nonce) != NONCE_BYTES:
            raise CryptoFailure("ciphertext too short")
        aead = ciphertext[TAG_BYTES:]
        expected = self.tag(b"".join((b64encode_ascii(nonce), b64encode_ascii(aead), aad_b64)))
        if not hmac.compare_digest(ciphertext[:TAG_BYTES], expected):
            raise CryptoFailure("invalid robustness tag")
        return _aead_decrypt(aead, aad_b64, nonce, self.key)

    def __repr__(self) -> str:
        return "Cipher(<hidden>)"


def encrypt(plaintext: bytes, aad_b64: str, key: bytes, nonce: bytes) -> bytes:
    """Return ``tag32 ‖ xchacha20poly1305(plaintext)`` for the given nonce."""
    aead = _aead_encrypt(plaintext, aad_b64.encode("ascii"), nonce, key)
    tag = commitment_tag(key, b64encode(nonce), b64encode(aead), aad_b64)
    return tag + aead


def decrypt(ciphertext: bytes, nonce: bytes, aad_b64: str, key: bytes) -> bytes:
    """Verify the commitment tag in constant time, then decrypt; raise ``CryptoFailure``."""
    return decrypt_ascii(ciphertext, nonce, aad_b64.encode("ascii"), key)


def decrypt_ascii(ciphertext: bytes, nonce: bytes, aad_b64: bytes, key: bytes) -> bytes:
    """:func:`decrypt` with the AAD as ASCII bytes."""
    if len(ciphertext) < CIPHERTEXT_OVERHEAD or len(nonce) != NONCE_BYTES:
        raise CryptoFailure("ciphertext too short")
    aead = ciphertext[TAG_BYTES:]
    message = b"".join((b64encode_ascii(nonce), b64encode_ascii(aead), aad_b64))
    expected = hmac.digest(key, message, "sha512")[:TAG_BYTES]
    if not hmac.compare_digest(ciphertext[:TAG_BYTES], expected):
        raise CryptoFailure("invalid robustness tag")
    return _aead_decrypt(aead, aad_b64, nonce, key)


# --- signatures ---------------------------------------------------------------------------------

_SIGNED_PREFIXES: dict[str, bytes] = {}
_SIGNED_NONCE = b'","nonce":"'
_SIGNED_PUBLIC_DATA = b'","publicData":"'
_SIGNED_END = b'"}'


def signed_bytes(domain: str, ciphertext_b64: str, nonce_b64: str, aad_b64: str) -> bytes:
    """``domain + canonical_json({"ciphertext", "nonce", "publicData"})`` as UTF-8.

    All three values are base64url, which needs no JSON escaping, so the canonical form is
    assembled directly.
    """
    return (
        f'{domain}{{"ciphertext":"{ciphertext_b64}","nonce":"{nonce_b64}",'
        f'"publicData":"{aad_b64}"}}'
    ).encode("ascii")


def signed_input(domain: str, ciphertext_b64: bytes, nonce_b64: bytes, aad_b64: bytes) -> bytes:
    """:func:`signed_bytes` from ASCII bytes."""
    prefix = _SIGNED_PREFIXES.get(domain)
    if prefix is None:
        prefix = _SIGNED_PREFIXES[domain] = (domain + '{"ciphertext":"').encode("ascii")
    return b"".join(
        (
            prefix,
            ciphertext_b64,
            _SIGNED_NONCE,
            nonce_b64,
            _SIGNED_PUBLIC_DATA,
            aad_b64,
            _SIGNED_END,
        )
    )


def sign_message(
    signer: SigningKeyPair, domain: str, ciphertext_b64: str, nonce_b64: str, aad_b64: str
) -> bytes:
    return signer.sign(signed_bytes(domain, ciphertext_b64, nonce_b64, aad_b64))


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    signed = signature + message
    if _sodium is not None and type(signed) is bytes and type(public_key) is bytes:
        # nacl.bindings.crypto_sign_open without its second allocation and the copy of the
        # message it returns: the same libsodium call, and its verdict
        buffer = _ffi.new("unsigned char[]", len(signed))
        return bool(_sign_open_c(buffer, _ffi.NULL, signed, len(signed), public_key) == 0)
    try:
        nacl.bindings.crypto_sign_open(signed, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
        return False
    return True


def hash_b64(text: str) -> str:
    """base64url(BLAKE2b-256(UTF-8(text))), secsync's ``hash``."""
    return b64encode(hashlib.blake2b(text.encode("utf-8"), digest_size=HASH_BYTES).digest())


def ciphertext_hash(ciphertext: bytes) -> str:
    """Hash of a snapshot ciphertext: BLAKE2b-256 of its base64url *string*."""
    return hash_b64(b64encode(ciphertext))


def snapshot_proof(
    grand_parent_proof: str, parent_ciphertext_hash: str, parent_snapshot_id: str
) -> str:
    """``hash(canonical_json({grandParentSnapshotProof, parentSnapshotCiphertextHash,
    parentSnapshotId}))``; all three are ``""`` for the initial snapshot."""
    return hash_b64(
        canonical_json(
            {
                "grandParentSnapshotProof": grand_parent_proof,
                "parentSnapshotCiphertextHash": parent_ciphertext_hash,
                "parentSnapshotId": parent_snapshot_id,
            }
        )
    )


def session_proof_bytes(signer_session_id_b64: str, receiver_session_id_b64: str) -> bytes:
    body = canonical_json(
        {
            "currentClientSessionId": signer_session_id_b64,
            "remoteClientSessionId": receiver_session_id_b64,
        }
    )
    return (DOMAIN_SESSION_PROOF + body).encode("utf-8")


def create_session_proof(
    signer: SigningKeyPair, signer_session_id: bytes, receiver_session_id: bytes
) -> bytes:
    """Ed25519 proof that ``signer`` (in its session) talks to ``receiver_session_id``."""
    return signer.sign(
        session_proof_bytes(b64encode(signer_session_id), b64encode(receiver_session_id))
    )


def verify_session_proof(
    proof: bytes, signer_public_key: bytes, signer_session_id: bytes, receiver_session_id: bytes
) -> bool:
    return verify_signature(
        signer_public_key,
        proof,
        session_proof_bytes(b64encode(signer_session_id), b64encode(receiver_session_id)),
    )
