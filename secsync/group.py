"""Closed groups: members with roles, one key per snapshot epoch, rotation on removal, and
trust anchored in the founders.

A :class:`Group` is both the session's key provider and its authorization policy.

* **Membership is a chain of admin signatures.** Every change of the roster (the first roster,
  adding a member, changing a role, removing one) is a :class:`MembershipOp` signed by an admin
  of the roster it changes; the first must be signed by an admin among the **founders**, which
  every device is given out of band (``Group(me, founders=...)``) together with the invitation.
  Nothing found in the stream replaces them. Each op also commits to the epoch key it goes with
  and to the exact sealed copies of that key, so only an admin can introduce a key or decide who
  receives it: a writer's snapshot reuses the current epoch as it is.
* **The chain travels with every snapshot.** A snapshot's public data carries ``"g"``: the epoch
  key sealed (libsodium sealed box) to each member's X25519 key, derived from their Ed25519
  identity, and the whole chain encrypted under that key and bound to the snapshot id. One
  snapshot is therefore enough to verify the roster from the founders, even after compaction.
  The broker learns how many members there are and how many changes were made, nothing else.
* **Newest valid, not newest.** A snapshot is accepted only if its chain verifies from the
  founders, its epoch key is the one the chain's last op committed to, its sealed keys are that
  op's, and its author may write in the resulting roster. A running member (or a restarted one,
  which re-verifies its stored snapshot) also requires the chain to extend the one it holds, so a
  replayed older snapshot or a fork by a removed admin is refused (:class:`MembershipError`,
  1003); when loading, a stale or forked chain among the stored snapshots is passed over.
* **Removal rotates the key**: the next epoch's key is sealed only to those who remain, so a
  removed member opens nothing written after it (:class:`NotAMemberError`, 1004).
* On receipt, updates and snapshots need a writer or admin, presence needs any member.
* A membership change waits like a local edit: if another snapshot wins the race, it is applied
  again on top of the winner, so two admins removing two members at once both get their way.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgpack
import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from secsync.errors import AccessError, GroupTooLargeError, MembershipError, NotAMemberError
from secsync.protocol.crypto import SigningKeyPair, check_key
from secsync.protocol.encoding import JsonValue, b64decode, b64encode
from secsync.protocol.messages import (
    MessageKind,
    PublicData,
    SnapshotInfo,
    SnapshotPublicData,
    UpdatePublicData,
)
from secsync.protocol.wire import MAX_SNAPSHOT_EXTRA_BYTES

Role = Literal["admin", "writer", "reader"]
ROLES: tuple[Role, ...] = ("admin", "writer", "reader")
_WRITERS = ("admin", "writer")
GROUP_VERSION = 2
MAX_MEMBERS = 1_000
"""Members a group supports: every snapshot carries a sealed key per member and the chain, and
must stay within the snapshot's public-data bound (``docs/access-control.md`` has the sizes)."""
MAX_OPS = 2_000
"""Membership changes a chain may hold (each adds about 200 bytes to every snapshot)."""
_OP_DOMAIN = b"secsync_group_op"
_EPOCHS_KEPT = 16


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


@dataclass(frozen=True, slots=True)
class MembershipOp:
    """One signed change of the roster; ``role`` ``None`` removes the member."""

    author: bytes
    changes: tuple[tuple[bytes, Role | None], ...]
    epoch: bytes
    sealed: bytes
    signature: bytes

    @staticmethod
    def signed_bytes(
        previous: bytes,
        author: bytes,
        changes: Sequence[tuple[bytes, Role | None]],
        epoch: bytes,
        sealed: bytes,
    ) -> bytes:
        body = [previous, author, [[m, r] for m, r in changes], epoch, sealed]
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return _OP_DOMAIN + packed

    @classmethod
    def sign(
        cls,
        signer: SigningKeyPair,
        previous: bytes,
        changes: Sequence[tuple[bytes, Role | None]],
        epoch: bytes,
        sealed: bytes,
    ) -> MembershipOp:
        data = cls.signed_bytes(previous, signer.public_key, changes, epoch, sealed)
        return cls(signer.public_key, tuple(changes), epoch, sealed, signer.sign(data))

    def digest(self, previous: bytes) -> bytes:
        """This op's link: commits to everything before it, through ``previous``."""
        data = self.signed_bytes(previous, self.author, self.changes, self.epoch, self.sealed)
        return _digest(data + self.signature)

    def encode(self) -> list[Any]:
        return [
            self.author,
            [[m, r] for m, r in self.changes],
            self.epoch,
            self.sealed,
            self.signature,
        ]

    @classmethod
    def decode(cls, item: object) -> MembershipOp:
        if not isinstance(item, list) or len(item) != 5:
            raise MembershipError("malformed membership op")
        author, changes, epoch, sealed, signature = item
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
            parsed.append((bytes(change[0]), None if change[1] is None else _role(change[1])))
        return cls(bytes(author), tuple(parsed), bytes(epoch), bytes(sealed), bytes(signature))


def _is_bytes(value: object, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


@dataclass(frozen=True, slots=True)
class _Epoch:
    members: dict[bytes, Role]
    key: bytes
    chain: tuple[MembershipOp, ...]
    links: tuple[bytes, ...]  # digest after each op
    sealed: tuple[str, ...]


class Group:
    """Key provider and policy of a document with known members (pass it as ``key`` and
    ``policy`` to ``client.open``).

    ``founders`` is the anchor of trust: the public keys (and roles) allowed to write the first
    roster. Give every device the same founders out of band, with the invitation; the default,
    ``{me: "admin"}``, is right only for the device that founds the group.
    """

    def __init__(self, me: SigningKeyPair, founders: Mapping[bytes, Role] | None = None) -> None:
        self._me = me
        self._box = nacl.public.SealedBox(me.signing_key.to_curve25519_private_key())
        # snapshot id -> its verified epoch, for recent snapshots whose key we hold
        self._epochs: OrderedDict[bytes, _Epoch] = OrderedDict()
        self._outgoing: dict[bytes, tuple[_Epoch, bool]] = {}
        self._active: bytes | None = None
        self._founders = {k: _role(v) for k, v in (founders or {me.public_key: "admin"}).items()}
        if "admin" not in self._founders.values():
            raise MembershipError("the founders must include an admin")
        if len(self._founders) > MAX_MEMBERS:
            raise GroupTooLargeError(f"a group has at most {MAX_MEMBERS} members")
        self._pending: list[tuple[bytes, Role | None]] = []
        # links already verified (from the founders): a chain is checked once, then extended
        self._verified: set[bytes] = set()

    # --- membership ---------------------------------------------------------------------------

    @property
    def founders(self) -> dict[bytes, Role]:
        return dict(self._founders)

    @property
    def members(self) -> dict[bytes, Role]:
        """The verified membership of the active snapshot (the founders before the first)."""
        epoch = self._epochs.get(self._active) if self._active is not None else None
        return dict(epoch.members) if epoch is not None else dict(self._founders)

    def add(self, member: bytes, role: Role = "writer") -> None:
        """Add a member or change a role (takes effect with the next snapshot)."""
        role = _role(role)
        after = self._with_pending(self.members, [*self._pending, (member, role)])
        if len(after) > MAX_MEMBERS:
            raise GroupTooLargeError(f"a group has at most {MAX_MEMBERS} members")
        self._pending.append((member, role))

    def remove(self, member: bytes) -> None:
        """Remove a member; the next snapshot rotates the key."""
        self._pending.append((member, None))

    @property
    def pending_changes(self) -> int:
        return len(self._pending)

    @staticmethod
    def _with_pending(
        members: dict[bytes, Role], pending: Sequence[tuple[bytes, Role | None]]
    ) -> dict[bytes, Role]:
        members = dict(members)
        for member, role in pending:
            if role is None:
                members.pop(member, None)
            else:
                members[member] = role
        return members

    # --- key provider -------------------------------------------------------------------------

    def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, Mapping[str, JsonValue]]:
        current = self._epochs.get(self._active) if self._active is not None else None
        before = current.members if current is not None else {}
        members = self._with_pending(before if current is not None else {}, self._pending)
        if current is None:
            members = self._with_pending(self._founders, self._pending)
        changes = _changes(before, members)
        if self._me.public_key not in members:
            raise MembershipError("a snapshot must keep its author as a member")
        if current is not None and not changes:
            # A snapshot that changes nothing keeps the epoch as the admin who made it left it.
            epoch = current
            applied = bool(self._pending)
        else:
            authority = current.members if current is not None else self._founders
            if authority.get(self._me.public_key) != "admin":
                raise MembershipError("only an admin can change the membership")
            if len(members) > MAX_MEMBERS:
                raise GroupTooLargeError(f"a group has at most {MAX_MEMBERS} members")
            chain = current.chain if current is not None else ()
            if len(chain) >= MAX_OPS:
                raise GroupTooLargeError(f"a membership chain holds at most {MAX_OPS} changes")
            rotate = current is None or any(
                role is None and member in before for member, role in changes
            )
            key = os.urandom(32) if rotate or current is None else current.key
            sealed = tuple(
                b64encode(
                    nacl.public.SealedBox(nacl.public.PublicKey(x25519_public(m))).encrypt(key)
                )
                for m in sorted(members)
            )
            previous = current.links[-1] if current is not None else b""
            op = MembershipOp.sign(
                self._me, previous, changes, epoch_commitment(key), sealed_commitment(sealed)
            )
            link = op.digest(previous)
            self._verified.add(link)
            epoch = _Epoch(
                members,
                key,
                (*chain, op),
                (*(current.links if current else ()), link),
                sealed,
            )
            applied = True
        extra = {"g": self._group_data(snapshot_id, epoch)}
        if len(msgpack.packb(extra, use_bin_type=True)) * 4 // 3 > MAX_SNAPSHOT_EXTRA_BYTES:
            raise GroupTooLargeError("the group's data would not fit in a snapshot")
        self._outgoing[snapshot_id] = (epoch, applied)
        return epoch.key, extra

    @staticmethod
    def _group_data(snapshot_id: bytes, epoch: _Epoch) -> dict[str, JsonValue]:
        nonce = os.urandom(24)
        chain = msgpack.packb([op.encode() for op in epoch.chain], use_bin_type=True)
        blob = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            chain, b"secsync-group" + snapshot_id, nonce, epoch.key
        )
        return {"v": GROUP_VERSION, "k": list(epoch.sealed), "m": b64encode(nonce + blob)}

    def snapshot_key(self, snapshot: SnapshotInfo) -> bytes:
        known = self._epochs.get(snapshot.snapshot_id)
        if known is not None:
            return known.key
        outgoing = self._outgoing.get(snapshot.snapshot_id)
        if outgoing is not None:
            return outgoing[0].key
        epoch = self._open(snapshot)
        if epoch.members.get(snapshot.author) not in _WRITERS:
            raise MembershipError("the snapshot's author may not write in its membership")
        active = self._epochs.get(self._active) if self._active is not None else None
        if active is not None and active.links[-1] not in epoch.links:
            raise MembershipError("the membership chain does not extend the verified one")
        self._remember(snapshot.snapshot_id, epoch)
        return epoch.key

    def membership_chain(self, snapshot: SnapshotInfo) -> tuple[bytes, ...] | None:
        """The links of the verified chain of ``snapshot`` (after :meth:`snapshot_key`)."""
        epoch = self._epochs.get(snapshot.snapshot_id)
        return epoch.links if epoch is not None else None

    def _open(self, snapshot: SnapshotInfo) -> _Epoch:
        group = snapshot.extra.get("g")
        if not isinstance(group, Mapping) or group.get("v") != GROUP_VERSION:
            raise MembershipError("snapshot carries no group data of this version")
        sealed, blob = group.get("k"), group.get("m")
        if (
            not isinstance(sealed, list)
            or not isinstance(blob, str)
            or len(sealed) > MAX_MEMBERS
            or not all(isinstance(item, str) for item in sealed)
        ):
            raise MembershipError("malformed group data")
        sealed_keys = tuple(str(item) for item in sealed)
        key = None
        for item in self._likely_first(sealed_keys):
            try:
                key = self._box.decrypt(b64decode(item))
                break
            except (nacl.exceptions.CryptoError, AccessError, ValueError):
                continue
        if key is None:
            raise NotAMemberError("no key of this epoch is sealed to us")
        try:
            raw = b64decode(blob)
            data = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                raw[24:], b"secsync-group" + snapshot.snapshot_id, raw[:24], check_key(key)
            )
            items = msgpack.unpackb(
                data, raw=False, strict_map_key=False, max_array_len=2 * MAX_MEMBERS + MAX_OPS
            )
        except Exception:
            raise MembershipError("group data does not decrypt") from None
        if not isinstance(items, list) or not items or len(items) > MAX_OPS:
            raise MembershipError("malformed membership chain")
        chain = tuple(MembershipOp.decode(item) for item in items)
        members, links = self._verify(chain)
        last = chain[-1]
        if epoch_commitment(key) != last.epoch:
            raise MembershipError("the epoch key is not the one an admin introduced")
        if sealed_commitment(sealed_keys) != last.sealed:
            raise MembershipError("the sealed keys are not the ones an admin wrote")
        return _Epoch(members, key, chain, links, sealed_keys)

    def _likely_first(self, sealed: tuple[str, ...]) -> list[str]:
        """The sealed keys in the order to try them: keys are sealed in the order of the sorted
        roster, so where ours stood in the active epoch is the likely place (one X25519 opening
        instead of up to one per member)."""
        active = self._epochs.get(self._active) if self._active is not None else None
        if active is None or self._me.public_key not in active.members:
            return list(sealed)
        guess = sorted(active.members).index(self._me.public_key)
        if guess >= len(sealed):
            return list(sealed)
        return [sealed[guess], *sealed[:guess], *sealed[guess + 1 :]]

    def _verify(self, chain: Sequence[MembershipOp]) -> tuple[dict[bytes, Role], tuple[bytes, ...]]:
        """Replay ``chain`` from the founders, checking every admin signature once."""
        members: dict[bytes, Role] = {}
        previous = b""
        links: list[bytes] = []
        for index, op in enumerate(chain):
            authority = self._founders if index == 0 else members
            if authority.get(op.author) != "admin":
                raise MembershipError(
                    "a membership change not signed by an admin of the roster it changes"
                    if index
                    else "the first roster is not signed by a founder"
                )
            link = op.digest(previous)
            if link not in self._verified:
                data = op.signed_bytes(previous, op.author, op.changes, op.epoch, op.sealed)
                try:
                    nacl.signing.VerifyKey(op.author).verify(data, op.signature)
                except (nacl.exceptions.BadSignatureError, ValueError):
                    raise MembershipError("a membership change has an invalid signature") from None
            after = self._with_pending(members, op.changes)
            removed = any(role is None and m in members for m, role in op.changes)
            if index and removed and op.epoch == chain[index - 1].epoch:
                raise MembershipError("a removal that does not rotate the key")
            if len(after) > MAX_MEMBERS:
                raise MembershipError("a membership beyond the supported size")
            members = after
            previous = link
            links.append(link)
        self._verified.update(links)
        return members, tuple(links)

    def _remember(self, snapshot_id: bytes, epoch: _Epoch) -> None:
        self._epochs[snapshot_id] = epoch
        self._epochs.move_to_end(snapshot_id)
        while len(self._epochs) > _EPOCHS_KEPT:
            oldest = next(iter(self._epochs))
            if oldest == self._active:
                self._epochs.move_to_end(oldest)
                oldest = next(iter(self._epochs))
            del self._epochs[oldest]

    def snapshot_activated(self, snapshot: SnapshotInfo) -> None:
        """The session's hook: ``snapshot`` became the active one."""
        outgoing = self._outgoing.pop(snapshot.snapshot_id, None)
        self._outgoing.clear()  # drafts built on the previous epoch are void
        if outgoing is not None:
            epoch, applied = outgoing
            self._remember(snapshot.snapshot_id, epoch)
            if applied:
                self._pending.clear()
        self._active = snapshot.snapshot_id

    # --- policy -------------------------------------------------------------------------------

    def may_author(self, kind: MessageKind, author: bytes, public_data: PublicData) -> bool:
        if isinstance(public_data, UpdatePublicData):
            epoch = self._epochs.get(public_data.ref_snapshot_id)
        elif isinstance(public_data, SnapshotPublicData):
            epoch = self._epochs.get(public_data.parent_snapshot_id)
            if epoch is None:
                return True  # checked against its own verified membership on opening
        else:
            epoch = self._epochs.get(self._active) if self._active is not None else None
        if epoch is None:
            # an update for a snapshot we do not know yet waits; judged when it is known
            return kind == MessageKind.UPDATE
        role = epoch.members.get(author)
        if kind == MessageKind.EPHEMERAL:
            return role is not None
        return role in _WRITERS

    def __repr__(self) -> str:
        return f"Group(members={len(self.members)}, pending={len(self._pending)})"


def _changes(
    before: Mapping[bytes, Role], after: Mapping[bytes, Role]
) -> list[tuple[bytes, Role | None]]:
    """The op that turns ``before`` into ``after`` (in a stable order)."""
    out: list[tuple[bytes, Role | None]] = []
    for member in sorted(set(before) | set(after)):
        if before.get(member) != after.get(member):
            out.append((member, after.get(member)))
    return out


def _role(value: Any) -> Role:
    if value not in ROLES:
        raise MembershipError(f"unknown role {value!r}")
    role: Role = value
    return role
