"""Yjs documents through pycrdt: updates are Yjs updates, a snapshot is the full state.

Content is in the Yjs update format v1 (what pycrdt speaks) unless the adapter is made with
``content_format="v2"``, the format of JavaScript apps on ``secsync-react-yjs``: then what it
sends is v2 and what it receives is converted (:mod:`secsync.crdt.yjs_v2`) before the checks
and pycrdt see it.

Remote content is checked by :mod:`secsync.crdt.yjs_format` before pycrdt sees it (yrs decodes
recursively and trusts declared lengths), and any failure of pycrdt, a Rust panic included, is
the typed rejection of that one message.

Size: one adapter class, most of it the bookkeeping of content yrs keeps pending.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Collection, Sequence
from typing import Any

import pycrdt

from secsync.crdt.failures import crdt_failure
from secsync.crdt.yjs_format import (
    UpdateSummary,
    YjsFormatError,
    check_updates,
    covers,
    decode_state_vector,
    merged,
)
from secsync.crdt.yjs_v2 import ContentFormat, as_v1, v1_to_v2
from secsync.errors import (
    LocalIdentityError,
    SecsyncError,
    SnapshotApplyError,
    UpdateApplyError,
    UpdatePendingBudgetError,
)
from secsync.logs import get_logger
from secsync.protocol import crdt_identity
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.devices import Device, UserIdentity
from secsync.protocol.keys import signing_key_pair

log = get_logger("secsync.crdt")

_EMPTY_UPDATE = b"\x00\x00"

DEFAULT_PENDING_BYTES = 4 * 1024 * 1024
"""``SecsyncConfig.max_pending_bytes``'s default (a session sets its own)."""

_ENTRY_BYTES = 256
"""What tracking one pending change costs the budget besides its bytes (so that a flood of
tiny changes is bounded in number too)."""

Ranges = dict[int, list[tuple[int, int]]]


def new_yjs_doc(
    user: SigningKeyPair | Device | UserIdentity | str | bytes,
    *,
    state: bytes | None = None,
    **options: Any,
) -> pycrdt.Doc[Any]:
    """A ``pycrdt.Doc`` that writes under a client id bound to ``user``: the signing key pair
    (or its text form), or, when devices sign for a user, the :class:`Device` (or its text
    form), the :class:`UserIdentity` or the user's public key. The id's
    suffix is random, so several clients of one user do not collide. Readers refuse content
    under it that anyone else signed. ``state`` (an update the application saved) is loaded
    into the document, and the suffix avoids the ids it holds. ``options`` go to
    ``pycrdt.Doc`` (``client_id`` excepted)."""
    if "client_id" in options:
        raise TypeError("new_yjs_doc chooses the client_id")
    if isinstance(user, str) and user.strip().startswith("device:"):
        user = Device.from_b64(user)
    if isinstance(user, bytes):
        key = bytes(user)
    elif isinstance(user, Device | UserIdentity):
        key = user.user if isinstance(user, Device) else user.public_key
    else:
        key = signing_key_pair(user, parameter="user").public_key
    taken: set[int] = set()
    if state is not None:
        taken.update(_checked([state], UpdateApplyError)[0].client_ids)
    doc: pycrdt.Doc[Any] = pycrdt.Doc(
        client_id=crdt_identity.new_yjs_client_id(key, taken=taken), **options
    )
    if state is not None:
        doc.apply_update(state)
    return doc


def _var_uint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_state_vector(state: dict[int, int]) -> bytes:
    parts = [_var_uint(len(state))]
    for client, clock in state.items():
        parts += [_var_uint(client), _var_uint(clock)]
    return b"".join(parts)


def _as_v1(update: bytes, error: type[SecsyncError]) -> bytes:
    return as_v1(update, error=error)[0]


def _checked(
    changes: Sequence[bytes], error: type[SecsyncError], *, track: bool = False
) -> list[UpdateSummary]:
    try:
        return check_updates(changes, track=track)
    except YjsFormatError as exc:
        raise error(f"not a valid Yjs update: {exc}") from None


class _Content:
    """The IDs some Yjs content holds: struct and delete ranges per client, joined."""

    __slots__ = ("deletes", "structs")

    def __init__(self, summaries: Sequence[UpdateSummary]) -> None:
        structs: Ranges = {}
        deletes: Ranges = {}
        for summary in summaries:
            for client, ranges in summary.structs_by_client.items():
                structs.setdefault(client, []).extend(ranges)
            for client, ranges in summary.deleted_by_client.items():
                deletes.setdefault(client, []).extend(ranges)
        self.structs = {client: merged(ranges) for client, ranges in structs.items()}
        self.deletes = {client: merged(ranges) for client, ranges in deletes.items()}

    def holds(self, summary: UpdateSummary) -> bool:
        return _within(summary.structs_by_client, self.structs) and _within(
            summary.deleted_by_client, self.deletes
        )


def _within(ranges: Ranges, held: Ranges) -> bool:
    for client, wanted in ranges.items():
        have = held.get(client, [])
        if not all(covers(have, start, end) for start, end in wanted):
            return False
    return True


def _needs(summary: UpdateSummary) -> dict[int, int]:
    """Per client, the clock the document must reach for all of ``summary`` to be in it."""
    need: dict[int, int] = {}
    for ranges in (summary.structs_by_client, summary.deleted_by_client):
        for client, held in ranges.items():
            for _, end in held:
                if end > need.get(client, 0):
                    need[client] = end
    return need


def _ready(summary: UpdateSummary, vector: dict[int, int]) -> bool:
    """Whether yrs can integrate all of an update on a document at ``vector`` (otherwise
    part of it stays pending): each client's structs continue what the document has, every ID
    they name is there, and the delete set names only known clocks."""
    for client, ranges in summary.structs_by_client.items():
        known = vector.get(client, 0)
        for start, end in ranges:
            if start > known:
                return False
            known = max(known, end)
    if any(clock >= vector.get(client, 0) for client, clock in summary.references):
        return False
    return all(
        end <= vector.get(client, 0)
        for client, ranges in summary.deleted_by_client.items()
        for _, end in ranges
    )


class YjsAdapter:
    """Observes a ``pycrdt.Doc``; each local transaction becomes one change.

    ``content_format`` is the Yjs update format of the document's content on the wire: ``"v1"``
    (the default, what pycrdt writes) or ``"v2"`` (what ``secsync-react-yjs`` writes and reads).
    With ``"v2"``, changes and snapshots go out in v2, and content received is read in either
    format: bytes that do not start with 0 are v1 (v2 starts with its feature flag 0), and bytes
    starting with 0 are read as v2 unless they are not v2, then as v1 (a v1 update holding only
    deletions, or nothing, starts with 0). Bytes that are both (a v1 update without structs
    that happens to parse as v2) are read as v2, as JavaScript peers in v2 read them; the empty
    v1 update ``00 00`` is not v2. Peers of one document must agree on ``"v2"`` to read each
    other: a peer in ``"v1"`` refuses v2 content as malformed."""

    def __init__(self, doc: pycrdt.Doc[Any], *, content_format: ContentFormat = "v1") -> None:
        if content_format not in ("v1", "v2"):
            raise ValueError(f"content_format is 'v1' or 'v2', not {content_format!r}")
        self.doc = doc
        self.content_format: ContentFormat = content_format
        self._v2 = content_format == "v2"
        # With v2, the last content converted to v1 (the caller's list and its conversion), so
        # that authors_of then apply_changes, or apply_snapshot then uncontained, convert once.
        self._converted: tuple[Sequence[bytes], list[bytes]] | None = None
        self._converted_state: tuple[bytes, bytes] | None = None
        self._local: list[bytes] = []
        self._applying = False
        self._listener: Callable[[], None] | None = None
        # Changes authors_of has just checked (and their summaries), for apply_changes not to
        # check them again.
        self._checked: tuple[Sequence[bytes], list[UpdateSummary]] | None = None
        # The clients whose content this session must not send (see bind_identity).
        self._foreign: Callable[[Collection[int]], list[int]] = lambda ids: []
        self.max_pending_bytes = DEFAULT_PENDING_BYTES
        # Received content yrs keeps pending (missing dependencies): by id, its size and the
        # clock per client the document must reach for it to be integrated; and per client, a
        # heap of (clock needed, id) of the entries waiting on that client now.
        self._pending: dict[int, tuple[int, dict[int, int]]] = {}
        self._waiting_on: dict[int, list[tuple[int, int]]] = {}
        self._pending_ids = itertools.count()
        self._pending_size = 0
        # The document's state vector as _apply left it (None: ask pycrdt; asking opens a
        # transaction, which costs as much as applying a keystroke).
        self._vector: dict[int, int] | None = None
        self._state: tuple[bytes, UpdateSummary] | None = None  # the last snapshot checked
        existing = doc.get_update()
        # until taken: content the application put in before opening, a local change like any
        # other (bind_identity leaves other users' content out of it)
        self._existing: bytes | None = None
        if existing != _EMPTY_UPDATE:
            self._existing = existing
            self._local.append(existing)
        self._subscription = doc.observe(self._on_transaction)

    def bind_identity(self, user: bytes, *, legacy: bool = True) -> None:
        """The session's user: our client id must be bound to it (or be unbound, if
        ``legacy``), and content under ids bound to other users (or unbound ones, unless
        ``legacy``) is never sent: readers would refuse the whole update. Raises
        :class:`LocalIdentityError`."""
        client_id = self.doc.client_id
        if crdt_identity.refused_ids([client_id], user, legacy=legacy):
            raise LocalIdentityError(
                f"this document writes under {crdt_identity.describe(client_id)}, which is not "
                "bound to this identity: create it with secsync.new_yjs_doc(identity)"
            )
        if not crdt_identity.is_bound_yjs_id(client_id):
            log.warning("yjs_client_id_unbound", client_id=client_id)
        self._foreign = lambda ids: [
            int(i) for i in crdt_identity.refused_ids(ids, user, legacy=legacy)
        ]
        if self._existing is not None and self._local and self._local[0] is self._existing:
            self._existing = None
            without = self._without_foreign(None)
            if without == _EMPTY_UPDATE:
                del self._local[0]
            else:
                self._local[0] = without

    def _without_foreign(self, state: bytes | None) -> bytes:
        """``doc.get_update(state)`` without the structs of clients we must not send (the
        state vector asked for claims to hold all of them already)."""
        ours = decode_state_vector(self.doc.get_state())
        foreign = self._foreign(list(ours))
        if not foreign:
            return self.doc.get_update() if state is None else self.doc.get_update(state)
        vector = {} if state is None else decode_state_vector(state)
        for client in foreign:
            vector[client] = max(vector.get(client, 0), ours[client])
        return self.doc.get_update(encode_state_vector(vector))

    def authors_of(self, changes: Sequence[bytes]) -> set[int]:
        """The clients whose structs ``changes`` carry (checking them as ``apply_changes``
        would, which then does not check them again). Raises ``UpdateApplyError``."""
        changes = self._in(changes, UpdateApplyError)
        summaries = _checked(changes, UpdateApplyError, track=True)
        self._checked = (changes, summaries)
        return {client for summary in summaries for client in summary.client_ids}

    def _in(self, changes: Sequence[bytes], error: type[SecsyncError]) -> Sequence[bytes]:
        """Received changes in v1 (as they are, unless the content format is v2)."""
        if not self._v2:
            return changes
        converted = self._converted
        if (
            converted is not None
            and len(converted[0]) == len(changes)
            and all(a is b for a, b in zip(converted[0], changes, strict=True))
        ):
            return converted[1]
        v1 = [_as_v1(change, error) for change in changes]
        self._converted = (changes, v1)
        return v1

    def _in_state(self, state: bytes) -> bytes:
        """A received full state in v1."""
        if not self._v2:
            return state
        cached = self._converted_state
        if cached is not None and (cached[0] is state or cached[0] == state):
            return cached[1]
        v1 = _as_v1(state, SnapshotApplyError)
        self._converted_state = (state, v1)
        return v1

    def _out(self, update: bytes, error: type[SecsyncError]) -> bytes:
        """Content we hand out, in the content format."""
        return v1_to_v2(update, error=error) if self._v2 else update

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if self._applying:
            return
        self._vector = None  # the document changed outside _apply
        update = event.update
        if update != _EMPTY_UPDATE:
            self._local.append(update)
            if self._listener is not None:
                self._listener()

    def set_change_listener(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener`` after every local transaction (to wake a sender)."""
        self._listener = listener

    def take_local_changes(self) -> list[bytes]:
        changes, self._local = self._local, []
        self._existing = None
        if self._v2:
            return [self._out(change, UpdateApplyError) for change in changes]
        return changes

    def untaken_changes(self) -> int:
        """Local transactions not taken yet (nothing is taken by asking)."""
        return len(self._local)

    def set_pending_budget(self, size: int) -> None:
        """Bytes of received content that may wait for missing dependencies (see
        ``SecsyncConfig.max_pending_bytes``)."""
        self.max_pending_bytes = size

    @property
    def pending_bytes(self) -> int:
        """Bytes of received content yrs keeps waiting for dependencies it has not seen (with
        256 bytes more for each change tracked)."""
        return self._pending_size

    def apply_changes(self, changes: Sequence[bytes]) -> None:
        self._apply(self._in(changes, UpdateApplyError), UpdateApplyError)

    def apply_snapshot(self, state: bytes) -> None:
        state = self._in_state(state)
        summaries = self._apply([state], SnapshotApplyError)
        if summaries:
            self._state = (state, summaries[0])

    def _apply(self, changes: Sequence[bytes], error: type[SecsyncError]) -> list[UpdateSummary]:
        if not changes:
            return []
        checked, self._checked = self._checked, None
        if (
            checked is not None
            and len(checked[0]) == len(changes)
            and all(a is b for a, b in zip(checked[0], changes, strict=True))
        ):
            summaries = checked[1]
        else:
            summaries = _checked(changes, error, track=True)
        vector = self._admit_pending(changes, summaries, error)
        self._vector = None
        self._apply_checked(changes, error)
        if self._pending:
            self._settle_pending()
        else:
            self._vector = vector
        return summaries

    def _admit_pending(
        self,
        changes: Sequence[bytes],
        summaries: Sequence[UpdateSummary],
        error: type[SecsyncError],
    ) -> dict[int, int]:
        """Count what will stay pending; refuse all of ``changes`` past the budget.

        yrs keeps structs whose dependencies are missing for the document's life and offers no
        way to drop them, so they are bounded before they go in: a change is pending when
        the document (with the changes before it) cannot integrate all of it. Returns the
        state vector the document will have."""
        known = self._vector
        vector = decode_state_vector(self.doc.get_state()) if known is None else dict(known)
        added: list[tuple[int, dict[int, int]]] = []
        size = 0  # what each costs: its bytes, and the entry that tracks it
        for change, summary in zip(changes, summaries, strict=True):
            if _ready(summary, vector):
                for client, ranges in summary.structs_by_client.items():
                    vector[client] = max(vector.get(client, 0), ranges[-1][1])
                continue
            added.append((len(change) + _ENTRY_BYTES, _needs(summary)))
            size += len(change) + _ENTRY_BYTES
        if not added:
            return vector
        if self._pending_size + size > self.max_pending_bytes:
            if error is UpdateApplyError:
                error = UpdatePendingBudgetError
            raise error(
                f"content waiting for missing dependencies would exceed "
                f"{self.max_pending_bytes} bytes"
            )
        for entry in added:
            self._wait(next(self._pending_ids), entry, vector)
        self._pending_size += size
        return vector

    def _wait(self, key: int, entry: tuple[int, dict[int, int]], vector: dict[int, int]) -> bool:
        """File a pending entry under the first client it still waits on; False if none."""
        for client, clock in entry[1].items():
            if vector.get(client, 0) < clock:
                self._pending[key] = entry
                heapq.heappush(self._waiting_on.setdefault(client, []), (clock, key))
                return True
        return False

    def _settle_pending(self) -> None:
        """Let go of what the document has integrated now (each entry is looked at only when
        the client it waits on reached the clock it needs)."""
        vector = decode_state_vector(self.doc.get_state())
        self._vector = vector
        for client in list(self._waiting_on):
            heap = self._waiting_on[client]
            reached = vector.get(client, 0)
            while heap and heap[0][0] <= reached:
                _, key = heapq.heappop(heap)
                entry = self._pending.pop(key)
                if not self._wait(key, entry, vector):
                    self._pending_size -= entry[0]
            if not heap:
                del self._waiting_on[client]

    def _apply_checked(self, changes: Sequence[bytes], error: type[SecsyncError]) -> None:
        self._applying = True
        try:
            # One by one: yrs merges adjacent items at the end of each transaction, at a cost
            # growing with the square of what one transaction brings (20,000 keystrokes merged
            # into one update took 3.9 s and 256 MB, applied one by one 0.25 s).
            for change in changes:
                self.doc.apply_update(change)
        except BaseException as exc:
            if not crdt_failure(exc):
                raise
            raise error(f"pycrdt refused the content: {type(exc).__name__}") from None
        finally:
            self._applying = False

    def encode_state(self) -> bytes:
        return self._out(self.doc.get_update(), SnapshotApplyError)

    def missing_from(self, state: bytes) -> list[bytes]:
        state = self._in_state(state)
        _checked([state], SnapshotApplyError)
        try:
            other: pycrdt.Doc[Any] = pycrdt.Doc()
            other.apply_update(state)
            missing = self._without_foreign(other.get_state())
        except BaseException as exc:
            if not crdt_failure(exc):
                raise
            raise SnapshotApplyError(f"pycrdt refused the state: {type(exc).__name__}") from None
        return [] if missing == _EMPTY_UPDATE else [self._out(missing, SnapshotApplyError)]

    def _state_summary(self, state: bytes) -> UpdateSummary:
        cached = self._state
        if cached is not None and (cached[0] is state or cached[0] == state):
            return cached[1]
        summary = _checked([state], SnapshotApplyError, track=True)[0]
        self._state = (state, summary)
        return summary

    def uncontained(self, state: bytes, changes: Sequence[bytes]) -> list[bytes]:
        """Those of ``changes`` whose structs or deletions the full ``state`` lacks (their
        IDs are compared: a snapshot is trusted for the content under an ID it holds)."""
        if not changes:
            return []
        held = _Content([self._state_summary(self._in_state(state))])
        summaries = _checked(self._in(changes, SnapshotApplyError), SnapshotApplyError, track=True)
        return [
            change
            for change, summary in zip(changes, summaries, strict=True)
            if not held.holds(summary)
        ]

    def lacks(self, state: bytes, extra: Sequence[bytes]) -> bool:
        """Whether this document has structs (by the state vector) or deletions (by the
        delete set) that ``state`` and ``extra`` together do not."""
        summaries = [self._state_summary(self._in_state(state))]
        if extra:
            summaries += _checked(
                self._in(extra, SnapshotApplyError), SnapshotApplyError, track=True
            )
        held = _Content(summaries)
        try:
            vector = decode_state_vector(self.doc.get_state())
            # with the whole state vector, yrs encodes no struct and the whole delete set
            deletions = self.doc.get_update(self.doc.get_state())
        except BaseException as exc:
            if not crdt_failure(exc):
                raise
            raise SnapshotApplyError(f"pycrdt could not encode: {type(exc).__name__}") from None
        if any(
            clock and not covers(held.structs.get(client, []), 0, clock)
            for client, clock in vector.items()
        ):
            return True
        ours = _checked([deletions], SnapshotApplyError, track=True)[0]
        return not _within(ours.deleted_by_client, held.deletes)

    def close(self) -> None:
        self.doc.unobserve(self._subscription)
