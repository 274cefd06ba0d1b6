"""Messages of the protocol: snapshots, updates, ephemeral messages, and their public data.

Binary values (keys, ids, proofs, nonces, ciphertexts, signatures) are raw bytes here; the
base64url strings secsync JS works with are derived where the cryptography needs them.
"""

from __future__ import annotations

import enum
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
from secsync.protocol.encoding import JsonValue, b64decode, b64encode, canonical_json

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
        return b64encode(canonical_json(self.to_json()).encode("utf-8"))


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
        if self.extra:
            return b64encode(canonical_json(self.to_json()).encode("utf-8"))
        # The hot path: four known keys, already in canonical order; only docId needs escaping.
        return b64encode(
            (
                f'{{"clock":{self.clock},"docId":{canonical_json(self.doc_id)},'
                f'"pubKey":"{b64encode(self.pub_key)}",'
                f'"refSnapshotId":"{b64encode(self.ref_snapshot_id)}"}}'
            ).encode()
        )


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
        return b64encode(canonical_json(self.to_json()).encode("utf-8"))


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
