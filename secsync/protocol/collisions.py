"""One identity writing from two clients at once: clock collisions, told apart from replays.

Every author numbers its updates on a snapshot 0, 1, 2, ... A client knows only its own
numbering, so two clients signing with the same key (one stored identity used by two
processes) write the same clock for different content. Both messages are validly signed and
both are stored (an update's message id is a digest of its signature, see
``secsync.transport.subjects.update_msg_id``), so nothing is lost on the broker; what must not
happen is a reader taking the second one for a replay of the first and dropping it.

A reader therefore remembers, per author and clock on the active snapshot, the digests of the
updates it accepted (:class:`ClockDigests`). Another validly signed update of the same author,
clock and snapshot with another digest is a **collision**: its content is applied (CRDT merges
are idempotent and commutative, so every reader ends with the same document whatever order the
two arrive in) and reported (:class:`~secsync.protocol.events.IdentityCollision`). The very same
bytes again are a replay, refused as before. Ed25519 signatures are deterministic and libsodium
refuses non-canonical ones, so only the holder of the key can make a second digest.

The writer whose own key signs an update it did not write, at a clock it wrote itself, learns
that its identity is in use elsewhere when that update brings content its document did not have
(:func:`content_version` before and after): everything this client ever wrote is in its own
document, so new content is certain proof of another writer. A message of ours sealed before a
restart that lost its record brings nothing new, and is only a collision.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from secsync.protocol.messages import Update

if TYPE_CHECKING:
    from secsync.crdt import CrdtAdapter

DIGEST_BYTES: Final = 16
_PERSON: Final = b"secsync-clock"


def message_digest(update: Update) -> bytes:
    """What tells two updates of one author and clock apart: a digest of the signature."""
    return hashlib.blake2b(update.signature, digest_size=DIGEST_BYTES, person=_PERSON).digest()


class ClockDigests:
    """Digests of the accepted updates per ``(author, clock)`` of one snapshot, the newest
    ``limit`` entries (an entry evicted is an update so old that a replay of it is refused as
    a replay, as before this record existed)."""

    __slots__ = ("_seen", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[bytes, int], tuple[bytes, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def get(self, author: bytes, clock: int) -> tuple[bytes, ...]:
        """The digests accepted under ``(author, clock)``; empty when none is known."""
        return self._seen.get((author, clock), ())

    def add(self, author: bytes, clock: int, digest: bytes) -> None:
        if self.limit <= 0:
            return
        key = (author, clock)
        known = self._seen.get(key, ())
        if digest not in known:
            self._seen[key] = (*known, digest)
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def export(self) -> list[list[Any]]:
        return [[author, clock, list(digests)] for (author, clock), digests in self._seen.items()]

    @classmethod
    def restore(cls, data: Iterable[Any], limit: int) -> ClockDigests:
        restored = cls(limit)
        for author, clock, digests in data:
            for digest in digests:
                restored.add(bytes(author), int(clock), bytes(digest))
        return restored


def content_version(crdt: CrdtAdapter) -> object | None:
    """Something that changes whenever the document gains content from anyone: the Yjs state
    vector, the Automerge heads, or an adapter's own ``content_version()``; ``None`` when the
    adapter offers none (then new content cannot be told, and is assumed).

    ``content_version`` is an optional member of the adapter protocol: the adapters of
    ``secsync.crdt`` read their document's (``doc``) state vector or heads instead."""
    own = getattr(crdt, "content_version", None)
    if callable(own):
        version: object = own()
        return version
    doc = getattr(crdt, "doc", None)
    get_state = getattr(doc, "get_state", None)  # pycrdt.Doc
    if callable(get_state):
        state: object = get_state()
        return state
    get_heads = getattr(doc, "get_heads", None)  # automerge core document
    if callable(get_heads):
        return tuple(get_heads())
    return None
