"""Yjs documents through pycrdt: updates are Yjs v1 updates, a snapshot is the full state.

Remote content is checked by :mod:`secsync.crdt.yjs_format` before pycrdt sees it (yrs decodes
recursively and trusts declared lengths), and any failure of pycrdt, a Rust panic included, is
the typed rejection of that one message.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import pycrdt

from secsync.crdt import crdt_failure
from secsync.crdt.yjs_format import Decoder, UpdateSummary, YjsFormatError, check_updates
from secsync.errors import LocalIdentityError, SecsyncError, SnapshotApplyError, UpdateApplyError
from secsync.logs import get_logger
from secsync.protocol import crdt_identity
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.devices import Device, UserIdentity
from secsync.protocol.keys import signing_key_pair

log = get_logger("secsync.crdt")

_EMPTY_UPDATE = b"\x00\x00"


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


def decode_state_vector(data: bytes) -> dict[int, int]:
    """A Yjs state vector (client -> next clock); ``YjsFormatError`` if malformed."""
    d = Decoder(data)
    clients = d.read_count(2, "state vector entries")
    state = {d.read_var_uint(): d.read_var_uint() for _ in range(clients)}
    if d.remaining:
        raise d.fail("bytes after the state vector")
    return state


def encode_state_vector(state: dict[int, int]) -> bytes:
    parts = [_var_uint(len(state))]
    for client, clock in state.items():
        parts += [_var_uint(client), _var_uint(clock)]
    return b"".join(parts)


def _checked(changes: Sequence[bytes], error: type[SecsyncError]) -> list[UpdateSummary]:
    try:
        return check_updates(changes)
    except YjsFormatError as exc:
        raise error(f"not a valid Yjs update: {exc}") from None


class YjsAdapter:
    """Observes a ``pycrdt.Doc``; each local transaction becomes one change."""

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.doc = doc
        self._local: list[bytes] = []
        self._applying = False
        self._listener: Callable[[], None] | None = None
        # Changes authors_of has just checked, for apply_changes not to check them again.
        self._checked: Sequence[bytes] | None = None
        # The clients whose content this session must not send (see bind_identity).
        self._foreign: Callable[[Collection[int]], list[int]] = lambda ids: []
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
        summaries = _checked(changes, UpdateApplyError)
        self._checked = changes
        return {client for summary in summaries for client in summary.client_ids}

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if self._applying:
            return
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
        return changes

    def untaken_changes(self) -> int:
        """Local transactions not taken yet (nothing is taken by asking)."""
        return len(self._local)

    def apply_changes(self, changes: Sequence[bytes]) -> None:
        self._apply(changes, UpdateApplyError)

    def apply_snapshot(self, state: bytes) -> None:
        self._apply([state], SnapshotApplyError)

    def _apply(self, changes: Sequence[bytes], error: type[SecsyncError]) -> None:
        if not changes:
            return
        checked, self._checked = self._checked, None
        if not (
            checked is not None
            and len(checked) == len(changes)
            and all(a is b for a, b in zip(checked, changes, strict=True))
        ):
            _checked(changes, error)
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
        return self.doc.get_update()

    def missing_from(self, state: bytes) -> list[bytes]:
        _checked([state], SnapshotApplyError)
        try:
            other: pycrdt.Doc[Any] = pycrdt.Doc()
            other.apply_update(state)
            missing = self._without_foreign(other.get_state())
        except BaseException as exc:
            if not crdt_failure(exc):
                raise
            raise SnapshotApplyError(f"pycrdt refused the state: {type(exc).__name__}") from None
        return [] if missing == _EMPTY_UPDATE else [missing]

    def close(self) -> None:
        self.doc.unobserve(self._subscription)
