"""Closed groups: members with roles, one key per snapshot epoch, rotation on removal.

A :class:`Group` is both the session's key provider and its authorization policy. Membership
travels with snapshots, whose chain the broker orders by compare-and-set, so membership
changes are totally ordered per document:

* a snapshot's public data carries ``"g"``: the epoch key sealed (libsodium sealed box) to
  each member's X25519 key — derived from their Ed25519 identity — and the membership itself
  (public keys and roles) encrypted under that key. The broker learns only how many members
  there are;
* a snapshot whose membership differs from its parent's must be written by an admin of the
  parent's membership, otherwise it is refused (:class:`MembershipError`, 1003) — a forged
  membership change has no effect. A snapshot whose parent we never saw (first load, restart)
  is trusted on first use if its author may write in its own roster;
* removing a member rotates the key: the next epoch's key is sealed only to those who remain,
  so a removed member, even still connected, opens nothing written after it
  (:class:`NotAMemberError`, 1004);
* on receipt, updates and snapshots need a writer or admin, presence needs any member;
* a membership change is an operation that waits, like a local edit: if another snapshot wins
  the race, it is applied again on top of the winner, so two admins removing two members at
  once both get their way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import msgpack
import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from secsync.errors import AccessError, MembershipError, NotAMemberError
from secsync.protocol.crypto import SigningKeyPair, check_key
from secsync.protocol.encoding import JsonValue, b64decode, b64encode
from secsync.protocol.messages import (
    MessageKind,
    PublicData,
    SnapshotInfo,
    SnapshotPublicData,
    UpdatePublicData,
)

Role = Literal["admin", "writer", "reader"]
ROLES: tuple[Role, ...] = ("admin", "writer", "reader")
_WRITERS = ("admin", "writer")
MAX_MEMBERS = 10_000


def x25519_public(ed25519_public: bytes) -> bytes:
    key: bytes = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public)
    return key


class Group:
    """Key provider and policy of a document with known members (pass it as ``key`` and
    ``policy`` to ``client.open``)."""

    def __init__(self, me: SigningKeyPair, founders: Mapping[bytes, Role] | None = None) -> None:
        self._me = me
        self._box = nacl.public.SealedBox(me.signing_key.to_curve25519_private_key())
        # snapshot id -> (members, key), for every snapshot whose key we hold
        self._epochs: dict[bytes, tuple[dict[bytes, Role], bytes]] = {}
        self._outgoing: dict[bytes, tuple[dict[bytes, Role], bytes, bool]] = {}
        self._active: bytes | None = None
        self._founders = {k: _role(v) for k, v in (founders or {me.public_key: "admin"}).items()}
        self._pending: list[tuple[bytes, Role | None]] = []

    # --- membership ---------------------------------------------------------------------------

    @property
    def members(self) -> dict[bytes, Role]:
        """The membership of the active snapshot (or the founders before the first one)."""
        if self._active is not None and self._active in self._epochs:
            return dict(self._epochs[self._active][0])
        return dict(self._founders)

    def add(self, member: bytes, role: Role = "writer") -> None:
        """Add a member or change a role (takes effect with the next snapshot)."""
        self._pending.append((member, _role(role)))

    def remove(self, member: bytes) -> None:
        """Remove a member; the next snapshot rotates the key."""
        self._pending.append((member, None))

    @property
    def pending_changes(self) -> int:
        return len(self._pending)

    # --- key provider -------------------------------------------------------------------------

    def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, Mapping[str, JsonValue]]:
        members = self.members
        rotate = self._active is None
        for member, role in self._pending:
            if role is None:
                rotate = rotate or member in members
                members.pop(member, None)
            else:
                members[member] = role
        if self._me.public_key not in members:
            raise MembershipError("a snapshot must keep its author as a member")
        current = self._epochs.get(self._active or b"")
        key = os.urandom(32) if rotate or current is None else current[1]
        sealed = [
            b64encode(nacl.public.SealedBox(nacl.public.PublicKey(x25519_public(m))).encrypt(key))
            for m in sorted(members)
        ]
        nonce = os.urandom(24)
        roster = msgpack.packb({m: r for m, r in members.items()}, use_bin_type=True)
        blob = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            roster, b"secsync-group" + snapshot_id, nonce, key
        )
        self._outgoing[snapshot_id] = (members, key, bool(self._pending))
        return key, {"g": {"v": 1, "k": sealed, "m": b64encode(nonce + blob)}}

    def snapshot_key(self, snapshot: SnapshotInfo) -> bytes:
        known = self._epochs.get(snapshot.snapshot_id)
        if known is not None:
            return known[1]
        outgoing = self._outgoing.get(snapshot.snapshot_id)
        if outgoing is not None:
            return outgoing[1]
        members, key = self._open(snapshot)
        parent = self._epochs.get(snapshot.parent_snapshot_id)
        before = parent[0] if parent is not None else None
        if before is None:
            # Nothing to compare with (first load, or a restart): trusted on first use, as
            # secsync trusts a first snapshot, provided its author may write in its own roster.
            if members.get(snapshot.author) not in _WRITERS:
                raise MembershipError("the snapshot's author may not write in its membership")
        elif members != before and before.get(snapshot.author) != "admin":
            raise MembershipError("membership changed by someone who is not an admin")
        self._epochs[snapshot.snapshot_id] = (members, key)
        return key

    def _open(self, snapshot: SnapshotInfo) -> tuple[dict[bytes, Role], bytes]:
        group = snapshot.extra.get("g")
        if not isinstance(group, Mapping) or group.get("v") != 1:
            raise MembershipError("snapshot carries no group data")
        sealed, blob = group.get("k"), group.get("m")
        if not isinstance(sealed, list) or not isinstance(blob, str) or len(sealed) > MAX_MEMBERS:
            raise MembershipError("malformed group data")
        key = None
        for item in sealed:
            if not isinstance(item, str):
                raise MembershipError("malformed group data")
            try:
                key = self._box.decrypt(b64decode(item))
                break
            except (nacl.exceptions.CryptoError, AccessError, ValueError):
                continue
        if key is None:
            raise NotAMemberError("no key of this epoch is sealed to us")
        try:
            raw = b64decode(blob)
            roster = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                raw[24:], b"secsync-group" + snapshot.snapshot_id, raw[:24], check_key(key)
            )
            decoded = msgpack.unpackb(roster, raw=False, strict_map_key=False)
            members = {bytes(m): _role(r) for m, r in decoded.items()}
        except Exception:
            raise MembershipError("group membership does not decrypt") from None
        return members, key

    def snapshot_activated(self, snapshot: SnapshotInfo) -> None:
        """The session's hook: ``snapshot`` became the active one."""
        self._active = snapshot.snapshot_id
        outgoing = self._outgoing.pop(snapshot.snapshot_id, None)
        if outgoing is not None:
            members, key, applied = outgoing
            self._epochs[snapshot.snapshot_id] = (members, key)
            if applied:
                self._pending.clear()
        # keep memory bounded: the epochs of recent snapshots suffice
        for old in list(self._epochs)[:-16]:
            if old != self._active:
                del self._epochs[old]

    # --- policy -------------------------------------------------------------------------------

    def may_author(self, kind: MessageKind, author: bytes, public_data: PublicData) -> bool:
        if isinstance(public_data, UpdatePublicData):
            epoch = self._epochs.get(public_data.ref_snapshot_id)
        elif isinstance(public_data, SnapshotPublicData):
            epoch = self._epochs.get(public_data.parent_snapshot_id)
            if epoch is None:
                return True  # a first snapshot: checked against its own membership on opening
        else:
            epoch = self._epochs.get(self._active or b"")
        if epoch is None:
            # an update for a snapshot we do not know yet waits; judged when it is known
            return kind == MessageKind.UPDATE
        role = epoch[0].get(author)
        if kind == MessageKind.EPHEMERAL:
            return role is not None
        return role in _WRITERS

    def __repr__(self) -> str:
        return f"Group(members={len(self.members)}, pending={len(self._pending)})"


def _role(value: Any) -> Role:
    if value not in ROLES:
        raise MembershipError(f"unknown role {value!r}")
    role: Role = value
    return role
