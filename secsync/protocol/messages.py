"""Messages of the protocol: snapshots, updates, ephemeral messages, and their public data.

Binary values (keys, ids, proofs, nonces, ciphertexts, signatures) are raw bytes here; the
base64url strings secsync JS works with are derived where the cryptography needs them.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Final, TypeAlias

from secsync.protocol.crypto import (
    DOMAIN_EPHEMERAL,
    DOMAIN_SNAPSHOT,
    DOMAIN_UPDATE,
    HASH_BYTES,
    ID_BYTES,
    INITIAL_PARENT_PROOF_B64,
    PUBLIC_KEY_BYTES,
    ciphertext_hash,
    snapshot_proof,
)
from secsync.protocol.encoding import (
    JsonValue,
    b64decode,
    b64encode,
    b64encode_ascii,
    canonical_json,
)

PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({PROTOCOL_VERSION})

# Public data keys the protocol itself defines; anything else is an application extra.
SNAPSHOT_FIELDS: Final = frozenset(
    {
        "docId",
        "pubKey",
        "snapshotId",
        "parentSnapshotId",
        "parentSnapshotProof",
        "parentSnapshotUpdateClocks",
    }
)
UPDATE_FIELDS: Final = frozenset({"docId", "pubKey", "refSnapshotId", "clock"})
EPHEMERAL_FIELDS: Final = frozenset({"docId", "pubKey"})

_EMPTY: Mapping[str, JsonValue] = MappingProxyType({})


class MessageKind(enum.IntEnum):
    SNAPSHOT = 1
    UPDATE = 2
    EPHEMERAL = 3


def _freeze(mapping: Mapping[str, JsonValue] | None) -> Mapping[str, JsonValue]:
    return MappingProxyType(dict(mapping)) if mapping else _EMPTY


@dataclass(frozen=True, slots=True)
class SnapshotPublicData:
    doc_id: str
    pub_key: bytes
    snapshot_id: bytes
    parent_snapshot_id: bytes
    """Empty for the initial snapshot."""
    parent_snapshot_proof: bytes
    parent_snapshot_update_clocks: Mapping[bytes, int]
    """Last clock per author (public key) of the parent snapshot that this snapshot includes."""
    extra: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "parent_snapshot_update_clocks",
            MappingProxyType(dict(self.parent_snapshot_update_clocks)),
        )
        object.__setattr__(self, "extra", _freeze(self.extra))

    def to_json(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = dict(self.extra)
        data.update(
            {
                "docId": self.doc_id,
                "pubKey": b64encode(self.pub_key),
                "snapshotId": b64encode(self.snapshot_id),
                "parentSnapshotId": b64encode(self.parent_snapshot_id),
                "parentSnapshotProof": b64encode(self.parent_snapshot_proof),
                "parentSnapshotUpdateClocks": {
                    b64encode(k): v for k, v in self.parent_snapshot_update_clocks.items()
                },
            }
        )
        return data

    def aad(self) -> str:
        return self.aad_b64().decode("ascii")

    def aad_b64(self) -> bytes:
        """The AAD (§2) as ASCII bytes, as the AEAD, the tag and the signature take it."""
        return b64encode_ascii(canonical_json(self.to_json()).encode("utf-8"))


@dataclass(frozen=True, slots=True)
class UpdatePublicData:
    doc_id: str
    pub_key: bytes
    ref_snapshot_id: bytes
    clock: int
    extra: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", _freeze(self.extra))

    def to_json(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = dict(self.extra)
        data.update(
            {
                "docId": self.doc_id,
                "pubKey": b64encode(self.pub_key),
                "refSnapshotId": b64encode(self.ref_snapshot_id),
                "clock": self.clock,
            }
        )
        return data

    def aad(self) -> str:
        return self.aad_b64().decode("ascii")

    def aad_b64(self) -> bytes:
        """The AAD (§2) as ASCII bytes, as the AEAD, the tag and the signature take it."""
        if self.extra:
            return b64encode_ascii(canonical_json(self.to_json()).encode("utf-8"))
        # The hot path: four known keys, already in canonical order; only docId needs escaping,
        # and everything after the clock is the same for all updates of an author on a snapshot.
        try:
            tail = _update_aad_tail(self.doc_id, self.pub_key, self.ref_snapshot_id)
        except TypeError:  # unhashable field values (say a bytearray key): the same, uncached
            tail = _update_aad_tail.__wrapped__(self.doc_id, self.pub_key, self.ref_snapshot_id)
        return b64encode_ascii(f'{{"clock":{self.clock}'.encode() + tail)


@functools.lru_cache(maxsize=512)
def _update_aad_tail(doc_id: str, pub_key: bytes, ref_snapshot_id: bytes) -> bytes:
    """``,"docId":…,"pubKey":…,"refSnapshotId":…}`` of an update's canonical public data (public
    values only, so caching them is harmless)."""
    return (
        f',"docId":{canonical_json(doc_id)},"pubKey":"{b64encode(pub_key)}",'
        f'"refSnapshotId":"{b64encode(ref_snapshot_id)}"}}'
    ).encode()


@dataclass(frozen=True, slots=True)
class EphemeralPublicData:
    doc_id: str
    pub_key: bytes
    extra: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", _freeze(self.extra))

    def to_json(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = dict(self.extra)
        data.update({"docId": self.doc_id, "pubKey": b64encode(self.pub_key)})
        return data

    def aad(self) -> str:
        return self.aad_b64().decode("ascii")

    def aad_b64(self) -> bytes:
        """The AAD (§2) as ASCII bytes, as the AEAD, the tag and the signature take it."""
        return b64encode_ascii(canonical_json(self.to_json()).encode("utf-8"))


PublicData: TypeAlias = SnapshotPublicData | UpdatePublicData | EphemeralPublicData


@dataclass(frozen=True, slots=True)
class _Sealed:
    nonce: bytes
    ciphertext: bytes
    """Commitment tag ‖ XChaCha20-Poly1305 output."""
    signature: bytes
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Snapshot(_Sealed):
    public_data: SnapshotPublicData = field(kw_only=True)
    kind: ClassVar[MessageKind] = MessageKind.SNAPSHOT
    domain: ClassVar[str] = DOMAIN_SNAPSHOT

    @property
    def snapshot_id(self) -> bytes:
        return self.public_data.snapshot_id

    @property
    def author(self) -> bytes:
        return self.public_data.pub_key

    def info(self) -> SnapshotInfo:
        """What a receiver remembers of this snapshot once it is accepted."""
        return SnapshotInfo(
            snapshot_id=self.public_data.snapshot_id,
            ciphertext_hash=b64decode(ciphertext_hash(self.ciphertext)),
            parent_snapshot_proof=self.public_data.parent_snapshot_proof,
            parent_snapshot_id=self.public_data.parent_snapshot_id,
            extra=self.public_data.extra,
            author=self.public_data.pub_key,
        )


@dataclass(frozen=True, slots=True)
class Update(_Sealed):
    public_data: UpdatePublicData = field(kw_only=True)
    kind: ClassVar[MessageKind] = MessageKind.UPDATE
    domain: ClassVar[str] = DOMAIN_UPDATE

    @property
    def author(self) -> bytes:
        return self.public_data.pub_key

    @property
    def clock(self) -> int:
        return self.public_data.clock


@dataclass(frozen=True, slots=True)
class EphemeralMessage(_Sealed):
    public_data: EphemeralPublicData = field(kw_only=True)
    kind: ClassVar[MessageKind] = MessageKind.EPHEMERAL
    domain: ClassVar[str] = DOMAIN_EPHEMERAL

    @property
    def author(self) -> bytes:
        return self.public_data.pub_key


Message: TypeAlias = Snapshot | Update | EphemeralMessage

_new = object.__new__
_set = object.__setattr__


def trusted_update(
    *,
    nonce: bytes,
    ciphertext: bytes,
    signature: bytes,
    version: int,
    doc_id: str,
    pub_key: bytes,
    ref_snapshot_id: bytes,
    clock: int,
) -> Update:
    """``Update(..., public_data=UpdatePublicData(...))`` without extras, for values the wire
    decoder has already checked: the same objects, built without ``__init__``'s overhead."""
    public = _new(UpdatePublicData)
    _set(public, "doc_id", doc_id)
    _set(public, "pub_key", pub_key)
    _set(public, "ref_snapshot_id", ref_snapshot_id)
    _set(public, "clock", clock)
    _set(public, "extra", _EMPTY)
    update = _new(Update)
    _set(update, "nonce", nonce)
    _set(update, "ciphertext", ciphertext)
    _set(update, "signature", signature)
    _set(update, "version", version)
    _set(update, "public_data", public)
    return update


def trusted_ephemeral(
    *,
    nonce: bytes,
    ciphertext: bytes,
    signature: bytes,
    version: int,
    doc_id: str,
    pub_key: bytes,
) -> EphemeralMessage:
    """:func:`trusted_update` for an ephemeral message without extras."""
    public = _new(EphemeralPublicData)
    _set(public, "doc_id", doc_id)
    _set(public, "pub_key", pub_key)
    _set(public, "extra", _EMPTY)
    message = _new(EphemeralMessage)
    _set(message, "nonce", nonce)
    _set(message, "ciphertext", ciphertext)
    _set(message, "signature", signature)
    _set(message, "version", version)
    _set(message, "public_data", public)
    return message


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """The verified facts about a snapshot that its children are checked against."""

    snapshot_id: bytes
    ciphertext_hash: bytes
    parent_snapshot_proof: bytes
    parent_snapshot_id: bytes = b""
    extra: Mapping[str, JsonValue] = field(default_factory=lambda: _EMPTY)
    author: bytes = b""

    def child_proof(self) -> bytes:
        """The ``parentSnapshotProof`` a child of this snapshot must carry."""
        return child_proof(self.parent_snapshot_proof, self.ciphertext_hash, self.snapshot_id)


@dataclass(frozen=True, slots=True)
class ProofChainEntry:
    """One link of a snapshot proof chain (secsync's ``SnapshotProofChainEntry``)."""

    snapshot_id: bytes
    parent_snapshot_proof: bytes
    snapshot_ciphertext_hash: bytes

    @classmethod
    def of(cls, snapshot: Snapshot) -> ProofChainEntry:
        info = snapshot.info()
        return cls(info.snapshot_id, info.parent_snapshot_proof, info.ciphertext_hash)

    def child_proof(self) -> bytes:
        return child_proof(
            self.parent_snapshot_proof, self.snapshot_ciphertext_hash, self.snapshot_id
        )


INITIAL_PARENT_PROOF: Final = b64decode(INITIAL_PARENT_PROOF_B64)


def child_proof(parent_proof: bytes, parent_ciphertext_hash: bytes, parent_id: bytes) -> bytes:
    """The proof a child of the snapshot (``parent_id``, its hash, its own proof) carries."""
    return b64decode(
        snapshot_proof(
            b64encode(parent_proof), b64encode(parent_ciphertext_hash), b64encode(parent_id)
        )
    )


def check_public_key(value: bytes) -> bytes:
    if len(value) != PUBLIC_KEY_BYTES:
        raise ValueError("public key must be 32 bytes")
    return value


__all__ = [
    "EPHEMERAL_FIELDS",
    "HASH_BYTES",
    "ID_BYTES",
    "INITIAL_PARENT_PROOF",
    "PROTOCOL_VERSION",
    "SNAPSHOT_FIELDS",
    "SUPPORTED_VERSIONS",
    "UPDATE_FIELDS",
    "EphemeralMessage",
    "EphemeralPublicData",
    "Message",
    "MessageKind",
    "ProofChainEntry",
    "PublicData",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotPublicData",
    "Update",
    "UpdatePublicData",
]
