"""What a session may hold for updates it cannot apply yet, in bytes.

Out-of-order updates wait for their predecessor, and updates on a snapshot that has not arrived
wait for it. Anyone who may publish on a document's subjects can send such updates, under as
many fresh identities as they like, so what waits is bounded per author, in total, and in the
number of authors; an update over the budget is refused (and reported), never kept.
"""

from __future__ import annotations

from secsync.errors import UpdateQueueFullError


class QueueBudget:
    """Byte accounting of the updates held by a session, by author."""

    __slots__ = ("_by_author", "_total", "authors", "per_author", "total")

    def __init__(self, *, per_author: int, total: int, authors: int) -> None:
        self.per_author = per_author
        self.total = total
        self.authors = authors
        self._by_author: dict[bytes, int] = {}
        self._total = 0

    @property
    def held(self) -> int:
        """Bytes held now."""
        return self._total

    def held_by(self, author: bytes) -> int:
        return self._by_author.get(author, 0)

    def admit(self, author: bytes, size: int) -> None:
        """Count ``size`` more bytes for ``author``, or raise :class:`UpdateQueueFullError`."""
        mine = self._by_author.get(author)
        if mine is None and len(self._by_author) >= self.authors:
            raise UpdateQueueFullError(
                f"updates of {len(self._by_author)} authors already wait; no room for another"
            )
        mine = mine or 0
        if mine + size > self.per_author:
            raise UpdateQueueFullError(
                f"this author's waiting updates would exceed {self.per_author} bytes"
            )
        if self._total + size > self.total:
            raise UpdateQueueFullError(f"waiting updates would exceed {self.total} bytes in all")
        self._by_author[author] = mine + size
        self._total += size

    def release(self, author: bytes, size: int) -> None:
        left = self._by_author.get(author, 0) - size
        self._total -= min(size, self._total)
        if left > 0:
            self._by_author[author] = left
        else:
            self._by_author.pop(author, None)
