"""Closed groups: users with roles, their devices, one key per snapshot epoch, rotation on
removal, and trust anchored in the founders.

A :class:`Group` is both the session's key provider and its authorization policy.
The chain's parts (roles, :class:`~secsync.access.membership.MembershipOp`, sealing the epoch
key) are in :mod:`secsync.access.membership`.

Size: over 500 lines because :class:`Group` is one state machine: the epochs it knows, the
roster changes waiting for the next snapshot, and the checks that accept or refuse a snapshot's
chain all read and write the same state.

* **Roles are the users'.** The roster lists users (Ed25519 identity keys) with roles and, for
  each user, its devices: device keys with the user's :class:`DeviceCertificate`. A message
  signed by a device is judged by the role of its user; a user without devices signs as itself
  (its identity key), exactly as before devices existed. A user's identity key always stays a
  reader of its own user (so a cold identity key can always come back and add a device).
* **Membership is a chain of signatures.** Every change of the roster is a
  :class:`MembershipOp` signed by the user key or a current device of its author. An admin may
  change anything (users, roles, any user's devices); any other member may only add devices
  its own user certified (the epoch key stays, sealed to the new device as well) and remove
  its own user's devices (which rotates the key). Removing a user removes all its devices.
  A removed device key never comes back. The first op must be signed by an admin among the
  **founders** (or by a device it certified, which that op adds), which every device is given
  out of band (``Group(me, founders=...)``) with the invitation. Nothing in the stream
  replaces them. Each op commits to the epoch key it goes with and to the exact sealed copies
  of that key; an op that changes devices seals the key deterministically (:func:`seal_key`),
  so that every reader holding the key recomputes the copies and checks that exactly the
  roster's keys got one (a member cannot seal the key to an outsider, nor around a member).
* **The chain travels with every snapshot.** A snapshot's public data carries ``"g"``: the epoch
  key sealed (libsodium sealed box) to every user's and device's X25519 key, derived from
  their Ed25519 keys, and the whole chain encrypted under that key and bound to the snapshot
  id. One snapshot is enough to verify the roster from the founders, even after compaction.
  The broker learns how many keys there are and how large the chain is, nothing else. Group
  data version 2 (no device op in the chain) is written byte for byte as before; a chain with
  a device op is version 3.
* **Newest valid, not newest.** A snapshot is accepted only if its chain verifies from the
  founders, its epoch key is the one the chain's last op committed to, its sealed keys are that
  op's, and its author may write in the resulting roster. A running member (or a restarted one,
  which re-verifies its stored snapshot) also requires the chain to extend the one it holds, so a
  replayed older snapshot or a fork by a removed admin is refused (:class:`MembershipError`,
  1003); when loading, a stale or forked chain among the stored snapshots is passed over.
* **Removal rotates the key**: the next epoch's key is sealed only to those who remain, so a
  removed user or device opens nothing written after it (:class:`NotAMemberError`, 1004).
* On receipt, updates and snapshots need a writer or admin, presence needs any member.
* A membership change waits like a local edit: if another snapshot wins the race, it is applied
  again on top of the winner, so two admins removing two members at once both get their way.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import msgpack
import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from secsync.access.membership import (
    GROUP_VERSION,
    GROUP_VERSION_DEVICES,
    MAX_MEMBERS,
    MAX_OPS,
    WRITERS,
    Epoch,
    MembershipOp,
    Role,
    epoch_commitment,
    epoch_readers,
    parse_role,
    seal_key,
    sealed_commitment,
)
from secsync.errors import (
    AccessError,
    DeviceCertificateError,
    GroupTooLargeError,
    MembershipError,
    NotAMemberError,
)
from secsync.protocol.crypto import SigningKeyPair, check_key
from secsync.protocol.devices import CERTIFICATE_FIELD, Device, DeviceCertificate
from secsync.protocol.encoding import JsonValue, b64decode, b64encode
from secsync.protocol.messages import (
    MessageKind,
    PublicData,
    SnapshotInfo,
    SnapshotPublicData,
    UpdatePublicData,
)
from secsync.protocol.wire import MAX_SNAPSHOT_EXTRA_BYTES

_EPOCHS_KEPT = 16


class Group:
    """Key provider and policy of a document with known members (pass it as ``key`` and
    ``policy`` to ``client.open``).

    ``me`` signs as a user itself (a ``SigningKeyPair``) or as one of its devices (a
    :class:`~secsync.protocol.devices.Device`). ``founders`` is the anchor of trust: the
    public keys of the users (and their roles) allowed to write the first roster. Give every
    device the same founders out of band, with the invitation; the default, ``{my user:
    "admin"}``, is right only for the device that founds the group.
    """

    def __init__(
        self, me: SigningKeyPair | Device, founders: Mapping[bytes, Role] | None = None
    ) -> None:
        self._device = me if isinstance(me, Device) else None
        self._me = me.signer if isinstance(me, Device) else me
        self._box = nacl.public.SealedBox(self._me.signing_key.to_curve25519_private_key())
        # snapshot id -> its verified epoch, for recent snapshots whose key we hold
        self._epochs: OrderedDict[bytes, Epoch] = OrderedDict()
        self._outgoing: dict[bytes, tuple[Epoch, bool]] = {}
        self._active: bytes | None = None
        default = {(me.user if isinstance(me, Device) else me.public_key): "admin"}
        self._founders = {k: parse_role(v) for k, v in (founders or default).items()}
        if "admin" not in self._founders.values():
            raise MembershipError("the founders must include an admin")
        if len(self._founders) > MAX_MEMBERS:
            raise GroupTooLargeError(f"a group has at most {MAX_MEMBERS} members")
        self._pending: list[tuple[bytes, Role | None]] = []
        # device changes waiting for the next snapshot: (certificate, key); no certificate
        # removes the device
        self._pending_devices: list[tuple[DeviceCertificate | None, bytes]] = []
        # links already verified (from the founders): a chain is checked once, then extended
        self._verified: set[bytes] = set()
        # last links whose sealed copies were recomputed and found right
        self._sealing_checked: set[bytes] = set()

    # --- membership ---------------------------------------------------------------------------

    @property
    def founders(self) -> dict[bytes, Role]:
        return dict(self._founders)

    def _active_epoch(self) -> Epoch | None:
        return self._epochs.get(self._active) if self._active is not None else None

    @property
    def members(self) -> dict[bytes, Role]:
        """The users of the active snapshot and their roles (the founders before the first)."""
        epoch = self._active_epoch()
        return dict(epoch.members) if epoch is not None else dict(self._founders)

    @property
    def devices(self) -> dict[bytes, bytes]:
        """The devices of the active snapshot: device public key -> its user."""
        epoch = self._active_epoch()
        return dict(epoch.devices) if epoch is not None else {}

    def devices_of(self, user: bytes) -> list[bytes]:
        """The devices of ``user`` in the active snapshot."""
        return sorted(d for d, u in self.devices.items() if u == user)

    def user_of(self, key: bytes) -> bytes | None:
        """The user ``key`` stands for in the active roster (``None``: not a member)."""
        epoch = self._active_epoch()
        if epoch is None:
            return key if key in self._founders else None
        return epoch.user_of(key)

    @property
    def user(self) -> bytes:
        """The user this group signs for (ours, or the user of our device)."""
        return self._device.user if self._device is not None else self._me.public_key

    def add(self, member: bytes, role: Role = "writer") -> None:
        """Add a user or change a role (an admin's change; takes effect with the next
        snapshot). The role is the user's: it applies to all its devices."""
        role = parse_role(role)
        epoch = self._active_epoch()
        if epoch is not None and (member in epoch.devices or member in epoch.revoked):
            raise MembershipError("that key is a device; add its user")
        after = self._with_pending(self.members, [*self._pending, (member, role)])
        if len(epoch_readers(after, self.devices)) > MAX_MEMBERS:
            raise GroupTooLargeError(f"a group has at most {MAX_MEMBERS} members")
        self._pending.append((member, role))

    def remove(self, member: bytes) -> None:
        """Remove a user and all its devices; the next snapshot rotates the key."""
        self._pending.append((member, None))

    def add_device(self, certificate: DeviceCertificate) -> None:
        """Add a device its user certified (takes effect with the next snapshot). No admin
        is needed for a device of our own user: the current epoch key is sealed to it as well
        (the key stays). An admin may add a device of any user of the roster."""
        certificate.verify()
        epoch = self._active_epoch()
        if epoch is not None:
            if certificate.device in epoch.revoked:
                raise MembershipError("a removed device cannot come back; certify a new device key")
            owner = epoch.user_of(certificate.device)
            if owner is not None and owner != certificate.user:
                raise MembershipError("that key already belongs to another member")
            if len(epoch_readers(epoch.members, epoch.devices)) + 1 > MAX_MEMBERS:
                raise GroupTooLargeError(f"a group seals its key to at most {MAX_MEMBERS} keys")
        self._pending_devices.append((certificate, certificate.device))

    def remove_device(self, device: bytes) -> None:
        """Remove a device (a lost one, say) for good; its user stays. The next snapshot
        rotates the key: a new one, sealed to every remaining user and device. No admin is
        needed for a device of our own user (from the identity key or any other current
        device of it); a device cannot remove itself."""
        self._pending_devices.append((None, device))

    @property
    def pending_changes(self) -> int:
        return len(self._pending) + len(self._pending_devices)

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

    def _my_user(self, members: Mapping[bytes, Role], devices: Mapping[bytes, bytes]) -> bytes:
        me = self._me.public_key
        if me in members:
            return me
        return devices.get(me, self.user)

    def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, Mapping[str, JsonValue]]:
        current = self._active_epoch()
        before: dict[bytes, Role] = current.members if current is not None else {}
        before_devices = current.devices if current is not None else {}
        revoked = set(current.revoked) if current is not None else set()
        members = self._with_pending(self._founders if current is None else before, self._pending)
        changes = _changes(before, members)
        # devices of removed users go with them, for good
        devices = {d: u for d, u in before_devices.items() if u in members}
        revoked |= set(before_devices) - set(devices)
        pending_devices = list(self._pending_devices)
        me = self._me.public_key
        if (
            current is None
            and self._device is not None
            and me not in members
            and self._device.user in members
        ):
            pending_devices.insert(0, (self._device.certificate, me))  # the founder's device
        added: dict[bytes, DeviceCertificate] = {}
        removed: list[bytes] = []
        for certificate, key in pending_devices:
            if certificate is None:
                if key in added:
                    del added[key]
                    devices.pop(key, None)
                elif key in devices:
                    del devices[key]
                    removed.append(key)
                    revoked.add(key)
            elif (
                key not in devices
                and key not in revoked
                and key not in members
                and certificate.user in members
            ):  # a change that no longer applies on top of a concurrent snapshot is dropped
                devices[key] = certificate.user
                added[key] = certificate
        if any(m in devices or m in revoked for m, role in changes if role is not None):
            raise MembershipError("a key cannot be both a user and a device")
        readers = epoch_readers(members, devices)
        if me not in readers:
            raise MembershipError("a snapshot must keep its author as a member")
        if current is not None and not changes and not added and not removed:
            # A snapshot that changes nothing keeps the epoch as the member who made it left it.
            epoch = current
            applied = bool(self._pending or self._pending_devices)
        else:
            authority = current.members if current is not None else self._founders
            my_user = self._my_user(authority, before_devices)
            role = authority.get(my_user)
            if role != "admin" and (changes or current is None):
                raise MembershipError("only an admin can change the membership")
            if role not in WRITERS:
                raise MembershipError("only a writer or admin writes the snapshot of a change")
            if role != "admin" and (
                any(c.user != my_user for c in added.values())
                or any(before_devices.get(d) != my_user for d in removed)
            ):
                raise MembershipError("a member adds and removes only its own devices")
            if len(readers) > MAX_MEMBERS:
                raise GroupTooLargeError(f"a group seals its key to at most {MAX_MEMBERS} keys")
            chain = current.chain if current is not None else ()
            if len(chain) >= MAX_OPS:
                raise GroupTooLargeError(f"a membership chain holds at most {MAX_OPS} changes")
            rotate = (
                current is None
                or bool(removed)
                or any(role is None and member in before for member, role in changes)
            )
            key = os.urandom(32) if rotate or current is None else current.key
            sealed = tuple(seal_key(key, reader) for reader in readers)
            previous = current.links[-1] if current is not None else b""
            op = MembershipOp.sign(
                self._me,
                previous,
                changes,
                epoch_commitment(key),
                sealed_commitment(sealed),
                added=tuple(added.values()),
                removed=tuple(removed),
            )
            link = op.digest(previous)
            self._verified.add(link)
            self._sealing_checked.add(link)
            epoch = Epoch(
                members,
                key,
                (*chain, op),
                (*(current.links if current else ()), link),
                sealed,
                devices,
                frozenset(revoked),
            )
            applied = True
        extra = {"g": self._group_data(snapshot_id, epoch)}
        if len(msgpack.packb(extra, use_bin_type=True)) * 4 // 3 > MAX_SNAPSHOT_EXTRA_BYTES:
            raise GroupTooLargeError("the group's data would not fit in a snapshot")
        self._outgoing[snapshot_id] = (epoch, applied)
        return epoch.key, extra

    @staticmethod
    def _group_data(snapshot_id: bytes, epoch: Epoch) -> dict[str, JsonValue]:
        nonce = os.urandom(24)
        chain = msgpack.packb([op.encode() for op in epoch.chain], use_bin_type=True)
        blob = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            chain, b"secsync-group" + snapshot_id, nonce, epoch.key
        )
        version = (
            GROUP_VERSION_DEVICES
            if any(op.changes_devices for op in epoch.chain)
            else GROUP_VERSION
        )
        return {"v": version, "k": list(epoch.sealed), "m": b64encode(nonce + blob)}

    def snapshot_key(self, snapshot: SnapshotInfo) -> bytes:
        known = self._epochs.get(snapshot.snapshot_id)
        if known is not None:
            return known.key
        outgoing = self._outgoing.get(snapshot.snapshot_id)
        if outgoing is not None:
            return outgoing[0].key
        epoch = self._open(snapshot)
        if epoch.role_of(snapshot.author) not in WRITERS:
            raise MembershipError("the snapshot's author may not write in its membership")
        active = self._active_epoch()
        if active is not None and active.links[-1] not in epoch.links:
            raise MembershipError("the membership chain does not extend the verified one")
        self._remember(snapshot.snapshot_id, epoch)
        return epoch.key

    def membership_chain(self, snapshot: SnapshotInfo) -> tuple[bytes, ...] | None:
        """The links of the verified chain of ``snapshot`` (after :meth:`snapshot_key`)."""
        epoch = self._epochs.get(snapshot.snapshot_id)
        return epoch.links if epoch is not None else None

    def _open(self, snapshot: SnapshotInfo) -> Epoch:
        group = snapshot.extra.get("g")
        version = group.get("v") if isinstance(group, Mapping) else None
        if not isinstance(group, Mapping) or version not in (GROUP_VERSION, GROUP_VERSION_DEVICES):
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
        with_devices = version == GROUP_VERSION_DEVICES
        chain = tuple(MembershipOp.decode(item, devices=with_devices) for item in items)
        if with_devices != any(op.changes_devices for op in chain):
            raise MembershipError("group data of the wrong version")
        epoch = self._verify(chain, key, sealed_keys)
        last = chain[-1]
        if epoch_commitment(key) != last.epoch:
            raise MembershipError("the epoch key is not the one its op introduced")
        if sealed_commitment(sealed_keys) != last.sealed:
            raise MembershipError("the sealed keys are not the ones its op wrote")
        if last.changes_devices and epoch.links[-1] not in self._sealing_checked:
            # An op that changes devices (possibly a member's, not an admin's) seals the key
            # deterministically: recompute every copy, so that exactly the roster's keys hold it.
            expected = tuple(seal_key(key, r) for r in epoch_readers(epoch.members, epoch.devices))
            if expected != sealed_keys:
                raise MembershipError("the key is not sealed to exactly the roster's keys")
            self._sealing_checked.add(epoch.links[-1])
        return epoch

    def _likely_first(self, sealed: tuple[str, ...]) -> list[str]:
        """The sealed keys in the order to try them: keys are sealed in the order of the sorted
        readers, so where ours stood in the active epoch is the likely place (one X25519 opening
        instead of up to one per member)."""
        active = self._active_epoch()
        if active is None or active.user_of(self._me.public_key) is None:
            return list(sealed)
        guess = epoch_readers(active.members, active.devices).index(self._me.public_key)
        if guess >= len(sealed):
            return list(sealed)
        return [sealed[guess], *sealed[:guess], *sealed[guess + 1 :]]

    def _verify(self, chain: Sequence[MembershipOp], key: bytes, sealed: tuple[str, ...]) -> Epoch:
        """Replay ``chain`` from the founders, checking every signature once.

        An admin (a user with that role, or one of its devices) may change anything: roles,
        users, any user's devices. Any other member may only add devices its user certified
        (keeping the epoch key) and remove its user's devices (rotating it)."""
        members: dict[bytes, Role] = {}
        devices: dict[bytes, bytes] = {}
        revoked: set[bytes] = set()
        previous = b""
        links: list[bytes] = []
        for index, op in enumerate(chain):
            authority = self._founders if index == 0 else members
            author = op.author if op.author in authority else devices.get(op.author)
            if index == 0 and author is None:
                # the founder's own device signs the first roster, which adds it
                author = next((c.user for c in op.added if c.device == op.author), None)
            role = authority.get(author) if author is not None else None
            admin = role == "admin"
            if (index == 0 or op.changes) and not admin:
                raise MembershipError(
                    "a membership change not signed by an admin of the roster it changes"
                    if index
                    else "the first roster is not signed by a founder"
                )
            if role is None:
                raise MembershipError("a membership change not signed by a member")
            if not op.changes and not op.changes_devices:
                raise MembershipError("a membership op that changes nothing")
            link = op.digest(previous)
            if link not in self._verified:
                try:
                    nacl.signing.VerifyKey(op.author).verify(op.body(previous), op.signature)
                except (nacl.exceptions.BadSignatureError, ValueError):
                    raise MembershipError("a membership change has an invalid signature") from None
            after = self._with_pending(members, op.changes)
            removed = any(role is None and m in members for m, role in op.changes)
            for device, user in list(devices.items()):
                if user not in after:  # a removed user's devices go with it, for good
                    del devices[device]
                    revoked.add(device)
            for member, new_role in op.changes:
                if new_role is not None and (member in devices or member in revoked):
                    raise MembershipError("a key cannot be both a user and a device")
            for certificate in op.added:
                if link not in self._verified:
                    try:
                        certificate.verify()
                    except DeviceCertificateError:
                        raise MembershipError("a device certificate that does not verify") from None
                if not admin and certificate.user != author:
                    raise MembershipError("a member adds devices of its own user only")
                if certificate.user not in after:
                    raise MembershipError("a device of a user who is not a member")
                if certificate.device in revoked:
                    raise MembershipError("a removed device cannot come back")
                if certificate.device in devices or certificate.device in after:
                    raise MembershipError("a device already in the roster")
                devices[certificate.device] = certificate.user
            for device in op.removed:
                owner = devices.get(device)
                if owner is None:
                    raise MembershipError("removes a device that is not in the roster")
                if not admin and owner != author:
                    raise MembershipError("a member removes devices of its own user only")
                del devices[device]
                revoked.add(device)
                removed = True
            if index and removed and op.epoch == chain[index - 1].epoch:
                raise MembershipError("a removal that does not rotate the key")
            if index and not admin and not removed and op.epoch != chain[index - 1].epoch:
                raise MembershipError("only an admin introduces a key without a removal")
            if len(epoch_readers(after, devices)) > MAX_MEMBERS:
                raise MembershipError("a membership beyond the supported size")
            members = after
            previous = link
            links.append(link)
        self._verified.update(links)
        return Epoch(members, key, tuple(chain), tuple(links), sealed, devices, frozenset(revoked))

    def _remember(self, snapshot_id: bytes, epoch: Epoch) -> None:
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
                self._pending_devices.clear()
        self._active = snapshot.snapshot_id

    # --- policy -------------------------------------------------------------------------------

    def may_author(self, kind: MessageKind, author: bytes, public_data: PublicData) -> bool:
        """Judge ``author`` by the role of its user: a user signing as itself, or one of its
        current devices (whose certificate, if the message carries one, must name that same
        user). A removed device, or a device of a removed user, is refused."""
        if isinstance(public_data, UpdatePublicData):
            epoch = self._epochs.get(public_data.ref_snapshot_id)
        elif isinstance(public_data, SnapshotPublicData):
            epoch = self._epochs.get(public_data.parent_snapshot_id)
            if epoch is None:
                return True  # checked against its own verified membership on opening
        else:
            epoch = self._active_epoch()
        if epoch is None:
            # an update for a snapshot we do not know yet waits; judged when it is known
            return kind == MessageKind.UPDATE
        role = epoch.role_of(author)
        if (
            role is not None
            and author in epoch.devices
            and not _certifies(public_data.extra.get(CERTIFICATE_FIELD), epoch.devices[author])
        ):
            return False
        if kind == MessageKind.EPHEMERAL:
            return role is not None
        return role in WRITERS

    def __repr__(self) -> str:
        return (
            f"Group(members={len(self.members)}, devices={len(self.devices)}, "
            f"pending={self.pending_changes})"
        )


def _certifies(text: object, user: bytes) -> bool:
    """Whether a message's certificate field (if any) names ``user`` (its signature is the
    session's to check)."""
    if text is None:
        return True
    if not isinstance(text, str):
        return False
    try:
        return DeviceCertificate.from_b64(text).user == user
    except DeviceCertificateError:
        return False


def _changes(
    before: Mapping[bytes, Role], after: Mapping[bytes, Role]
) -> list[tuple[bytes, Role | None]]:
    """The op that turns ``before`` into ``after`` (in a stable order)."""
    out: list[tuple[bytes, Role | None]] = []
    for member in sorted(set(before) | set(after)):
        if before.get(member) != after.get(member):
            out.append((member, after.get(member)))
    return out
