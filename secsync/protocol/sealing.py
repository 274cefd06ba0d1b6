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
from secsync.protocol.encoding import b64encode
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
    key: bytes,
    signer: crypto.SigningKeyPair,
    *,
    nonce: bytes | None = None,
) -> Snapshot: ...
@overload
def seal(
    public_data: UpdatePublicData,
    plaintext: bytes,
    key: bytes,
    signer: crypto.SigningKeyPair,
    *,
    nonce: bytes | None = None,
) -> Update: ...
@overload
def seal(
    public_data: EphemeralPublicData,
    plaintext: bytes,
    key: bytes,
    signer: crypto.SigningKeyPair,
    *,
    nonce: bytes | None = None,
) -> EphemeralMessage: ...


def seal(
    public_data: SnapshotPublicData | UpdatePublicData | EphemeralPublicData,
    plaintext: bytes,
    key: bytes,
    signer: crypto.SigningKeyPair,
    *,
    nonce: bytes | None = None,
) -> Message:
    """Encrypt ``plaintext`` under ``key`` and sign it as ``public_data``'s message kind."""
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
        key = crypto.check_key(key)
        nonce = crypto.random_nonce() if nonce is None else nonce
        aad = public_data.aad()
        ciphertext = crypto.encrypt(plaintext, aad, key, nonce)
        signature = crypto.sign_message(
            signer, cls.domain, b64encode(ciphertext), b64encode(nonce), aad
        )
    except SecsyncError as exc:
        raise _CREATE_ERRORS[cls.kind](exc.message) from exc
    return cls(nonce, ciphertext, signature, public_data=public_data)  # type: ignore[arg-type]


def check_signature(message: Message, aad: str | None = None) -> str:
    """Raise the kind's signature error unless the author's signature verifies.

    Returns the AAD string so that decryption need not compute it again.
    """
    aad = message.public_data.aad() if aad is None else aad
    signed = crypto.signed_bytes(
        message.domain, b64encode(message.ciphertext), b64encode(message.nonce), aad
    )
    if not crypto.verify_signature(message.public_data.pub_key, message.signature, signed):
        raise _SIGNATURE_ERRORS[message.kind]()
    return aad


def decrypt(message: Message, key: bytes, aad: str | None = None) -> bytes:
    """Check the commitment tag and decrypt; raise the kind's decryption error."""
    aad = message.public_data.aad() if aad is None else aad
    try:
        return crypto.decrypt(message.ciphertext, message.nonce, aad, key)
    except crypto.CryptoFailure as exc:
        raise _DECRYPTION_ERRORS[message.kind](str(exc)) from None


def open_message(message: Message, key: bytes) -> bytes:
    """Verify the signature, then decrypt. No ordering or policy checks."""
    aad = check_signature(message)
    return decrypt(message, key, aad)
