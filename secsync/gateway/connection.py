"""The decisions for one JS client connection. Pure (sans-IO), in the manner of h11.

:class:`GatewayConnection` is fed what happens — the answer of an access check, a frame from
the client, the outcome of a publish, what the shared :class:`DocumentView` released, an
ephemeral message from the broker — and returns what to do, as data: :class:`AskAccess`
(call ``has_access(action, document_id, session_key, public_key)`` and answer with
:meth:`GatewayConnection.answer`), :class:`Publish` (publish ``payload`` to ``subject`` with
``headers``, answer with :meth:`GatewayConnection.outcome`), :class:`Send` (a frame to the
client), :class:`Close`, :class:`Ignored` (nothing to do; the reason, for a log).

Acks are sent where the acknowledged message stands in the stream: once the view releases it
(``snapshot-saved`` / ``update-saved`` in place of the broadcast the others get), so a JS
client never sees an update on a snapshot before the ack that made it active. A message of
ours the view drops (a race the preconditions do not cover) gets the failure frame.

Size: one state machine, :class:`GatewayConnection`, whose rules (what a refusal sends, what
an ack covers, the order of frames) depend on each other's few fields.
"""

from __future__ import annotations

import enum
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from secsync.errors import (
    MalformedMessageError,
    MessageTooLargeError,
    SecsyncError,
)
from secsync.gateway import frames
from secsync.gateway.frames import Frame
from secsync.gateway.params import BadConnection, ConnectionParams, SessionKey
from secsync.gateway.view import (
    DocumentView,
    Dropped,
    ViewEvent,
    is_initial,
    snapshot_problem,
    update_problem,
)
from secsync.logs import get_logger
from secsync.protocol import wire
from secsync.protocol.encoding import JsonValue, b64encode
from secsync.protocol.messages import EphemeralMessage, MessageKind, Snapshot, Update
from secsync.protocol.sealing import signature_valid
from secsync.protocol.stream_types import snapshot_headers, update_headers

log = get_logger("secsync.gateway")

Action = Literal["read", "write-snapshot", "write-update", "send-ephemeral-message", "broadcast"]
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


class Access(enum.Enum):
    GRANTED = "granted"
    DENIED = "denied"
    NEW_SNAPSHOT_REQUIRED = "new-snapshot-required"
    """For ``write-update``: the application wants a new snapshot first (the reference's
    ``SecsyncNewSnapshotRequiredError``): ``update-save-failed`` with ``requiresNewSnapshot``."""


@dataclass(frozen=True, slots=True)
class AskAccess:
    action: Action
    document_id: str
    session_key: SessionKey
    public_key: bytes | None
    token: int


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``payload`` on ``subject`` with ``headers`` (none: an ephemeral message on core
    NATS), then report with :meth:`GatewayConnection.outcome`."""

    subject: str
    payload: bytes
    headers: Mapping[str, str]
    message: Snapshot | Update | EphemeralMessage
    token: int


@dataclass(frozen=True, slots=True)
class Send:
    frame: Frame

    def text(self) -> str:
        return json.dumps(self.frame, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


Output = AskAccess | Publish | Send | Close | Ignored


@dataclass(frozen=True, slots=True)
class Stored:
    """The broker stored the message, its last part at ``sequence`` (a duplicate too)."""

    sequence: int


@dataclass(frozen=True, slots=True)
class CasConflict:
    """The compare-and-set precondition failed: something was stored meanwhile."""


@dataclass(frozen=True, slots=True)
class PublishFailed:
    reason: str = ""


PublishResult = Stored | CasConflict | PublishFailed


def _echo(obj: Mapping[str, Any]) -> tuple[JsonValue | None, JsonValue | None]:
    public = obj.get("publicData")
    if not isinstance(public, Mapping):
        return None, None
    ref, clock = public.get("refSnapshotId"), public.get("clock")
    return (
        ref if isinstance(ref, str) else None,
        clock if isinstance(clock, int) and not isinstance(clock, bool) else None,
    )


def _no_float(value: str) -> Any:
    raise ValueError("floats are not allowed")


@dataclass(slots=True)
class _Queue:
    frames: list[tuple[Frame, bool]] = field(default_factory=list)
    asking: int | None = None


def refuse(bad: BadConnection) -> list[Output]:
    """What a connection whose URL does not parse gets: ``document-error``, then close."""
    return [Send(frames.simple("document-error")), Close(bad.reason)]


class GatewayConnection:
    """One JS client's connection to one document, over a view shared by all connections."""

    def __init__(
        self,
        params: ConnectionParams,
        view: DocumentView,
        *,
        ephemeral_subject: str,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.params = params
        self.view = view
        self.ephemeral_subject = ephemeral_subject
        self.max_frame_bytes = max_frame_bytes
        self.state: Literal["new", "reading", "open", "closed"] = "new"
        self._tokens = itertools.count(1)
        self._asks: dict[int, tuple[Action, Snapshot | Update | EphemeralMessage | None]] = {}
        self._publishing: dict[int, Snapshot | Update | EphemeralMessage] = {}
        self._own_snapshots: set[bytes] = set()
        self._own_updates: set[bytes] = set()  # signatures
        self._own_ephemeral: set[bytes] = set()
        # Highest clock per author of our updates published but not released yet, on the
        # active snapshot: the JS client sends several updates before the first is acked.
        self._in_flight: dict[bytes, tuple[bytes, int]] = {}
        self._queue = _Queue()
        # Per author, the last clock of the active snapshot's updates this client was sent
        # (so that failure frames bring only what it lacks).
        self._sent_clocks: dict[bytes, int] = {}
        # Refused updates of this connection, acknowledged once a snapshot it sent after them
        # (which holds their changes: the JS client writes one when told requiresNewSnapshot)
        # is stored: (order, the update's snapshotId, clock).
        self._refusals = itertools.count(1)
        self._refused: list[tuple[int, JsonValue, int]] = []
        self._covers: dict[bytes, int] = {}
        # A snapshot was asked for and the client has not sent one since: its updates until
        # then are refused silently (that snapshot holds their changes, and one more failure
        # frame would make it write one more snapshot, each racing the others).
        self._snapshot_asked = False

    # --- opening ------------------------------------------------------------------------------

    def open(self) -> list[Output]:
        """The client connected: check read access first."""
        self.state = "reading"
        return [self._ask("read", None, None)]

    def not_found(self) -> list[Output]:
        """The document does not exist (for a pump whose store can say so)."""
        return self._close("document-not-found", "document not found")

    def _ask(
        self,
        action: Action,
        public_key: bytes | None,
        message: Snapshot | Update | EphemeralMessage | None,
    ) -> AskAccess:
        token = next(self._tokens)
        self._asks[token] = (action, message)
        return AskAccess(
            action, self.params.document_id, self.params.session_key, public_key, token
        )

    def _close(self, kind: str, reason: str) -> list[Output]:
        self.state = "closed"
        return [Send(frames.simple(kind)), Close(reason)]

    def answer(self, ask: AskAccess, access: Access | bool) -> list[Output]:
        """The answer of ``has_access`` to ``ask``."""
        if access is True:
            access = Access.GRANTED
        elif access is False:
            access = Access.DENIED
        entry = self._asks.pop(ask.token, None)
        if entry is None or self.state == "closed":
            return [Ignored("no such question")]
        action, message = entry
        if access is Access.DENIED:
            return self._close("unauthorized", f"no {action} access")
        if action == "read":
            return self._document()
        if action == "broadcast":
            self._queue.asking = None
            out: list[Output] = [Send(frame) for frame, _ in self._queue.frames]
            self._queue.frames.clear()
            return out
        if isinstance(message, Update) and access is Access.NEW_SNAPSHOT_REQUIRED:
            return self._refuse_update(message)
        if isinstance(message, Snapshot):
            return self._decide_snapshot(message)
        if isinstance(message, Update):
            return self._decide_update(message)
        if isinstance(message, EphemeralMessage):
            return self._decide_ephemeral(message)
        return [Ignored("nothing asked")]

    # --- frames from the client ---------------------------------------------------------------

    def receive(self, text: str | bytes) -> list[Output]:
        """A frame from the client: routed by its fields, as the reference server does."""
        if self.state != "open":
            return [Ignored("connection not open")]
        if len(text) > self.max_frame_bytes:
            return self._close("document-error", str(MessageTooLargeError("frame too large")))
        try:
            obj = json.loads(text, parse_float=_no_float, parse_constant=_no_float)
        except (ValueError, RecursionError):
            return [Ignored(str(MalformedMessageError("frame is not JSON")))]
        if not isinstance(obj, dict):
            return [Ignored(str(MalformedMessageError("frame is not a JSON object")))]
        obj.pop("additionalServerData", None)  # unsigned, for the reference's app only
        kind = wire.kind_of_json(obj)
        try:
            message = wire.from_json_dict(obj, kind=kind)
        except SecsyncError as exc:
            if kind is MessageKind.SNAPSHOT:
                return [*self._ordered(frames.simple("snapshot-save-failed")), Ignored(str(exc))]
            if kind is MessageKind.UPDATE:
                ref, clock = _echo(obj)
                return [*self._send_refusal(self._refusal(ref, clock)), Ignored(str(exc))]
            return [Ignored(str(exc))]
        action: Action
        if isinstance(message, Snapshot):
            self._snapshot_asked = False
            action = "write-snapshot"
        elif isinstance(message, Update):
            action = "write-update"
        else:
            action = "send-ephemeral-message"
        return [self._ask(action, message.author, message)]

    def _decide_snapshot(self, snapshot: Snapshot) -> list[Output]:
        view = self.view
        active = view.active
        public = snapshot.public_data
        if (
            active is not None
            and public.parent_snapshot_id != active.snapshot_id
            and signature_valid(snapshot)
            and public.doc_id == self.params.document_id
        ):
            # Every release is queued to this client before this answer, the active snapshot
            # too: it needs only the updates on it that it was not sent.
            failed = frames.snapshot_save_failed_updates(view.updates_after(self._sent_clocks))
            return [*self._ordered(failed), Ignored("snapshot on an outdated parent")]
        problem = snapshot_problem(
            snapshot, self.params.document_id, active, view.clocks, view.chain_index()
        )
        if problem is None and active is None and not is_initial(snapshot):
            problem = MalformedMessageError("a first snapshot must have no parent")
        if problem is not None:
            if problem.code == 102:  # the clocks differ: send what it lacks and was not sent
                known = dict(public.parent_snapshot_update_clocks)
                for author, clock in self._sent_clocks.items():
                    known[author] = max(known.get(author, -1), clock)
                failed = frames.snapshot_save_failed_updates(view.updates_after(known))
                return [*self._ordered(failed), Ignored(str(problem))]
            return [*self._ordered(frames.simple("snapshot-save-failed")), Ignored(str(problem))]
        token = next(self._tokens)
        self._publishing[token] = snapshot
        self._own_snapshots.add(snapshot.snapshot_id)
        self._covers[snapshot.snapshot_id] = next(self._refusals)
        headers = snapshot_headers(snapshot.snapshot_id, view.last_sequence, view.subjects)
        payload = wire.encode(snapshot, include_doc_id=False)
        return [Publish(view.subjects.snapshot, payload, headers, snapshot, token)]

    def _decide_update(self, update: Update) -> list[Output]:
        view = self.view
        clocks = dict(view.clocks)
        active = view.active
        flying = self._in_flight.get(update.author)
        if active is not None and flying is not None and flying[0] == active.snapshot_id:
            clocks[update.author] = max(clocks.get(update.author, -1), flying[1])
        problem = update_problem(update, self.params.document_id, active, clocks)
        if problem is not None:
            return [*self._refuse_update(update), Ignored(str(problem))]
        assert active is not None
        token = next(self._tokens)
        self._publishing[token] = update
        self._own_updates.add(update.signature)
        self._in_flight[update.author] = (active.snapshot_id, update.clock)
        headers = update_headers(update, view.active_sequence, view.subjects)
        payload = wire.encode(update, include_doc_id=False)
        return [Publish(view.subjects.update, payload, headers, update, token)]

    def _decide_ephemeral(self, message: EphemeralMessage) -> list[Output]:
        if not signature_valid(message):
            return [Ignored("ephemeral signature invalid")]
        if message.public_data.doc_id != self.params.document_id:
            return [Ignored("ephemeral message of another document")]
        token = next(self._tokens)
        self._publishing[token] = message
        self._own_ephemeral.add(message.signature)
        return [
            Publish(
                self.ephemeral_subject,
                wire.encode(message, include_doc_id=False),
                {},
                message,
                token,
            )
        ]

    def _refuse_update(self, update: Update) -> list[Output]:
        return self._send_refusal(self._refusal_of(update))

    def _refusal_of(self, update: Update) -> Frame | None:
        ref = wire.to_json_dict(update)["publicData"]
        assert isinstance(ref, dict)
        return self._refusal(ref["refSnapshotId"], update.clock)

    def _send_refusal(self, frame: Frame | None) -> list[Output]:
        if frame is None:
            return [Ignored("refused; the snapshot asked for will hold it")]
        return self._ordered(frame)

    def _refusal(self, ref: JsonValue | None, clock: JsonValue | None) -> Frame | None:
        """``update-save-failed`` with ``requiresNewSnapshot``: the JS client then writes a
        snapshot of its whole state, its refused changes included. With ``false`` it would
        re-send from its last confirmed clock, reusing clocks of updates still on their way
        here, and it matches acks by clock: an ack for the earlier update would then count the
        re-sent one, with more changes, as saved (its changes lost for everyone else)."""
        if isinstance(ref, str) and isinstance(clock, int):
            self._refused.append((next(self._refusals), ref, clock))
            if self._snapshot_asked:
                return None
        self._snapshot_asked = True
        return frames.update_save_failed(ref, clock, requires_new_snapshot=True)

    def _ordered(self, frame: Frame) -> list[Output]:
        """``frame`` after the frames queued before it (acks and broadcasts keep their order)."""
        self._queue.frames.append((frame, False))
        return self._flush()

    def _document(self) -> list[Output]:
        self.state = "open"
        view, params = self.view, self.params
        frame = frames.document(view, params)
        out: list[Output] = [Send(frame)]
        active = view.active
        self._sent_clocks = dict(view.clocks)
        if active is not None and params.mode == "delta" and "snapshot" not in frame:
            # A delta reload of the active snapshot leaves the JS client's own clock at -1,
            # and its next update would reuse a stored clock. This failure, with nothing in
            # flight yet, sets its clock to the last one it confirmed.
            out.append(
                Send(
                    frames.update_save_failed(
                        b64encode(active.snapshot_id), None, requires_new_snapshot=False
                    )
                )
            )
        return out

    # --- publish outcomes ---------------------------------------------------------------------

    def outcome(self, publish: Publish, result: PublishResult) -> list[Output]:
        """What became of ``publish``."""
        message = self._publishing.pop(publish.token, None)
        if message is None or self.state == "closed":
            return [Ignored("no such publish")]
        if isinstance(message, EphemeralMessage):
            if not isinstance(result, Stored):
                self._own_ephemeral.discard(message.signature)
            return []
        if isinstance(result, Stored):
            # acknowledged where it stands in the stream, when the view releases (or drops) it
            return []
        self._forget(message)
        if isinstance(message, Snapshot):
            return self._ordered(frames.simple("snapshot-save-failed"))
        return self._refuse_update(message)

    def _is_own(self, message: Snapshot | Update | None) -> bool:
        if isinstance(message, Snapshot):
            return message.snapshot_id in self._own_snapshots
        if isinstance(message, Update):
            return message.signature in self._own_updates
        return False

    def _forget(self, message: Snapshot | Update) -> None:
        if isinstance(message, Snapshot):
            self._own_snapshots.discard(message.snapshot_id)
            return
        self._own_updates.discard(message.signature)
        flying = self._in_flight.get(message.author)
        if flying is not None and flying[1] >= message.clock:
            # the client re-sends from its confirmed clock + 1
            self._in_flight[message.author] = (flying[0], message.clock - 1)

    # --- what the view released, and ephemeral messages from the broker -------------------

    def released(self, events: Iterable[ViewEvent]) -> list[Output]:
        """The view's events after feeding it: broadcasts, our acks, our failures."""
        if self.state != "open":
            return []
        for event in events:
            message = event.message
            own = self._is_own(message)
            if isinstance(event, Dropped):
                if own and message is not None:
                    self._forget(message)
                    if isinstance(message, Snapshot):
                        self._queue.frames.append((frames.simple("snapshot-save-failed"), False))
                    else:
                        refused = self._refusal_of(message)
                        if refused is not None:
                            self._queue.frames.append((refused, False))
                continue
            assert message is not None  # a Released always has its message
            if isinstance(message, Snapshot):
                if own:
                    self._own_snapshots.discard(message.snapshot_id)
                    self._queue.frames.append((frames.snapshot_saved(message.snapshot_id), False))
                    self._acknowledge_refused(self._covers.pop(message.snapshot_id, 0))
                else:
                    self._queue.frames.append((frames.snapshot(message), True))
                self._in_flight.clear()
                self._sent_clocks = {}
            elif own:
                self._own_updates.discard(message.signature)
                saved = frames.update_saved(message.public_data.ref_snapshot_id, message.clock)
                self._queue.frames.append((saved, False))
                self._sent_clocks[message.author] = message.clock
            else:
                self._queue.frames.append((frames.update(message), True))
                self._sent_clocks[message.author] = message.clock
        return self._flush()

    def _acknowledge_refused(self, before: int) -> None:
        """Our snapshot, sent after the refused updates numbered below ``before``, is stored
        and holds their changes: acknowledge them, so the client stops counting them as
        unsaved (it would re-send them, needlessly, on its next reconnect)."""
        covered = [r for r in self._refused if r[0] < before]
        self._refused = [r for r in self._refused if r[0] >= before]
        for _, ref, clock in covered:
            self._queue.frames.append(
                ({"type": "update-saved", "snapshotId": ref, "clock": clock}, False)
            )

    def ephemeral(self, message: EphemeralMessage) -> list[Output]:
        """An ephemeral message from the broker (Python or JS clients)."""
        if self.state != "open":
            return []
        if message.signature in self._own_ephemeral:
            self._own_ephemeral.discard(message.signature)
            return []
        if not signature_valid(message) or message.public_data.doc_id != self.params.document_id:
            return [Ignored("ephemeral message not of this document")]
        self._queue.frames.append((frames.ephemeral(message), True))
        return self._flush()

    def _flush(self) -> list[Output]:
        queue = self._queue
        if queue.asking is not None:
            return []
        out: list[Output] = []
        while queue.frames and not queue.frames[0][1]:
            out.append(Send(queue.frames.pop(0)[0]))
        if queue.frames:
            ask = self._ask("broadcast", None, None)
            queue.asking = ask.token
            out.append(ask)
        return out
