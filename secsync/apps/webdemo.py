"""``secsync demo --web`` (and ``make demo-web``): a browser and a Python backend edit one
encrypted document.

One process serves everything on one port: the page (``secsync/apps/web``, an unmodified
``secsync-react-yjs`` app bundled from ``web/``), the WebSocket gateway at ``/ws``, and
``/api/stored``, which reads what the broker's stream holds for the document so the page can
show that it is only ciphertext. A Python participant holds the same document (Yjs update
format v2, the hook's ``secsync-json`` changes), types into it and announces itself with
y-protocols awareness, as the page does. The document key is in the link's fragment, which a
browser never sends to a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from importlib import resources
from typing import Any

import pycrdt

import secsync
from secsync.config import SecsyncConfig
from secsync.crdt.lib0 import write_var_uint
from secsync.crdt.yjs import YjsAdapter
from secsync.errors import SecsyncError
from secsync.gateway import Gateway, GatewayServer, allow_all
from secsync.protocol import wire
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.encoding import b64encode
from secsync.servers.broker import Broker
from secsync.transport import jetstream
from secsync.transport.client import SecsyncClient
from secsync.transport.document import Document
from secsync.transport.subjects import DocumentSubjects

CONFIG = SecsyncConfig(change_encoding="secsync-json")  # what secsync-react-yjs sends
STATIC = {
    "/": ("index.html", b"text/html; charset=utf-8"),
    "/app.js": ("app.js", b"text/javascript; charset=utf-8"),
}
FIRST_LINE = "Python: hello from the backend. Type below; I see it as you type.\n"
LINES = ["Python: every keystroke is encrypted and signed before it leaves.", "Python: done."]


def awareness_update(client_id: int, clock: int, state: dict[str, Any]) -> bytes:
    """A y-protocols awareness update holding one client's state."""
    out = bytearray()
    write_var_uint(out, 1)
    write_var_uint(out, client_id)
    write_var_uint(out, clock)
    raw = json.dumps(state).encode()
    write_var_uint(out, len(raw))
    out += raw
    return bytes(out)


def _describe(message: jetstream.StoredMessage, doc_id: str) -> dict[str, Any]:
    """What the page shows of one stored message: its public part and the start of its
    ciphertext (all the broker has of the content)."""
    row: dict[str, Any] = {"sequence": message.sequence, "size": len(message.data)}
    try:
        decoded = wire.decode(message.data, doc_id=doc_id)
    except SecsyncError as exc:
        return {**row, "kind": "unreadable", "author": "", "head": type(exc).__name__}
    return {
        **row,
        "kind": type(decoded).__name__.lower(),
        "author": b64encode(decoded.public_data.pub_key),
        "head": decoded.ciphertext[:40].hex(),
    }


class WebDemo:
    """The demo's parts on a running broker: :meth:`start`, then open :attr:`url`."""

    def __init__(
        self, broker: Broker, *, host: str = "127.0.0.1", port: int = 0, doc_id: str = "web-demo"
    ) -> None:
        self.broker = broker
        self.doc_id = doc_id
        self.key = os.urandom(32)
        self.host = host
        self.gateway = Gateway(broker.url, allow_all, secsync_config=CONFIG)
        # interface="asgi3": uvicorn cannot tell a bound method's ASGI version by itself
        self.server = GatewayServer(
            self.gateway, host=host, port=port, app=self._app, interface="asgi3"
        )
        self.signer = SigningKeyPair.generate()
        self.ydoc: pycrdt.Doc[Any] = secsync.new_yjs_doc(self.signer)
        self.text = self.ydoc.get("text", type=pycrdt.Text)
        self._client: SecsyncClient | None = None
        self._document: Document | None = None
        self._presence: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The page's link; the fragment carries the document id and its key."""
        return f"http://{self.host}:{self.server.port}/#doc={self.doc_id}&key={b64encode(self.key)}"

    @property
    def document(self) -> Document:
        if self._document is None:
            raise RuntimeError("the demo is not started")
        return self._document

    async def start(self) -> WebDemo:
        await self.server.start()
        self._client = await secsync.connect(self.broker.url, config=CONFIG)
        self._document = await self._client.open(
            self.doc_id,
            key=self.key,
            signing_key=self.signer,
            crdt=YjsAdapter(self.ydoc, content_format="v2"),
        )
        if not str(self.text):
            self.text += FIRST_LINE
            # a first snapshot at once: presence is sealed under a snapshot's key
            self.document.write_snapshot()
            await self.document.flush()
        self._presence = asyncio.create_task(self._announce_every(2.0))
        return self

    async def type_line(self, line: str, *, delay: float = 0.04) -> None:
        """Type ``line`` at the end of the text, one character (one update) at a time."""
        for character in line + "\n":
            self.text += character
            await asyncio.sleep(delay)

    async def _announce_every(self, seconds: float) -> None:
        # presence is not stored: a page that opens later learns of us from the next one
        clock = 0
        while True:
            clock += 1
            me = {"publicKey": b64encode(self.signer.public_key), "name": "Python"}
            state = {"user": {**me, "color": "#3b6e8f"}}
            await self.document.send_presence(awareness_update(self.ydoc.client_id, clock, state))
            await asyncio.sleep(seconds)

    async def stop(self) -> None:
        if self._presence is not None:
            self._presence.cancel()
        if self._document is not None:
            await self._document.close()
        if self._client is not None:
            await self._client.close()
        await self.server.stop()

    async def stored(self) -> dict[str, Any]:
        """What the broker's stream holds for the document, and whether any word of the
        current text appears in it."""
        assert self._client is not None
        subjects = DocumentSubjects.of(self.doc_id)
        messages = await jetstream.messages_after(
            self._client.nc, CONFIG.stream_name, subjects.stored, 1
        )
        blob = b"".join(m.data for m in messages)
        words = {w for w in str(self.text).split() if len(w) > 3}
        return {
            "total": len(messages),
            "plaintextFound": any(w.encode() in blob for w in words),
            "checkedWords": len(words),
            "messages": [_describe(m, self.doc_id) for m in messages[-8:]],
        }

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "websocket" and path.startswith("/ws/"):
            root = scope.get("root_path", "") + "/ws"
            await self.gateway({**scope, "root_path": root}, receive, send)
            return
        if scope["type"] != "http":
            await self.gateway(scope, receive, send)  # lifespan, and refusing other sockets
            return
        status, kind, body = 200, b"application/json", b""
        if path == "/api/stored":
            body = json.dumps(await self.stored()).encode()
        elif path in STATIC:
            name, kind = STATIC[path]
            body = resources.files("secsync.apps.web").joinpath(name).read_bytes()
        else:
            status, kind, body = 404, b"text/plain", b"not found"
        headers = [(b"content-type", kind), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def run(host: str, port: int, *, typing: bool = True) -> None:
    """Serve the demo until interrupted, printing the link and what others type."""
    async with Broker() as broker:
        demo = await WebDemo(broker, host=host, port=port).start()
        print(f"Open {demo.url}", flush=True)
        print("(more tabs or browsers on the same link join the same document; Ctrl-C stops)")
        seen = set(str(demo.text).splitlines())

        def show(_event: Any) -> None:
            for line in str(demo.text).split("\n")[:-1]:  # lines ended by Enter
                if line not in seen and not line.startswith("Python:"):
                    seen.add(line)
                    print(f"  the document now has: {line}", flush=True)

        subscription = demo.text.observe(show)
        try:
            if typing:
                await asyncio.sleep(3)
                for line in LINES:
                    await demo.type_line(line)
            await asyncio.Event().wait()
        finally:
            demo.text.unobserve(subscription)
            await demo.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secsync.apps.webdemo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how the demo stops
        asyncio.run(run(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
