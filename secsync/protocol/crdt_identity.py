"""CRDT identities bound to users: Yjs client ids and Automerge actor ids derived from a key.

Yjs and Automerge attribute content to the client or actor id written in it, not to whoever
signed the message that carried it. Without a binding, a member can sign content under another
member's id and next clock: whoever receives it first keeps it, the real author's content at
that clock is ignored (Yjs) or refused as a duplicate (Automerge), and the document diverges
for good. A *bound* id can only be written by the user it was derived from:

* **Yjs** client id, 53 bits (a JavaScript-safe integer, as lib0 writes it)::

      tag (16 bits, 0xB5EC) | user hash (25 bits) | suffix (12 bits, random per session)

  The tag's top bit makes every bound id at least 2**52. pycrdt draws its own ids uniformly
  from 53 bits, so an unbound pycrdt id has this form by chance once in 65,536 (JavaScript
  Yjs draws 32 bits: never); such a document cannot be opened (``LocalIdentityError``) and
  its old updates are refused. The user hash is Argon2id (libsodium, 8 MiB, one pass) of the
  user's public key, so that finding another key with the same 25 bits costs about 2**25
  Argon2id runs (days of CPU time), not 2**25 fast hashes (seconds); a verifier computes it
  once per user (cached). 53 bits cannot hold a tag, a collision-proof hash and a suffix:
  this binding makes forging costly, the Automerge one impossible.
* **Automerge** actor id, 28 bytes: ``0x5E 0xC5 0xAC 0x01``, the 16-byte BLAKE2b of the user's
  public key, 8 random bytes per session. Automerge's own actor ids are 16 random bytes.

The user of a message is the user of its signing key (``DocumentSession(user_of=...)``; by
default the signing key itself), so every device and every client of one user may write under
that user's ids. Ids of any other form are *legacy* (random ids of existing documents, of
JavaScript clients): accepted unless ``SecsyncConfig.legacy_crdt_ids`` is off. Pure functions,
no I/O.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Collection, Iterable
from functools import lru_cache
from typing import Final

import nacl.pwhash

from secsync.protocol.encoding import b64encode

CrdtId = int | bytes
"""A Yjs client id (``int``) or an Automerge actor id (``bytes``)."""

UserOf = Callable[[bytes], bytes]
"""The user (identity public key) a message signing key belongs to."""

YJS_TAG: Final = 0xB5EC
YJS_TAG_BITS: Final = 16
YJS_HASH_BITS: Final = 25
YJS_SUFFIX_BITS: Final = 12
YJS_ID_BITS: Final = YJS_TAG_BITS + YJS_HASH_BITS + YJS_SUFFIX_BITS  # 53
_YJS_TAG_SHIFT: Final = YJS_HASH_BITS + YJS_SUFFIX_BITS
_YJS_HASH_MASK: Final = (1 << YJS_HASH_BITS) - 1
_YJS_SALT: Final = b"secsync-yjs-id/1"  # Argon2id's 16-byte salt, a domain separator here
_YJS_OPSLIMIT: Final = 1
_YJS_MEMLIMIT: Final = 8 * 1024 * 1024

ACTOR_TAG: Final = b"\x5e\xc5\xac\x01"
ACTOR_HASH_BYTES: Final = 16
ACTOR_SUFFIX_BYTES: Final = 8
ACTOR_BYTES: Final = len(ACTOR_TAG) + ACTOR_HASH_BYTES + ACTOR_SUFFIX_BYTES  # 28
_ACTOR_PERSON: Final = b"secsync-am-actor"  # BLAKE2b personalisation (16 bytes)


def same_user(signing_key: bytes) -> bytes:
    """The default ``user_of``: every signing key is a user of its own."""
    return signing_key


# --- Yjs ------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def yjs_user_hash(user: bytes) -> int:
    """The 25-bit user hash of bound Yjs client ids (Argon2id, about 10 ms, then cached)."""
    digest = nacl.pwhash.argon2id.kdf(
        16, bytes(user), _YJS_SALT, opslimit=_YJS_OPSLIMIT, memlimit=_YJS_MEMLIMIT
    )
    return int.from_bytes(digest[:8], "big") >> (64 - YJS_HASH_BITS)


def is_bound_yjs_id(client_id: int) -> bool:
    """Whether ``client_id`` has the form of a bound id (whoever it is bound to)."""
    return client_id >> _YJS_TAG_SHIFT == YJS_TAG


def bound_yjs_id(user: bytes, suffix: int) -> int:
    """The bound Yjs client id of ``user`` with this 12-bit ``suffix``."""
    if not 0 <= suffix < 1 << YJS_SUFFIX_BITS:
        raise ValueError(f"suffix {suffix} is not a {YJS_SUFFIX_BITS}-bit number")
    return (YJS_TAG << _YJS_TAG_SHIFT) | (yjs_user_hash(user) << YJS_SUFFIX_BITS) | suffix


def new_yjs_client_id(user: bytes, *, taken: Collection[int] = ()) -> int:
    """A bound Yjs client id of ``user`` with a random suffix, none of ``taken`` (the ids in the
    document's state vector, say) when a free suffix is left."""
    base = bound_yjs_id(user, 0)
    free = [s for s in range(1 << YJS_SUFFIX_BITS) if base | s not in taken] if taken else []
    if taken and free:
        return base | secrets.choice(free)
    return base | secrets.randbelow(1 << YJS_SUFFIX_BITS)


def yjs_id_bound_to(client_id: int, user: bytes) -> bool:
    return is_bound_yjs_id(client_id) and (
        client_id >> YJS_SUFFIX_BITS
    ) & _YJS_HASH_MASK == yjs_user_hash(user)


# --- Automerge ------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def actor_user_hash(user: bytes) -> bytes:
    """The 16-byte user hash of bound Automerge actor ids."""
    return hashlib.blake2b(bytes(user), digest_size=ACTOR_HASH_BYTES, person=_ACTOR_PERSON).digest()


def is_bound_actor(actor: bytes) -> bool:
    return len(actor) == ACTOR_BYTES and actor.startswith(ACTOR_TAG)


def new_actor_id(user: bytes) -> bytes:
    """A bound Automerge actor id of ``user`` with a random suffix."""
    return ACTOR_TAG + actor_user_hash(user) + secrets.token_bytes(ACTOR_SUFFIX_BYTES)


def actor_bound_to(actor: bytes, user: bytes) -> bool:
    tag = len(ACTOR_TAG)
    return is_bound_actor(actor) and actor[tag : tag + ACTOR_HASH_BYTES] == actor_user_hash(user)


# --- both -----------------------------------------------------------------------------------


def is_bound(crdt_id: CrdtId) -> bool:
    """Whether ``crdt_id`` has the form of a bound id."""
    return is_bound_yjs_id(crdt_id) if isinstance(crdt_id, int) else is_bound_actor(crdt_id)


def bound_to(crdt_id: CrdtId, user: bytes) -> bool:
    if isinstance(crdt_id, int):
        return yjs_id_bound_to(crdt_id, user)
    return actor_bound_to(crdt_id, user)


def refused_ids(ids: Iterable[CrdtId], user: bytes, *, legacy: bool = True) -> list[CrdtId]:
    """The ids among ``ids`` that ``user`` may not write under: ids bound to another user, and,
    unless ``legacy``, ids that are not bound at all. Bound ids cost a comparison each (the
    user's hash is cached), legacy ones a shift."""
    refused = []
    for crdt_id in ids:
        if is_bound(crdt_id):
            if not bound_to(crdt_id, user):
                refused.append(crdt_id)
        elif not legacy:
            refused.append(crdt_id)
    return refused


def describe(crdt_id: CrdtId) -> str:
    """A short label of an id for errors and logs (ids are public: they are in the content)."""
    if isinstance(crdt_id, int):
        kind = "bound" if is_bound_yjs_id(crdt_id) else "legacy"
        return f"Yjs client id {crdt_id} ({kind})"
    kind = "bound" if is_bound_actor(crdt_id) else "legacy"
    return f"Automerge actor {b64encode(crdt_id)[:12]} ({kind})"


__all__ = [
    "ACTOR_BYTES",
    "CrdtId",
    "UserOf",
    "actor_bound_to",
    "bound_to",
    "bound_yjs_id",
    "describe",
    "is_bound",
    "is_bound_actor",
    "is_bound_yjs_id",
    "new_actor_id",
    "new_yjs_client_id",
    "refused_ids",
    "same_user",
    "yjs_id_bound_to",
]
