"""``secsync demo --web`` (work in progress): an embedded broker, the gateway at ``/ws``, the
page of ``web/`` (an unmodified ``secsync-react-yjs`` app) and a Python participant typing into
the same document (Yjs update format v2, secsync-json changes)."""

from __future__ import annotations

import asyncio
import json
import os
from importlib import resources
from typing import Any

import pycrdt

import secsync
from secsync.config import SecsyncConfig
from secsync.crdt.lib0 import write_var_uint
from secsync.crdt.yjs import YjsAdapter
from secsync.gateway import Gateway, GatewayServer, allow_all
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.encoding import b64encode
from secsync.servers.broker import Broker
from secsync.transport import jetstream
from secsync.transport.subjects import DocumentSubjects

CONFIG = SecsyncConfig(change_encoding="secsync-json")
STATIC = {
    "/": ("index.html", b"text/html; charset=utf-8"),
    "/app.js": ("app.js", b"text/javascript"),
}


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


class WebDemo:
    """The demo's parts, started by :meth:`start`; ``url`` is the page's link with its key."""

    def __init__(self, broker: Broker, *, port: int = 0, doc_id: str = "web-demo") -> None:
        self.broker = broker
        self.doc_id = doc_id
        self.key = os.urandom(32)
        self.port = port
        self.gateway = Gateway(broker.url, allow_all, secsync_config=CONFIG)
        self.server = GatewayServer(self.gateway, port=port, app=self._app, interface="asgi3")
        self.signer = SigningKeyPair.generate()
        self.ydoc: pycrdt.Doc[Any] = secsync.new_yjs_doc(self.signer)
        self.text = self.ydoc.get("text", type=pycrdt.Text)
        self._client: Any = None
        self.document: Any = None
        self._presence: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/#doc={self.doc_id}&key={b64encode(self.key)}"

    async def start(self) -> WebDemo:
        await self.server.start()
        self._client = await secsync.connect(self.broker.url, config=CONFIG).__aenter__()
        self.document = await self._client.open(
            self.doc_id,
            key=self.key,
            signing_key=self.signer,
            crdt=YjsAdapter(self.ydoc, content_format="v2"),
        )
        if not str(self.text):
            self.text += "Python: hello from the backend.\n"
            self.document.write_snapshot()
            await self.document.flush()
        self._presence = asyncio.create_task(self._announce_every(2.0))
        return self

    async def _announce_every(self, seconds: float) -> None:
        # ephemeral messages are not stored: a page that opens later learns of us from the next
        clock = 0
        while True:
            clock += 1
            await self.announce(clock)
            await asyncio.sleep(seconds)

    async def announce(self, clock: int) -> None:
        state = {"user": {"publicKey": b64encode(self.signer.public_key), "name": "Python"}}
        await self.document.send_presence(awareness_update(self.ydoc.client_id, clock, state))

    async def stop(self) -> None:
        if self._presence is not None:
            self._presence.cancel()
        if self.document is not None:
            await self.document.close()
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
        await self.server.stop()

    async def stored(self) -> dict[str, Any]:
        nc = self._client.nc
        subjects = DocumentSubjects.of(self.doc_id)
        messages = await jetstream.messages_after(nc, CONFIG.stream_name, subjects.stored, 1)
        blob = b"".join(m.data for m in messages)
        words = [w for w in str(self.text).split() if len(w) > 3]
        return {
            "total": len(messages),
            "plaintextFound": any(w.encode() in blob for w in words),
            "checkedWords": len(words),
            "messages": [
                {
                    "sequence": m.sequence,
                    "kind": m.subject.rsplit(".", 1)[-1],
                    "size": len(m.data),
                    "head": m.data[:48].hex(),
                }
                for m in messages[-8:]
            ],
        }

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "websocket" and path.startswith("/ws/"):
            await self.gateway(
                {**scope, "root_path": scope.get("root_path", "") + "/ws"}, receive, send
            )
            return
        if scope["type"] != "http":
            await self.gateway(scope, receive, send)
            return
        if path == "/api/stored":
            body, kind = json.dumps(await self.stored()).encode(), b"application/json"
        elif path in STATIC:
            name, kind = STATIC[path]
            body = resources.files("secsync.apps.web").joinpath(name).read_bytes()
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not found"})
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]}
        )
        await send({"type": "http.response.body", "body": body})


async def run() -> None:
    async with Broker() as broker:
        demo = await WebDemo(broker, port=8765).start()
        print(demo.url, flush=True)
        try:
            for line in ["Python: hello from the backend.", "Python: I read what you type."]:
                for ch in line + "\n":
                    demo.text += ch
                    await asyncio.sleep(0.05)
            await asyncio.Event().wait()
        finally:
            await demo.stop()


if __name__ == "__main__":
    asyncio.run(run())
