"""Sealing (encrypt + sign) and opening (verify + decrypt) of messages."""

from __future__ import annotations

from typing import overload

from secsync.errors import (
    CreateEphemeralError,
    CreateSnapshotError,
    CreateUpdateError,
    EphemeralDecryptionError,
    EphemeralSignatureError,
    SecsyncError,
    SnapshotDecryptionError,
    SnapshotSignatureError,
    UpdateDecryptionError,
    UpdateSignatureError,
)
from secsync.protocol import crypto
from secsync.protocol.encoding import b64encode_ascii
from secsync.protocol.messages import (
    EphemeralMessage,
    EphemeralPublicData,
    Message,
    MessageKind,
    Snapshot,
    SnapshotPublicData,
    Update,
    UpdatePublicData,
)

_SIGNATURE_ERRORS: dict[MessageKind, type[SecsyncError]] = {
    MessageKind.SNAPSHOT: SnapshotSignatureError,
    MessageKind.UPDATE: UpdateSignatureError,
    MessageKind.EPHEMERAL: EphemeralSignatureError,
}
_DECRYPTION_ERRORS: dict[MessageKind, type[SecsyncError]] = {
    MessageKind.SNAPSHOT: SnapshotDecryptionError,
    MessageKind.UPDATE: UpdateDecryptionError,
    MessageKind.EPHEMERAL: EphemeralDecryptionError,
}
_CREATE_ERRORS: dict[MessageKind, type[SecsyncError]] = {
    MessageKind.SNAPSHOT: CreateSnapshotError,
    MessageKind.UPDATE: CreateUpdateError,
    MessageKind.EPHEMERAL: CreateEphemeralError,
}


@overload
def seal(
    public_data: SnapshotPublicData,
    plaintext: bytes,
    key: bytes | crypto.Cipher,
    signer: crypto.SigningKeyPair,
    *,
    nonce: bytes | None = None,
) -> Snapshot: ...
@overload
def seal(
    public_data: UpdatePublicData,
    plaintext: bytes,
    key: bytes | crypto.Cipher,
    signer: crypto.SigningKeyPair,
    *,
    nonce: bytes | None = None,
) -> Update: ...
@overload
def seal(
    public_data: EphemeralPublicData,
    plaintext: bytes,
    key: bytes | crypto.Cipher,
    signer: crypto.SigningKeyPair,
    *,
    nonce: bytes | None = None,
) -> EphemeralMessage: ...


def seal(
    public_data: SnapshotPublicData | UpdatePublicData | EphemeralPublicData,
    plaintext: bytes,
    key: bytes | crypto.Cipher,
    signer: crypto.SigningKeyPair,
    *,
    nonce: bytes | None = None,
) -> Message:
    """Encrypt ``plaintext`` under ``key`` and sign it as ``public_data``'s message kind.

    ``key`` may be a :class:`~secsync.protocol.crypto.Cipher` made once for many messages.
    """
    cls: type[Snapshot] | type[Update] | type[EphemeralMessage]
    if isinstance(public_data, SnapshotPublicData):
        cls = Snapshot
    elif isinstance(public_data, UpdatePublicData):
        cls = Update
    else:
        cls = EphemeralMessage
    if public_data.pub_key != signer.public_key:
        raise _CREATE_ERRORS[cls.kind]("public data names another author than the signer")
    try:
        cipher = key if isinstance(key, crypto.Cipher) else crypto.Cipher(key)
        nonce = crypto.random_nonce() if nonce is None else nonce
        aad = public_data.aad_b64()
        ciphertext = cipher.encrypt(plaintext, aad, nonce)
        signature = signer.sign(
            crypto.signed_input(
                cls.domain, b64encode_ascii(ciphertext), b64encode_ascii(nonce), aad
            )
        )
    except SecsyncError as exc:
        raise _CREATE_ERRORS[cls.kind](exc.message) from exc
    return cls(nonce, ciphertext, signature, public_data=public_data)  # type: ignore[arg-type]


def verify(message: Message, aad: bytes | None = None) -> bytes:
    """:func:`check_signature` with the AAD as ASCII bytes (what the hot paths pass on)."""
    if aad is None:
        aad = message.public_data.aad_b64()
    if not signature_valid(message, aad):
        raise signature_error(message)
    return aad


def signature_error(message: Message) -> SecsyncError:
    """The error :func:`verify` raises for ``message`` when its signature does not verify."""
    return _SIGNATURE_ERRORS[message.kind]()


def signature_valid(message: Message, aad: bytes | None = None) -> bool:
    """Whether the author's signature verifies: a pure function of the message, so that it
    can be computed ahead of the session on another thread."""
    if aad is None:
        aad = message.public_data.aad_b64()
    signed = crypto.signed_input(
        message.domain, b64encode_ascii(message.ciphertext), b64encode_ascii(message.nonce), aad
    )
    return crypto.verify_signature(message.public_data.pub_key, message.signature, signed)


def check_signature(message: Message, aad: str | None = None) -> str:
    """Raise the kind's signature error unless the author's signature verifies.

    Returns the AAD string so that decryption need not compute it again.
    """
    return verify(message, None if aad is None else aad.encode("ascii")).decode("ascii")


def open_sealed(message: Message, key: bytes | crypto.Cipher, aad: bytes | None = None) -> bytes:
    """:func:`decrypt` with the AAD as ASCII bytes and the key possibly a ``Cipher``."""
    if aad is None:
        aad = message.public_data.aad_b64()
    try:
        if isinstance(key, crypto.Cipher):
            return key.decrypt(message.ciphertext, message.nonce, aad)
        return crypto.decrypt_ascii(message.ciphertext, message.nonce, aad, key)
    except crypto.CryptoFailure as exc:
        raise decryption_error(message, str(exc)) from None


def decryption_error(message: Message, reason: str) -> SecsyncError:
    """The error :func:`open_sealed` raises for ``message`` when opening fails for ``reason``."""
    return _DECRYPTION_ERRORS[message.kind](reason)


def decrypt(message: Message, key: bytes | crypto.Cipher, aad: str | None = None) -> bytes:
    """Check the commitment tag and decrypt; raise the kind's decryption error."""
    return open_sealed(message, key, None if aad is None else aad.encode("ascii"))


def open_message(message: Message, key: bytes | crypto.Cipher) -> bytes:
    """Verify the signature, then decrypt. No ordering or policy checks."""
    aad = verify(message)
    return open_sealed(message, key, aad)
