"""Where document keys come from: one key per snapshot epoch, chosen by a key provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from secsync.errors import InvalidKeyError, SecsyncError
from secsync.protocol.crypto import KEY_BYTES, SigningKeyPair, check_key
from secsync.protocol.encoding import JsonValue, b64decode, b64encode
from secsync.protocol.messages import SnapshotInfo


@runtime_checkable
class KeyProvider(Protocol):
    """Chooses the key of each snapshot epoch.

    The counterpart of secsync JS's ``getSnapshotKey`` and ``getNewSnapshotData``.

    Updates and ephemeral messages use the key of the snapshot they build on.
    """

    def snapshot_key(self, snapshot: SnapshotInfo) -> bytes:
        """The key of an existing snapshot; may read key ids from ``snapshot.extra``."""
        ...

    def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, Mapping[str, JsonValue]]:
        """The key for a snapshot about to be written, and public data extras to sign with it."""
        ...


class StaticKey:
    """One document key for every snapshot (secsync's simplest deployment)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = check_key(key)

    @property
    def key(self) -> bytes:
        return self._key

    def snapshot_key(self, snapshot: SnapshotInfo) -> bytes:
        return self._key

    def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, Mapping[str, JsonValue]]:
        return self._key, {}

    def __repr__(self) -> str:
        return "StaticKey(<hidden>)"


def encode_key(key: bytes) -> str:
    """A document key as text (unpadded base64url, the form ``secsync keygen`` prints)."""
    return b64encode(check_key(key))


def decode_key(text: str, *, parameter: str = "key") -> bytes:
    """A document key from its text form (:func:`encode_key`); whitespace around it is ignored."""
    try:
        key = b64decode(text.strip())
    except SecsyncError:
        raise InvalidKeyError(
            f"{parameter}: not a document key (expected {KEY_BYTES} bytes as unpadded base64url, "
            "the form secsync keygen prints)"
        ) from None
    if len(key) != KEY_BYTES:
        raise InvalidKeyError(
            f"{parameter}: a document key is {KEY_BYTES} bytes, this text decodes to {len(key)}"
        )
    return key


def document_key(value: object, *, parameter: str = "key") -> bytes:
    """``value`` as a 32-byte document key: bytes, or the text form (:func:`decode_key`)."""
    if isinstance(value, str):
        return decode_key(value, parameter=parameter)
    if isinstance(value, bytes | bytearray | memoryview):
        if len(value) != KEY_BYTES:
            raise InvalidKeyError(
                f"{parameter}: a document key is {KEY_BYTES} bytes, not {len(value)}"
            )
        return bytes(value)
    raise InvalidKeyError(
        f"{parameter}: expected a {KEY_BYTES}-byte document key (bytes or base64url text), "
        f"not {type(value).__name__}"
    )


def key_provider(value: object, *, parameter: str = "key") -> KeyProvider:
    """What ``open(key=...)`` accepts: a document key (bytes or text) or a :class:`KeyProvider`.

    A key provider is recognised by its protocol (callable ``snapshot_key`` and
    ``new_snapshot_key``), so a typo such as a short string is refused here, at once, instead
    of failing later as a key provider.
    """
    if isinstance(value, str | bytes | bytearray | memoryview):
        return StaticKey(document_key(value, parameter=parameter))
    if callable(getattr(value, "snapshot_key", None)) and callable(
        getattr(value, "new_snapshot_key", None)
    ):
        return value  # type: ignore[return-value]  # checked by its protocol just above
    raise InvalidKeyError(
        f"{parameter}: expected a {KEY_BYTES}-byte document key (bytes or base64url text) or a "
        f"key provider (snapshot_key and new_snapshot_key), not {type(value).__name__}"
    )


def signing_key_pair(value: object, *, parameter: str = "signing_key") -> SigningKeyPair:
    """``value`` as an identity: a :class:`SigningKeyPair` or its text form (``to_b64``)."""
    if isinstance(value, SigningKeyPair):
        return value
    if isinstance(value, str):
        try:
            return SigningKeyPair.from_b64(value)
        except SecsyncError:
            raise InvalidKeyError(
                f"{parameter}: not a signing secret key (64 or 32 bytes as unpadded base64url, "
                "as SigningKeyPair.to_b64 and secsync keygen print it)"
            ) from None
    raise InvalidKeyError(
        f"{parameter}: expected a SigningKeyPair (or its text form), not {type(value).__name__}"
    )
