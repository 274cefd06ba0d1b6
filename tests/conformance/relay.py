"""A malicious relay: an asyncio TCP proxy between NATS clients and a real nats-server.

It sits where the broker is. Every connection a client opens to :attr:`HostileRelay.url` gets
a connection of its own to the real server; the relay parses the NATS text protocol in both
directions and hands every message frame to the active :class:`Scenario`:

* server → client: ``MSG subject sid [reply] #bytes`` and
  ``HMSG subject sid [reply] #header-bytes #total-bytes`` — live JetStream deliveries (reply
  ``$JS.ACK...``), direct-get replies (headers ``Nats-Sequence``, ``Nats-Subject``), request
  replies and core NATS messages (presence);
* client → server: ``PUB subject [reply] #bytes`` and ``HPUB subject [reply] #hdr #total``.

A scenario returns the frames to send instead (none to drop, several to duplicate or to release
held ones) and may ``await`` to delay. Byte counts are recomputed, so payloads may change size.

The relay also keeps the lie consistent for nats-py's ordered consumer: JetStream deliveries
are renumbered per subscription (the consumer sequence in the ``$JS.ACK`` reply subject and
``Nats-Last-Consumer`` in idle heartbeats), so a dropped, inserted or reordered delivery does
not make the client re-create its consumer. Set :attr:`HostileRelay.renumber` to ``False`` to
let the client notice (then a drop is healed by the ordered consumer's reset).

Every line that is not a message frame (``INFO``, ``CONNECT``, ``PING``, ``SUB``...) passes
unchanged; ``CONNECT`` is read for the client's ``name`` option, which scenarios use to pick
their victims (``secsync.connect(url, name="victim")``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from secsync.errors import SecsyncError
from secsync.protocol import wire
from secsync.protocol.messages import Message

CRLF = b"\r\n"
MAX_LINE = 1 << 20


@dataclass(frozen=True, slots=True)
class Frame:
    """One message frame of the NATS protocol, either direction."""

    op: str  # MSG, HMSG (server -> client), PUB, HPUB (client -> server)
    subject: str
    sid: str | None
    reply: str | None
    headers: bytes | None
    payload: bytes

    def encode(self) -> bytes:
        reply = f" {self.reply}" if self.reply else ""
        sid = f" {self.sid}" if self.sid is not None else ""
        if self.headers is None:
            op = "MSG" if self.op in ("MSG", "HMSG") else "PUB"
            line = f"{op} {self.subject}{sid}{reply} {len(self.payload)}"
            return line.encode() + CRLF + self.payload + CRLF
        op = "HMSG" if self.op in ("MSG", "HMSG") else "HPUB"
        size = len(self.headers)
        line = f"{op} {self.subject}{sid}{reply} {size} {size + len(self.payload)}"
        return line.encode() + CRLF + self.headers + self.payload + CRLF

    # --- headers ------------------------------------------------------------------------------

    @property
    def status(self) -> str | None:
        """The status code of the header block (``100`` heartbeat, ``204`` end of batch...)."""
        if not self.headers:
            return None
        first = self.headers.split(CRLF, 1)[0].decode("latin-1")
        parts = first.split(" ", 2)
        return parts[1] if len(parts) > 1 else None

    def header(self, name: str) -> str | None:
        if not self.headers:
            return None
        for line in self.headers.split(CRLF)[1:]:
            key, sep, value = line.decode("latin-1").partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return None

    def with_header(self, name: str, value: str) -> Frame:
        lines = (self.headers or b"NATS/1.0\r\n\r\n").split(CRLF)
        out = [lines[0]]
        found = False
        for line in lines[1:]:
            if not line:
                continue
            key = line.decode("latin-1").partition(":")[0].strip()
            if key.lower() == name.lower():
                out.append(f"{name}: {value}".encode("latin-1"))
                found = True
            else:
                out.append(line)
        if not found:
            out.append(f"{name}: {value}".encode("latin-1"))
        return replace(self, headers=CRLF.join(out) + CRLF + CRLF)

    def with_payload(self, payload: bytes) -> Frame:
        return replace(self, payload=payload)

    # --- what the frame carries -----------------------------------------------------------

    @property
    def is_js_delivery(self) -> bool:
        """A message of a push consumer (the live delivery of stored messages)."""
        return bool(self.reply and self.reply.startswith("$JS.ACK.") and not self.status)

    @property
    def is_direct_get_reply(self) -> bool:
        return self.header("Nats-Sequence") is not None and self.status is None

    @property
    def stored_subject(self) -> str | None:
        """The stream subject of a stored message, delivered live or by direct get."""
        if self.is_js_delivery:
            return self.subject
        if self.is_direct_get_reply:
            return self.header("Nats-Subject")
        return None

    @property
    def stream_sequence(self) -> int | None:
        if self.is_js_delivery:
            assert self.reply is not None
            return int(self.reply.split(".")[5])
        value = self.header("Nats-Sequence") if self.is_direct_get_reply else None
        return int(value) if value is not None else None

    def with_stream_sequence(self, sequence: int) -> Frame:
        if self.is_js_delivery:
            assert self.reply is not None
            tokens = self.reply.split(".")
            tokens[5] = str(sequence)
            return replace(self, reply=".".join(tokens))
        return self.with_header("Nats-Sequence", str(sequence))


@dataclass
class RelayConnection:
    """One client connection through the relay, with the relay's bookkeeping for it."""

    number: int
    name: str | None = None
    requests: dict[str, Frame] = field(default_factory=dict)
    """Requests this client published, by reply subject (to recognise their answers)."""
    seen: list[Frame] = field(default_factory=list)
    """Every message frame the server sent to this client, before the scenario (for replays)."""
    subscriptions: dict[str, str] = field(default_factory=dict)
    """The client's subscriptions: subject (maybe with wildcards) -> sid."""
    consumer_seq: dict[str, int] = field(default_factory=dict)
    """Per subscription (sid): the last consumer sequence the client was shown."""
    client_writer: asyncio.StreamWriter | None = None
    server_writer: asyncio.StreamWriter | None = None

    def request_for(self, frame: Frame) -> Frame | None:
        """The request a server frame answers, if it answers one this client made."""
        return self.requests.get(frame.subject)

    def sid_for(self, subject: str) -> str | None:
        """The sid of the client's subscription that receives ``subject``."""
        tokens = subject.split(".")
        for pattern, sid in self.subscriptions.items():
            parts = pattern.split(".")
            if parts[-1] == ">" and len(tokens) >= len(parts) - 1:
                parts = parts[:-1]
                candidate = tokens[: len(parts)]
            elif len(parts) == len(tokens):
                candidate = tokens
            else:
                continue
            if all(p in ("*", t) for p, t in zip(parts, candidate, strict=True)):
                return sid
        return None

    async def reply_to_client(self, request: Frame, payload: bytes) -> None:
        """Answer a request of the client as if the server had (a forged reply)."""
        assert request.reply is not None
        sid = self.sid_for(request.reply)
        if sid is not None:
            await self.send_to_client(Frame("MSG", request.reply, sid, None, None, payload))

    async def send_to_client(self, frame: Frame) -> None:
        """Inject a frame (a replayed message, say) into the client's side of the connection."""
        assert self.client_writer is not None
        self.client_writer.write(frame.encode())
        await self.client_writer.drain()


Verdict = list[Frame] | None
Rule = Callable[[RelayConnection, Frame], Verdict | Awaitable[Verdict]]


class Scenario:
    """What the relay does to frames: override :meth:`to_client` / :meth:`to_server`.

    Return ``None`` to pass the frame unchanged, or the list of frames to send instead.
    """

    def __init__(self, doc_id: str | None = None) -> None:
        self.doc_id = doc_id
        self.log: list[str] = []

    def decode(self, frame: Frame) -> Message | None:
        """The secsync message a frame carries, if it carries one of this document."""
        try:
            return wire.decode(frame.payload, doc_id=self.doc_id)
        except SecsyncError:
            return None

    async def to_client(self, conn: RelayConnection, frame: Frame) -> Verdict:
        return None

    async def to_server(self, conn: RelayConnection, frame: Frame) -> Verdict:
        return None


class RuleScenario(Scenario):
    """A scenario from plain functions (sync or async)."""

    def __init__(
        self,
        doc_id: str | None = None,
        *,
        to_client: Rule | None = None,
        to_server: Rule | None = None,
    ) -> None:
        super().__init__(doc_id)
        self._to_client = to_client
        self._to_server = to_server

    @staticmethod
    async def _call(rule: Rule | None, conn: RelayConnection, frame: Frame) -> Verdict:
        if rule is None:
            return None
        result = rule(conn, frame)
        if inspect.isawaitable(result):
            return await result
        return result

    async def to_client(self, conn: RelayConnection, frame: Frame) -> Verdict:
        return await self._call(self._to_client, conn, frame)

    async def to_server(self, conn: RelayConnection, frame: Frame) -> Verdict:
        return await self._call(self._to_server, conn, frame)


class HostileRelay:
    """Listen on a free loopback port; relay to ``upstream`` through :attr:`scenario`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.scenario: Scenario = Scenario()
        self.renumber = True
        self.connections: list[RelayConnection] = []
        self.frames_to_clients = 0
        self.errors: list[BaseException] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> HostileRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def __aenter__(self) -> HostileRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def by_name(self, name: str) -> list[RelayConnection]:
        return [c for c in self.connections if c.name == name]

    async def release(self, conn: RelayConnection, frames: list[Frame]) -> None:
        """Send frames the scenario held back (renumbered like any delivery) to the client."""
        for frame in frames:
            out = self._renumbered(conn, frame) if self.renumber else frame
            self.frames_to_clients += 1
            await conn.send_to_client(out)

    # --- plumbing -------------------------------------------------------------------------------

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream, limit=MAX_LINE)
        except OSError:
            client_w.close()
            return
        conn = RelayConnection(len(self.connections) + 1)
        conn.client_writer, conn.server_writer = client_w, server_w
        self.connections.append(conn)
        self._writers += [client_w, server_w]
        up = asyncio.ensure_future(self._pump(conn, client_r, server_w, upstream=True))
        down = asyncio.ensure_future(self._pump(conn, server_r, client_w, upstream=False))
        for task in (up, down):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        # one side closed: close both, as a real broker connection would end
        for writer in (client_w, server_w):
            writer.close()

    async def _pump(
        self,
        conn: RelayConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        try:
            while True:
                try:
                    line = await reader.readuntil(CRLF)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                frame = await self._read_frame(line, reader, upstream=upstream)
                if frame is None:
                    if upstream and line[:8].upper() == b"CONNECT ":
                        with contextlib.suppress(ValueError):
                            conn.name = json.loads(line[8:]).get("name")
                    elif upstream and line[:4].upper() == b"SUB ":
                        args = line[4:-2].decode("latin-1").split()
                        conn.subscriptions[args[0]] = args[-1]
                    elif upstream and line[:6].upper() == b"UNSUB ":
                        sid = line[6:-2].decode("latin-1").split()[0]
                        conn.subscriptions = {
                            k: v for k, v in conn.subscriptions.items() if v != sid
                        }
                    writer.write(line)
                else:
                    out = await self._apply(conn, frame, upstream=upstream)
                    for item in out:
                        writer.write(item.encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken scenario must fail the test, not hang it
            self.errors.append(exc)
            raise

    @staticmethod
    async def _read_frame(
        line: bytes, reader: asyncio.StreamReader, *, upstream: bool
    ) -> Frame | None:
        parts = line[:-2].decode("latin-1").split()
        if not parts:
            return None
        op = parts[0].upper()
        if upstream and op in ("PUB", "HPUB"):
            args = parts[1:]
            subject = args[0]
            if op == "PUB":
                reply = args[1] if len(args) == 3 else None
                size, header_size = int(args[-1]), -1
            else:
                reply = args[1] if len(args) == 4 else None
                header_size, size = int(args[-2]), int(args[-1])
            sid = None
        elif not upstream and op in ("MSG", "HMSG"):
            args = parts[1:]
            subject, sid = args[0], args[1]
            if op == "MSG":
                reply = args[2] if len(args) == 4 else None
                size, header_size = int(args[-1]), -1
            else:
                reply = args[2] if len(args) == 5 else None
                header_size, size = int(args[-2]), int(args[-1])
        else:
            return None
        body = await reader.readexactly(size + 2)
        body = body[:-2]
        if header_size >= 0:
            return Frame(op, subject, sid, reply, body[:header_size], body[header_size:])
        return Frame(op, subject, sid, reply, None, body)

    async def _apply(self, conn: RelayConnection, frame: Frame, *, upstream: bool) -> list[Frame]:
        if upstream:
            if frame.reply:
                conn.requests[frame.reply] = frame
                if len(conn.requests) > 10_000:
                    conn.requests.pop(next(iter(conn.requests)))
            verdict = await self.scenario.to_server(conn, frame)
            return [frame] if verdict is None else verdict
        conn.seen.append(frame)
        if frame.is_js_delivery and frame.sid not in conn.consumer_seq:
            # the client expects consumer sequences to go on from here, whatever we drop
            assert frame.sid is not None and frame.reply is not None
            conn.consumer_seq[frame.sid] = int(frame.reply.split(".")[6]) - 1
        verdict = await self.scenario.to_client(conn, frame)
        out = [frame] if verdict is None else verdict
        self.frames_to_clients += len(out)
        return [self._renumbered(conn, item) for item in out] if self.renumber else out

    @staticmethod
    def _renumbered(conn: RelayConnection, frame: Frame) -> Frame:
        """Consumer sequences the ordered consumer will accept, whatever was dropped or added."""
        if frame.sid is None:
            return frame
        if frame.is_js_delivery:
            assert frame.reply is not None
            tokens = frame.reply.split(".")
            if len(tokens) != 9:
                return frame
            shown = conn.consumer_seq.get(frame.sid, int(tokens[6]) - 1) + 1
            conn.consumer_seq[frame.sid] = shown
            tokens[6] = str(shown)
            return replace(frame, reply=".".join(tokens))
        if frame.status == "100" and frame.header("Nats-Last-Consumer") is not None:
            shown = conn.consumer_seq.get(frame.sid)
            if shown is not None:
                return frame.with_header("Nats-Last-Consumer", str(shown))
        return frame


def message_rule(
    scenario: Scenario,
    predicate: Callable[[RelayConnection, Frame, Message], bool],
    action: Callable[[RelayConnection, Frame, Message], Verdict],
    *,
    times: int | None = 1,
) -> Rule:
    """A rule that acts on frames carrying a secsync message, ``times`` times (None: always)."""
    remaining = [times]

    def rule(conn: RelayConnection, frame: Frame) -> Verdict:
        if remaining[0] == 0:
            return None
        message = scenario.decode(frame)
        if message is None or not predicate(conn, frame, message):
            return None
        if remaining[0] is not None:
            remaining[0] -= 1
        return action(conn, frame, message)

    return rule


def describe(frame: Frame) -> dict[str, Any]:
    """A short description of a frame, for scenario logs."""
    return {
        "op": frame.op,
        "subject": frame.subject,
        "stored_subject": frame.stored_subject,
        "sequence": frame.stream_sequence,
        "bytes": len(frame.payload),
    }
