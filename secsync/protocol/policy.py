"""Authorization hook: may this public key author this kind of message?"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from secsync.protocol.messages import MessageKind, PublicData


@runtime_checkable
class AuthorPolicy(Protocol):
    """Decides, on receipt, whether ``author`` may author a message of ``kind``.

    Returning False rejects the message (codes 114 / 215 / 304); raising an exception rejects
    it too (104 / 205 / 304). The default allows every holder of the document key.
    """

    def may_author(self, kind: MessageKind, author: bytes, public_data: PublicData) -> bool: ...


class AllowAll:
    """Every holder of the document key may write."""

    def may_author(self, kind: MessageKind, author: bytes, public_data: PublicData) -> bool:
        return True


class AllowList:
    """Only the listed public keys may write; ``readers`` may send ephemeral messages only."""

    def __init__(self, writers: Iterable[bytes], readers: Iterable[bytes] = ()) -> None:
        self.writers = frozenset(writers)
        self.readers = frozenset(readers)

    def may_author(self, kind: MessageKind, author: bytes, public_data: PublicData) -> bool:
        if author in self.writers:
            return True
        return kind == MessageKind.EPHEMERAL and author in self.readers
