"""The membership chain of a closed group (:class:`~secsync.access.group.Group`): roles,
the signed roster changes (:class:`MembershipOp`), the epoch keys each one commits to and
seals (:func:`seal_key`) to every reader, and one epoch's state (:class:`Epoch`).

How the chain is verified and travels with snapshots is in :mod:`secsync.access.group`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from secsync.errors import (
    DeviceCertificateError,
    MembershipError,
)
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.devices import DeviceCertificate
from secsync.protocol.encoding import b64encode

Role = Literal["admin", "writer", "reader"]
ROLES: tuple[Role, ...] = ("admin", "writer", "reader")
WRITERS = ("admin", "writer")
GROUP_VERSION = 2
"""Group data of a chain without device changes (byte for byte as before devices existed)."""
GROUP_VERSION_DEVICES = 3
"""Group data of a chain with at least one device change (an op of seven fields)."""
MAX_MEMBERS = 1_000
"""Keys a group seals its epoch key to: users plus their devices. Every snapshot carries a
sealed key per such key and the chain, and must stay within the snapshot's public-data bound
(``docs/access-control.md`` has the sizes)."""
MAX_OPS = 2_000
"""Membership changes a chain may hold (each adds about 200 bytes to every snapshot, a device
added about 330 more for its certificate)."""
_OP_DOMAIN = b"secsync_group_op"
_DEVICE_OP_DOMAIN = b"secsync_group_op_devices"


def x25519_public(ed25519_public: bytes) -> bytes:
    key: bytes = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public)
    return key


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32, person=b"secsync-group").digest()


def epoch_commitment(key: bytes) -> bytes:
    """What an op says about its epoch key: a hash that reveals nothing of the key."""
    return _digest(b"epoch" + key)


def sealed_commitment(sealed: Sequence[str]) -> bytes:
    """What an op says about the sealed copies of its key (``"k"``, in order)."""
    return _digest(b"sealed" + "\n".join(sealed).encode("ascii"))


def seal_key(key: bytes, reader: bytes) -> str:
    """The epoch ``key`` sealed to the Ed25519 key ``reader``: a libsodium sealed box (opened
    with ``crypto_box_seal_open``) whose ephemeral key is derived from the epoch key and the
    reader instead of drawn at random. Whoever holds the epoch key can therefore recompute
    every copy and check that an op sealed it to exactly the roster's keys."""
    public = x25519_public(reader)
    ephemeral_public, ephemeral_secret = nacl.bindings.crypto_box_seed_keypair(
        _digest(b"seal" + key + public)
    )
    nonce = hashlib.blake2b(ephemeral_public + public, digest_size=24).digest()
    box: bytes = nacl.bindings.crypto_box(key, nonce, public, ephemeral_secret)
    return b64encode(ephemeral_public + box)


@dataclass(frozen=True, slots=True)
class MembershipOp:
    """One signed change of the roster: ``changes`` set users' roles (``None`` removes the
    user and all its devices), ``added`` adds certified devices, ``removed`` removes devices
    (for good: a removed device key never comes back). An op without device changes has the
    five-field form of group data version 2; one with device changes has seven fields and its
    own signature domain."""

    author: bytes
    changes: tuple[tuple[bytes, Role | None], ...]
    epoch: bytes
    sealed: bytes
    signature: bytes
    added: tuple[DeviceCertificate, ...] = ()
    removed: tuple[bytes, ...] = ()

    @property
    def changes_devices(self) -> bool:
        return bool(self.added or self.removed)

    @staticmethod
    def signed_bytes(
        previous: bytes,
        author: bytes,
        changes: Sequence[tuple[bytes, Role | None]],
        epoch: bytes,
        sealed: bytes,
        *,
        added: Sequence[DeviceCertificate] = (),
        removed: Sequence[bytes] = (),
    ) -> bytes:
        body: list[Any] = [previous, author, [[m, r] for m, r in changes], epoch, sealed]
        if not (added or removed):
            packed: bytes = msgpack.packb(body, use_bin_type=True)
            return _OP_DOMAIN + packed
        body += [[c.to_bytes() for c in added], list(removed)]
        packed = msgpack.packb(body, use_bin_type=True)
        return _DEVICE_OP_DOMAIN + packed

    @classmethod
    def sign(
        cls,
        signer: SigningKeyPair,
        previous: bytes,
        changes: Sequence[tuple[bytes, Role | None]],
        epoch: bytes,
        sealed: bytes,
        *,
        added: Sequence[DeviceCertificate] = (),
        removed: Sequence[bytes] = (),
    ) -> MembershipOp:
        data = cls.signed_bytes(
            previous, signer.public_key, changes, epoch, sealed, added=added, removed=removed
        )
        return cls(
            signer.public_key,
            tuple(changes),
            epoch,
            sealed,
            signer.sign(data),
            tuple(added),
            tuple(removed),
        )

    def body(self, previous: bytes) -> bytes:
        return self.signed_bytes(
            previous,
            self.author,
            self.changes,
            self.epoch,
            self.sealed,
            added=self.added,
            removed=self.removed,
        )

    def digest(self, previous: bytes) -> bytes:
        """This op's link: commits to everything before it, through ``previous``."""
        return _digest(self.body(previous) + self.signature)

    def encode(self) -> list[Any]:
        out: list[Any] = [
            self.author,
            [[m, r] for m, r in self.changes],
            self.epoch,
            self.sealed,
            self.signature,
        ]
        if self.changes_devices:
            out += [[c.to_bytes() for c in self.added], list(self.removed)]
        return out

    @classmethod
    def decode(cls, item: object, *, devices: bool = True) -> MembershipOp:
        if not isinstance(item, list) or len(item) not in ((5, 7) if devices else (5,)):
            raise MembershipError("malformed membership op")
        author, changes, epoch, sealed, signature = item[:5]
        if not (
            _is_bytes(author, 32) and _is_bytes(epoch, 32) and _is_bytes(sealed, 32)
        ) or not _is_bytes(signature, 64):
            raise MembershipError("malformed membership op")
        if not isinstance(changes, list) or len(changes) > MAX_MEMBERS + 1:
            raise MembershipError("malformed membership op")
        parsed: list[tuple[bytes, Role | None]] = []
        for change in changes:
            if not isinstance(change, list) or len(change) != 2 or not _is_bytes(change[0], 32):
                raise MembershipError("malformed membership op")
            parsed.append((bytes(change[0]), None if change[1] is None else parse_role(change[1])))
        added: list[DeviceCertificate] = []
        removed: list[bytes] = []
        if len(item) == 7:
            certificates, keys = item[5:]
            if (
                not isinstance(certificates, list)
                or not isinstance(keys, list)
                or not (certificates or keys)
                or len(certificates) + len(keys) > MAX_MEMBERS
                or not all(isinstance(c, bytes) for c in certificates)
                or not all(_is_bytes(k, 32) for k in keys)
            ):
                raise MembershipError("malformed membership op")
            try:
                added = [DeviceCertificate.from_bytes(bytes(c)) for c in certificates]
            except DeviceCertificateError:
                raise MembershipError("malformed device certificate in a membership op") from None
            removed = [bytes(k) for k in keys]
        return cls(
            bytes(author),
            tuple(parsed),
            bytes(epoch),
            bytes(sealed),
            bytes(signature),
            tuple(added),
            tuple(removed),
        )


def _is_bytes(value: object, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


@dataclass(frozen=True, slots=True)
class Epoch:
    """One epoch of a group: the roster, its key and the chain of ops that made it."""

    members: dict[bytes, Role]  # user -> role
    key: bytes
    chain: tuple[MembershipOp, ...]
    links: tuple[bytes, ...]  # digest after each op
    sealed: tuple[str, ...]
    devices: Mapping[bytes, bytes] = field(default_factory=dict)  # device -> its user
    revoked: frozenset[bytes] = frozenset()  # device keys removed, never to come back

    def user_of(self, key: bytes) -> bytes | None:
        """The user ``key`` reads and writes for: a user itself, or a device of one."""
        if key in self.members:
            return key
        return self.devices.get(key)

    def role_of(self, key: bytes) -> Role | None:
        user = self.user_of(key)
        return self.members.get(user) if user is not None else None


def epoch_readers(members: Mapping[bytes, Role], devices: Mapping[bytes, bytes]) -> list[bytes]:
    """The keys the epoch key is sealed to, in order: every user, and every device of one."""
    return sorted(set(members) | set(devices))


def parse_role(value: Any) -> Role:
    if value not in ROLES:
        raise MembershipError(f"unknown role {value!r}")
    role: Role = value
    return role
