"""CRDT adapters: the protocol sees only opaque bytes, these turn them into document changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from secsync.crdt.failures import crdt_failure
from secsync.errors import CrdtAdapterError

if TYPE_CHECKING:  # the CRDT libraries load only when a document is used
    import automerge
    import automerge.core
    import pycrdt


@runtime_checkable
class CrdtAdapter(Protocol):
    """The small interface a document session needs from a CRDT document.

    Two optional methods bind CRDT identities to users (``secsync.protocol.crdt_identity``);
    an adapter without them is not checked:

    * ``authors_of(changes) -> set[int | bytes]``: the Yjs client ids or Automerge actors the
      changes write content under (raising ``UpdateApplyError`` if malformed), called before
      ``apply_changes`` on every received update;
    * ``bind_identity(user, *, legacy)``: called once when the session is created, with our
      user's public key: make or check that the document writes under an id bound to it
      (``LocalIdentityError`` otherwise), and never hand out content readers would refuse.
    """

    def take_local_changes(self) -> list[bytes]:
        """Changes made locally since the last call (never ones applied from remote)."""
        ...

    def apply_changes(self, changes: Sequence[bytes]) -> None:
        """Apply remote changes, or raise ``UpdateApplyError`` and leave the document as it was."""
        ...

    def apply_snapshot(self, state: bytes) -> None:
        """Merge a snapshot's full state, or raise ``SnapshotApplyError`` and change nothing."""
        ...

    def encode_state(self) -> bytes:
        """The whole state, as a snapshot carries it."""
        ...

    def missing_from(self, state: bytes) -> list[bytes]:
        """Changes of this document that the full ``state`` lacks (for recovery)."""
        ...

    def close(self) -> None:
        """Stop observing the document."""
        ...


@runtime_checkable
class ContentCheck(Protocol):
    """What an adapter may add to :class:`CrdtAdapter` so that a session checks snapshots by
    their content rather than by what their author claims. Both adapters shipped here have it;
    an adapter without it keeps working, and the session then trusts a snapshot's claimed
    clocks for our own changes and does not check it for lost content.

    Both are called after :meth:`CrdtAdapter.apply_snapshot` merged ``state``; content is
    checked before the CRDT library sees it, and a failure is a typed ``SecsyncError``.
    """

    def uncontained(self, state: bytes, changes: Sequence[bytes]) -> list[bytes]:
        """Those of ``changes`` (ours, as taken from this document) that the full ``state``
        does not hold entirely, in their order."""
        ...

    def lacks(self, state: bytes, extra: Sequence[bytes]) -> bool:
        """Whether this document holds content that ``state`` and ``extra`` (changes already
        applied here) together do not."""
        ...


CrdtDocument: TypeAlias = (
    "pycrdt.Doc[Any] | automerge.Document | automerge.core.Document | CrdtAdapter"
)
"""What ``SecsyncClient.open``, ``open_shared`` and ``DocumentSession`` take as ``crdt``: a
``pycrdt.Doc`` (best made with :func:`secsync.new_yjs_doc`), an Automerge document (the
``automerge.Document`` wrapper or an ``automerge.core.Document``), or any object that
implements :class:`CrdtAdapter`. Anything else raises ``CrdtAdapterError`` (803).
(automerge ships no type information: its two types check as ``Any``.)"""


def adapter_for(document: CrdtDocument) -> CrdtAdapter:
    """Wrap a ``pycrdt.Doc`` or an ``automerge`` document (core or the wrapper)."""
    if isinstance(document, CrdtAdapter):
        return document
    try:
        import pycrdt
    except ImportError:  # pragma: no cover - a declared dependency
        pycrdt = None  # type: ignore[assignment]
    if pycrdt is not None and isinstance(document, pycrdt.Doc):
        from secsync.crdt.yjs import YjsAdapter

        return YjsAdapter(document)
    from secsync.crdt.automerge import AutomergeAdapter, core_document

    core = core_document(document)
    if core is not None:
        return AutomergeAdapter(core)
    raise CrdtAdapterError(
        f"unsupported CRDT document {type(document).__name__}: "
        "use pycrdt.Doc, an automerge Document, or a CrdtAdapter"
    )


__all__ = ["ContentCheck", "CrdtAdapter", "CrdtDocument", "adapter_for", "crdt_failure"]
