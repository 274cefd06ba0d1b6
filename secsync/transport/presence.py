"""Presence of one open document over core NATS: my state out (throttled), the peers' in.

Presence travels as ephemeral messages on core NATS, never on the stream: it is delivered in
well under a millisecond on a local broker, costs no disk, and leaves no stored trace of who
was active when. A late joiner learns the others' states from their next heartbeat
(``presence_heartbeat``) or at once when a peer proves its session to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from secsync.errors import NoActiveSnapshotError, SecsyncError
from secsync.logs import get_logger
from secsync.protocol.events import MessageRejected, PresenceChanged
from secsync.protocol.messages import EphemeralMessage, MessageKind
from secsync.protocol.presence import PresenceTracker
from secsync.transport.events import DocumentEvent
from secsync.transport.waiting import Signal, wait_woken

if TYPE_CHECKING:
    import pycrdt

    from secsync.config import SecsyncConfig
    from secsync.protocol.session import DocumentSession

log = get_logger("secsync.presence")


class Presence:
    """Set my presence state with :meth:`set_local_state`; read the peers' from :attr:`states`.

    For a Yjs document, a ``pycrdt.Awareness`` is kept in step both ways: local changes to it
    are sent, and remote states appear in it under their Yjs client ids.
    """

    def __init__(
        self,
        session: DocumentSession,
        config: SecsyncConfig,
        *,
        emit: Callable[[Sequence[DocumentEvent]], None],
        publish: Callable[[EphemeralMessage], Awaitable[None]],
        notify_changed: Callable[[], None],
        awareness: pycrdt.Awareness | None = None,
    ) -> None:
        self._session = session
        self._config = config
        self._emit = emit
        self._publish = publish
        self._notify_changed = notify_changed
        self.tracker = PresenceTracker(
            session.public_key,
            timeout=self._config.presence_timeout,
            max_bytes=self._config.presence_max_bytes,
            min_interval=self._config.presence_receive_interval,
        )
        self.tracker.user_of = session.devices.device_user
        self.awareness = awareness
        self._dirty = False
        self._last_sent = 0.0
        self._keyed = session.active_snapshot is not None
        self._greeted = False
        self._wake = Signal()
        self._task: asyncio.Task[None] | None = None
        self._subscription: str | None = None
        if awareness is not None:
            self.tracker.local_yjs_client_id = awareness.client_id
            self._subscription = awareness.observe(self._on_awareness)

    @property
    def states(self) -> dict[bytes, Any]:
        """The present peers' states, by public key."""
        return self.tracker.states

    def set_local_state(self, state: Any) -> None:
        """Share ``state`` (JSON-compatible; ``None`` to hide) with the peers, throttled.

        With a Yjs awareness, this sets its local state (which is then sent). Presence is
        sealed under the key of the document's snapshot: on a document that has none yet, a
        first (empty) snapshot is written, and the state goes out once it is stored.
        """
        if self.awareness is not None:
            self.awareness.set_local_state(state)
        else:
            self._changed(state)

    def _changed(self, state: Any) -> None:
        self.tracker.local_state = state
        self._dirty = True
        self._wake.set()
        if state is not None and self._session.active_snapshot is None:
            self._session.want_first_snapshot()
            self._notify_changed()

    @property
    def keyed(self) -> bool:
        """True once the document has a snapshot whose key seals presence."""
        return self._keyed

    def key_available(self) -> None:
        """The document has a snapshot (a key) now: say hello and send what waited for it."""
        if not self._keyed:
            self._keyed = True
            self._wake.set()

    def greet(self) -> None:
        """Ask the peers online to prove their sessions (again), as soon as there is a key."""
        self._greeted = False
        self._wake.set()

    def _on_awareness(self, topic: str, args: tuple[Any, Any]) -> None:
        if topic != "update" or args[1] != "local" or self.awareness is None:
            return
        self._changed(self.awareness.get_local_state())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="secsync-presence")

    def peer_verified(self) -> None:
        """A peer proved its session: show it my state now rather than at the next heartbeat."""
        if self.tracker.local_state is not None:
            self._dirty = True
            self._wake.set()

    async def _run(self) -> None:
        cfg = self._config
        while True:
            now = time.monotonic()
            deadlines = []
            if self.tracker.local_state is not None:
                deadlines.append(self._last_sent + cfg.presence_heartbeat)
            if self._dirty:
                deadlines.append(self._last_sent + cfg.presence_interval)
            expiry = self.tracker.next_expiry()
            if expiry is not None:
                deadlines.append(expiry)
            # nothing to send and nobody to expire: sleep until woken
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            await wait_woken(self._wake, timeout)
            self._wake.clear()
            now = time.monotonic()
            self._emit(self._apply(self.tracker.expire(now)))
            due = self._dirty and now - self._last_sent >= cfg.presence_interval
            heartbeat = (
                self.tracker.local_state is not None
                and now - self._last_sent >= cfg.presence_heartbeat
            )
            if self._keyed and not self._greeted:
                # ask the peers online to prove their sessions, so presence flows at once
                await self._send(self._session.ephemeral_initialize, hello=True)
                self._greeted = True  # best effort, as presence is
            if due or heartbeat:
                sent = await self._send(
                    lambda: self._session.send_ephemeral(self.tracker.heartbeat())
                )
                self._last_sent = now
                self._dirty = self._dirty and not sent  # kept until there is a key to send it

    async def _send(self, seal: Callable[[], EphemeralMessage], *, hello: bool = False) -> bool:
        """Seal and publish one ephemeral message; False if there is no key for it yet."""
        try:
            message = seal()
        except NoActiveSnapshotError:
            return False  # no snapshot yet, so no key: sent once there is one
        except SecsyncError as exc:
            log.warning("presence_not_sent", code=exc.code, hello=hello)
            return False
        await self._publish(message)
        return True

    def receive(self, author: bytes, payload: bytes) -> list[DocumentEvent]:
        """A verified ephemeral payload from ``author``."""
        try:
            changes = self.tracker.receive(author, payload, time.monotonic())
        except SecsyncError as exc:
            return [MessageRejected(exc, MessageKind.EPHEMERAL, author)]
        if changes:
            self._wake.set()  # expiry deadlines moved
        return self._apply(changes)

    def _apply(self, changes: list[PresenceChanged]) -> list[DocumentEvent]:
        awareness = self.awareness
        if awareness is not None:
            for change in changes:
                if change.yjs_client_id is None:
                    continue
                if change.state is None:
                    awareness.remove_awareness_states([change.yjs_client_id], "remote")
                else:
                    awareness.apply_awareness_update(
                        _awareness_update(
                            change.yjs_client_id, self.tracker.clock_of(change.author), change.state
                        ),
                        "remote",
                    )
        return list(changes)

    async def close(self) -> None:
        """Tell the peers I left, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.tracker.local_state is not None:
            self.tracker.local_state = None
            payload = self.tracker.heartbeat()
            await self._send(lambda: self._session.send_ephemeral(payload))
        if self.awareness is not None and self._subscription is not None:
            self.awareness.unobserve(self._subscription)


def _awareness_update(client_id: int, clock: int, state: Any) -> bytes:
    """One entry of the Yjs awareness protocol, as ``Awareness.apply_awareness_update`` reads."""
    import json

    import pycrdt

    encoder = pycrdt.Encoder()
    encoder.write_var_uint(1)
    encoder.write_var_uint(client_id)
    encoder.write_var_uint(clock)
    encoder.write_var_string(json.dumps(state, separators=(",", ":")))
    return bytes(encoder.to_bytes())
