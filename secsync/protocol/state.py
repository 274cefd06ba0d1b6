"""What a document session saves to survive a restart: :class:`SessionState`.

A frozen, typed value (no keys, no document content) with one explicit encoding: plain data
(maps, lists, bytes, ints, strings) ready for msgpack, tagged ``"v": STATE_VERSION``. Version 1
is the layout every earlier release wrote as a ``dict``, so their local stores still load, and a
state written now loads in them. :meth:`SessionState.decode` checks every field and raises
:class:`~secsync.errors.SessionStateError` (a :class:`~secsync.errors.LocalStoreError`) on a
damaged, foreign or newer state, never ``KeyError`` or ``AssertionError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from secsync.errors import SecsyncError, SessionStateError
from secsync.protocol import wire
from secsync.protocol.messages import Snapshot, SnapshotInfo, Update

STATE_VERSION: Final = 1
_KEYS: Final = frozenset(
    {
        "v",
        "loaded",
        "active",
        "superseded",
        "local_clock",
        "pending",
        "in_flight",
        "confirmed",
        "snapshot_in_flight",
        "me",
        "digests",
        "identity_in_use",
    }
)
_ACTIVE_KEYS: Final = frozenset(
    {"id", "hash", "proof", "parent", "extra", "author", "clocks", "updates", "bytes", "skipped"}
)

Clocks = Mapping[bytes, int]


@dataclass(frozen=True, slots=True)
class ActiveState:
    """The active snapshot's verified facts and what was applied on top of it."""

    info: SnapshotInfo
    clocks: Clocks = field(default_factory=dict)
    """Last applied (or, for us, confirmed) clock per author."""
    updates: int = 0
    update_bytes: int = 0
    skipped: Mapping[bytes, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    """Per author, the clock ranges recovery skipped."""


@dataclass(frozen=True, slots=True)
class SentUpdate:
    """An update of ours handed out for sending and not known to be stored."""

    message: Update
    changes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SentSnapshot:
    """A snapshot of ours handed out for sending and not acknowledged yet."""

    message: Snapshot
    changes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SessionState:
    """Everything of a :class:`~secsync.protocol.session.DocumentSession` that must survive a
    restart (see :meth:`~secsync.protocol.session.DocumentSession.export_state`)."""

    loaded: bool = True
    """False for a session saved before it ever loaded from the broker."""
    active: ActiveState | None = None
    superseded: tuple[tuple[bytes, Clocks], ...] = ()
    """Replaced snapshots, oldest first: id, and the clocks of it its successor included."""
    local_clock: int = -1
    pending: tuple[bytes, ...] = ()
    """Local changes not sealed yet, in order."""
    in_flight: tuple[SentUpdate, ...] = ()
    """Updates sent and not stored (in flight or refused), in clock order."""
    confirmed: tuple[tuple[int, tuple[bytes, ...]], ...] = ()
    """Clock and changes of our updates the broker stored on the active snapshot."""
    snapshot_in_flight: SentSnapshot | None = None
    me: bytes | None = None
    """The signing key the state was saved under (``None``: saved by a release before it)."""
    digests: tuple[tuple[bytes, int, tuple[bytes, ...]], ...] = ()
    """Message digests per (author, clock) on the active snapshot (identity collisions)."""
    identity_in_use: str | None = None
    """Why the session stopped writing, if it did."""

    # --- the encoding -------------------------------------------------------------------------

    def encode(self) -> dict[str, Any]:
        """Plain data in layout :data:`STATE_VERSION`, ready for msgpack."""
        active = self.active
        flight = self.snapshot_in_flight
        return {
            "v": STATE_VERSION,
            "loaded": self.loaded,
            "active": None
            if active is None
            else {
                "id": active.info.snapshot_id,
                "hash": active.info.ciphertext_hash,
                "proof": active.info.parent_snapshot_proof,
                "parent": active.info.parent_snapshot_id,
                "extra": dict(active.info.extra),
                "author": active.info.author,
                "clocks": dict(active.clocks),
                "updates": active.updates,
                "bytes": active.update_bytes,
                "skipped": {a: [list(r) for r in rs] for a, rs in active.skipped.items()},
            },
            "superseded": [[k, dict(v)] for k, v in self.superseded],
            "local_clock": self.local_clock,
            "pending": list(self.pending),
            "in_flight": [
                [f.message.clock, wire.encode(f.message), list(f.changes)] for f in self.in_flight
            ],
            "confirmed": [[clock, list(changes)] for clock, changes in self.confirmed],
            "snapshot_in_flight": None
            if flight is None
            else [wire.encode(flight.message), list(flight.changes)],
            "me": self.me,
            "digests": [[a, c, list(d)] for a, c, d in self.digests],
            "identity_in_use": self.identity_in_use,
        }

    @classmethod
    def decode(cls, data: object) -> SessionState:
        """The state :meth:`encode` wrote (or an earlier release did); strict.

        Raises :class:`~secsync.errors.SessionStateError` unless ``data`` is a complete state
        of a known layout with every field of the right type.
        """
        if isinstance(data, SessionState):
            return data
        if not isinstance(data, Mapping):
            raise SessionStateError("a saved session state must be a map")
        version = data.get("v")
        if version != STATE_VERSION:
            raise SessionStateError(f"unknown saved session format (layout {version!r})")
        unknown = set(data) - _KEYS
        if unknown:
            raise SessionStateError(
                f"not a session state: unknown fields {sorted(map(str, unknown))}"
            )
        try:
            return cls(
                loaded=_bool(data.get("loaded", True), "loaded"),
                active=_active(data["active"]),
                superseded=tuple(
                    (_bytes(k, "superseded id"), _clocks(v, "superseded clocks"))
                    for k, v in _pairs(data["superseded"], "superseded")
                ),
                local_clock=_int(data["local_clock"], "local_clock", low=-1),
                pending=_changes(data["pending"], "pending"),
                in_flight=tuple(_sent_update(i) for i in _list(data["in_flight"], "in_flight")),
                confirmed=tuple(
                    (_int(c, "confirmed clock"), _changes(ch, "confirmed changes"))
                    for c, ch in _pairs(data["confirmed"], "confirmed")
                ),
                snapshot_in_flight=_sent_snapshot(data["snapshot_in_flight"]),
                me=None if data.get("me") is None else _bytes(data["me"], "me"),
                digests=tuple(_digest(d) for d in _list(data.get("digests", []), "digests")),
                identity_in_use=_optional_str(data.get("identity_in_use"), "identity_in_use"),
            )
        except KeyError as exc:
            raise SessionStateError(f"saved session state lacks {exc}") from None


# --- strict readers ----------------------------------------------------------------------------


def _fail(what: str, value: object) -> SessionStateError:
    return SessionStateError(f"saved session state: {what} is not valid ({type(value).__name__})")


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(what, value)
    return value


def _int(value: object, what: str, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(what, value)
    return value


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise _fail(what, value)
    return value


def _optional_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _fail(what, value)
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _fail(what, value)
    return list(value)


def _pairs(value: object, what: str) -> list[tuple[Any, Any]]:
    items = _list(value, what)
    for item in items:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise _fail(what, item)
    return [(a, b) for a, b in items]


def _changes(value: object, what: str) -> tuple[bytes, ...]:
    return tuple(_bytes(change, what) for change in _list(value, what))


def _clocks(value: object, what: str) -> dict[bytes, int]:
    if not isinstance(value, Mapping):
        raise _fail(what, value)
    return {_bytes(a, what): _int(c, what, low=-1) for a, c in value.items()}


def _active(value: object) -> ActiveState | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - _ACTIVE_KEYS:
        raise _fail("active", value)
    extra = value["extra"]
    if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
        raise _fail("active extra", extra)
    skipped = value.get("skipped", {})
    if not isinstance(skipped, Mapping):
        raise _fail("active skipped", skipped)
    author = _bytes(value["author"], "active author")
    return ActiveState(
        info=SnapshotInfo(
            snapshot_id=_bytes(value["id"], "active id"),
            ciphertext_hash=_bytes(value["hash"], "active hash"),
            parent_snapshot_proof=_bytes(value["proof"], "active proof"),
            parent_snapshot_id=_bytes(value["parent"], "active parent"),
            extra=dict(extra),
            author=author,
        ),
        clocks=_clocks(value["clocks"], "active clocks"),
        updates=_int(value["updates"], "active updates"),
        update_bytes=_int(value["bytes"], "active bytes"),
        skipped={
            _bytes(a, "skipped author"): tuple(
                (_int(lo, "skipped range"), _int(hi, "skipped range"))
                for lo, hi in _pairs(ranges, "skipped ranges")
            )
            for a, ranges in skipped.items()
        },
    )


def _message(data: object, what: str) -> Update | Snapshot:
    raw = _bytes(data, what)
    try:
        # our own message, saved under the store's authentication: no size bound to apply
        message = wire.decode(raw, max_bytes=max(len(raw), 1))
    except SecsyncError as exc:
        raise SessionStateError(f"saved session state: {what} does not decode: {exc}") from None
    if not isinstance(message, Update | Snapshot):
        raise _fail(what, message)
    return message


def _sent_update(value: object) -> SentUpdate:
    items = _list(value, "in_flight")
    if len(items) != 3:
        raise _fail("in_flight", value)
    clock, data, changes = items
    message = _message(data, "in-flight update")
    if not isinstance(message, Update) or message.clock != _int(clock, "in-flight clock"):
        raise _fail("in-flight update", message)
    return SentUpdate(message, _changes(changes, "in-flight changes"))


def _sent_snapshot(value: object) -> SentSnapshot | None:
    if value is None:
        return None
    items = _list(value, "snapshot_in_flight")
    if len(items) != 2:
        raise _fail("snapshot_in_flight", value)
    message = _message(items[0], "in-flight snapshot")
    if not isinstance(message, Snapshot):
        raise _fail("in-flight snapshot", message)
    return SentSnapshot(message, _changes(items[1], "in-flight snapshot changes"))


def _digest(value: object) -> tuple[bytes, int, tuple[bytes, ...]]:
    items = _list(value, "digests")
    if len(items) != 3:
        raise _fail("digests", value)
    author, clock, digests = items
    return (
        _bytes(author, "digest author"),
        _int(clock, "digest clock"),
        tuple(_bytes(d, "digest") for d in _list(digests, "digests")),
    )
