"""The gateway served for real: uvicorn, WebSockets, a real nats-server, and the frames an
unmodified secsync JS client sends (recorded from the npm package, tests/js/gateway). What it
stores is read back by a Python client with the document key."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import pycrdt
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

import secsync
from secsync.config import GatewayConfig, SecsyncConfig
from secsync.gateway import Access
from secsync.gateway.server import Gateway, allow_all
from secsync.gateway.serving import GatewayServer
from secsync.protocol import wire
from secsync.protocol.crypto import SigningKeyPair
from secsync.protocol.messages import Snapshot
from secsync.servers.broker import Broker
from tests.factories import make_update
from tests.gateway.helpers import DOC_ID, KEY, JsClientModel, frame, message, text
from tests.transport.helpers import until

CONFIG = SecsyncConfig(change_encoding="secsync-json")
TIMEOUT = 15.0


class Client:
    """A WebSocket to the gateway, speaking as a JS client would."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        obj: dict[str, Any] = json.loads(raw)
        self.received.append(obj)
        return obj

    async def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame, which must be of ``kind``."""
        obj = await self.recv(timeout)
        assert obj["type"] == kind, obj
        return obj

    async def recv_skipping_ephemeral(self, kind: str) -> dict[str, Any]:
        """The next frame other than ephemeral messages (a Python client's presence)."""
        while (obj := await self.recv())["type"] == "ephemeral-message":
            pass
        assert obj["type"] == kind, obj
        return obj

    async def send(self, name: str) -> None:
        await self.ws.send(text(name))

    async def closed(self, timeout: float = TIMEOUT) -> None:
        """The gateway closes the socket (after any frames it sent first)."""
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await self.recv(timeout)


def path(doc_id: str = DOC_ID, key: str = "k", extra: str = "") -> str:
    return f"/{quote(doc_id)}?sessionKey={quote(key)}{extra}"


@pytest.fixture
async def serve(broker: Broker) -> AsyncIterator[Callable[..., Any]]:
    """Start gateways on ``broker`` (stopped after the test)."""
    servers: list[GatewayServer] = []

    async def start(
        has_access: Any = allow_all, config: GatewayConfig | None = None
    ) -> GatewayServer:
        gateway = Gateway(broker.url, has_access, config=config, secsync_config=CONFIG)
        server = await GatewayServer(gateway).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


async def join(server: GatewayServer, target: str | None = None, **options: Any) -> Client:
    ws = await ws_connect(server.url + (target or path()), **options)
    return Client(ws)


async def test_a_js_document_made_through_the_gateway_is_read_by_a_python_client(
    serve: Callable[..., Any], broker: Broker
) -> None:
    server = await serve()
    a = await join(server)
    assert await a.recv_type("document") == {
        "type": "document",
        "updates": [],
        "snapshotProofChain": [],
    }
    await a.send("s1")
    assert (await a.recv_type("snapshot-saved"))["snapshotId"] == frame("s1")["publicData"][
        "snapshotId"
    ]
    await a.send("u1_a0")
    assert (await a.recv_type("update-saved"))["clock"] == 0

    b = await join(server)
    loaded = await b.recv_type("document")
    assert loaded["snapshot"]["publicData"]["snapshotId"] == frame("s1")["publicData"]["snapshotId"]
    assert [u["publicData"]["clock"] for u in loaded["updates"]] == [0]

    await a.send("u1_a1")
    assert (await a.recv_type("update-saved"))["clock"] == 1
    broadcast = await b.recv_type("update")
    assert broadcast["signature"] == frame("u1_a1")["signature"]
    await b.send("u1_b0")
    assert (await b.recv_type("update-saved"))["clock"] == 0
    assert (await a.recv_type("update"))["signature"] == frame("u1_b0")["signature"]
    model = JsClientModel()
    model.feed(b.received)  # nothing a JS client would fail on

    signer = SigningKeyPair.generate()
    ydoc = secsync.new_yjs_doc(signer)
    ytext = ydoc.get("text", type=pycrdt.Text)
    async with secsync.connect(broker.url, config=CONFIG) as client:
        doc = await client.open(DOC_ID, key=KEY, signing_key=signer, crdt=ydoc)
        await until(doc, lambda: str(ytext) == "hello from A, B")
        await doc.close()


async def test_python_edits_reach_js_clients_live(
    serve: Callable[..., Any], broker: Broker
) -> None:
    server = await serve()
    a = await join(server)
    await a.recv_type("document")
    await a.send("s1")
    await a.recv_type("snapshot-saved")

    signer = SigningKeyPair.generate()
    ydoc = secsync.new_yjs_doc(signer)
    ytext = ydoc.get("text", type=pycrdt.Text)
    async with secsync.connect(broker.url, config=CONFIG) as client:
        doc = await client.open(DOC_ID, key=KEY, signing_key=signer, crdt=ydoc)
        await until(doc, lambda: str(ytext) == "hello")
        ytext += " python"
        broadcast = await a.recv_skipping_ephemeral("update")
        assert broadcast["publicData"]["refSnapshotId"] == frame("s1")["publicData"]["snapshotId"]
        assert broadcast["publicData"]["clock"] == 0
        update = secsync.protocol.wire.from_json_dict(
            {k: v for k, v in broadcast.items() if k != "type"}
        )
        assert update.author == signer.public_key
        await doc.close()


async def test_an_origin_not_allowed_is_refused_before_the_upgrade(
    serve: Callable[..., Any],
) -> None:
    server = await serve(config=GatewayConfig(allowed_origins=("https://app.example",)))
    with pytest.raises(websockets.InvalidStatus) as refused:
        await join(server, origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    allowed = await join(server, origin="https://app.example")  # type: ignore[arg-type]
    await allowed.recv_type("document")
    without = await join(server)  # not a browser: no Origin
    await without.recv_type("document")


async def test_denied_access_gets_unauthorized_and_nothing_is_stored(
    serve: Callable[..., Any], broker: Broker
) -> None:
    asked: list[tuple[str, str, str, bytes | None]] = []

    async def has_access(
        action: str, document_id: str, session_key: str, public_key: bytes | None
    ) -> bool:
        asked.append((action, document_id, session_key, public_key))
        return action == "read" or session_key == "writer"

    server = await serve(has_access)
    reader = await join(server, path(key="reader"))
    await reader.recv_type("document")
    await reader.send("s1")
    await reader.recv_type("unauthorized")
    await reader.closed()
    assert [a[0] for a in asked] == ["read", "write-snapshot"]
    assert asked[0][1] == DOC_ID
    assert asked[1][3] is not None and len(asked[1][3]) == 32  # the author's key

    writer = await join(server, path(key="writer"))
    assert await writer.recv_type("document") == {
        "type": "document",
        "updates": [],
        "snapshotProofChain": [],
    }


@pytest.mark.parametrize("failure", ["raises", "hangs", "junk"])
async def test_an_access_check_that_fails_denies(serve: Callable[..., Any], failure: str) -> None:
    async def has_access(action: str, *_: Any) -> Any:
        if failure == "raises":
            raise RuntimeError("database down")
        if failure == "hangs":
            await asyncio.Event().wait()
        return "yes"

    server = await serve(has_access, GatewayConfig(access_timeout=0.5))
    client = await join(server)
    await client.recv_type("unauthorized")
    await client.closed()


async def test_the_session_key_is_never_logged(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-session-key-0123456789"

    def has_access(action: str, document_id: str, session_key: str, *_: Any) -> bool:
        if action == "write-update":
            raise RuntimeError(f"boom {session_key}")  # an application's careless error text
        return True

    caplog.set_level(logging.DEBUG)
    server = await serve(has_access)
    uvicorn_log = logging.getLogger("uvicorn.error")  # it logs each WebSocket's URL
    uvicorn_log.setLevel(logging.DEBUG)
    uvicorn_log.addHandler(caplog.handler)
    own_client_log = logging.getLogger("websockets.client")  # this test's client logs its URL
    own_client_log.setLevel(logging.INFO)
    client = await join(server, path(key=secret))
    await client.recv_type("document")
    await client.send("s1")
    await client.recv_type("snapshot-saved")
    await client.send("u1_a0")
    await client.recv_type("unauthorized")
    await client.closed()
    assert caplog.records  # the gateway did log
    try:
        assert any("sessionKey=<hidden>" in r.getMessage() for r in caplog.records)
        assert all(secret not in record.getMessage() for record in caplog.records)
        assert secret not in caplog.text
    finally:
        uvicorn_log.removeHandler(caplog.handler)
        uvicorn_log.setLevel(logging.NOTSET)
        own_client_log.setLevel(logging.NOTSET)


@pytest.mark.parametrize("target", ["/", f"/{quote(DOC_ID)}", f"/{quote(DOC_ID)}?sessionKey="])
async def test_a_url_without_document_or_session_key_gets_document_error(
    serve: Callable[..., Any], target: str
) -> None:
    server = await serve()
    client = await join(server, target)
    await client.recv_type("document-error")
    await client.closed()


async def test_an_oversized_frame_closes_the_socket_and_the_document_stays_whole(
    serve: Callable[..., Any],
) -> None:
    server = await serve(config=GatewayConfig(max_frame_bytes=64 * 1024))
    a = await join(server)
    await a.recv_type("document")
    await a.send("s1")
    await a.recv_type("snapshot-saved")
    await a.ws.send(json.dumps({"publicData": {"refSnapshotId": "x"}, "pad": "x" * 70_000}))
    await a.recv_type("document-error")
    await a.closed()
    b = await join(server)
    loaded = await b.recv_type("document")
    assert loaded["snapshot"]["publicData"]["snapshotId"] == frame("s1")["publicData"]["snapshotId"]


async def test_junk_frames_are_ignored_and_the_session_goes_on(
    serve: Callable[..., Any],
) -> None:
    server = await serve()
    a = await join(server)
    await a.recv_type("document")
    for junk in ["not json", "[1,2]", '{"x": 1.5}', "{}", json.dumps({"publicData": 7})]:
        await a.ws.send(junk)
    await a.send("s1")
    assert (await a.recv_type("snapshot-saved"))["snapshotId"] == frame("s1")["publicData"][
        "snapshotId"
    ]


async def test_missing_documents_can_be_not_found(serve: Callable[..., Any]) -> None:
    server = await serve(config=GatewayConfig(missing_documents="not-found"))
    client = await join(server)
    await client.recv_type("document-not-found")
    await client.closed()


async def test_the_gateway_mounts_in_a_starlette_app(broker: Broker) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    gateway = Gateway(broker.url, allow_all, secsync_config=CONFIG)

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("app")

    app = Starlette(routes=[Route("/", home), Mount("/secsync", app=gateway)])
    server = await GatewayServer(gateway, app=app).start()
    try:
        client = await join(server, "/secsync" + path())
        await client.recv_type("document")
        await client.send("s1")
        await client.recv_type("snapshot-saved")
    finally:
        await server.stop()


async def test_plain_http_is_told_to_upgrade(serve: Callable[..., Any]) -> None:
    server = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /doc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), TIMEOUT)
    writer.close()
    assert b" 426 " in status


async def test_two_gateways_serve_one_document(serve: Callable[..., Any]) -> None:
    first, second = await serve(), await serve()
    a = await join(first)
    await a.recv_type("document")
    await a.send("s1")
    await a.recv_type("snapshot-saved")
    b = await join(second)
    loaded = await b.recv_type("document")
    assert loaded["snapshot"]["publicData"]["snapshotId"] == frame("s1")["publicData"]["snapshotId"]
    await a.send("u1_a0")
    await a.recv_type("update-saved")
    assert (await b.recv_type("update"))["signature"] == frame("u1_a0")["signature"]
    await b.send("u1_b0")
    await b.recv_type("update-saved")
    assert (await a.recv_type("update"))["signature"] == frame("u1_b0")["signature"]
    # Two different updates of one author with the same clock, one through each gateway:
    # exactly one is stored, the other is told to re-send, and neither client sees a gap.
    author_a = SigningKeyPair.from_secret(bytes([1]) * 32)
    s1 = message("s1")
    assert isinstance(s1, Snapshot)
    rival = make_update(author_a, s1, 1, [b"\x00"], key=KEY, doc_id=DOC_ID)
    rival_text = json.dumps(wire.to_json_dict(rival))
    await asyncio.gather(a.send("u1_a1"), b.ws.send(rival_text))
    outcomes = {"a": (await a.recv())["type"], "b": (await b.recv())["type"]}
    saved = [who for who, kind in outcomes.items() if kind == "update-saved"]
    assert len(saved) == 1, outcomes
    loser = "b" if saved == ["a"] else "a"
    assert outcomes[loser] in ("update", "update-save-failed"), outcomes
    client = {"a": a, "b": b}[loser]
    while not any(f["type"] == "update-save-failed" for f in client.received):
        await client.recv()
    model = JsClientModel()  # b loaded the document: what it was sent chains, gap-free
    model.feed([f for f in b.received if f["type"] in ("document", "update", "snapshot")])


async def test_ephemeral_messages_reach_the_others_not_the_sender(
    serve: Callable[..., Any],
) -> None:
    server = await serve()
    a = await join(server)
    await a.recv_type("document")
    await a.send("s1")
    await a.recv_type("snapshot-saved")
    b = await join(server)
    await b.recv_type("document")
    await a.send("eph_message")
    got = await b.recv_type("ephemeral-message")
    assert got["signature"] == frame("eph_message")["signature"]
    await a.send("u1_a0")
    assert (await a.recv())["type"] == "update-saved"  # a got no echo of its ephemeral


async def test_access_new_snapshot_required(serve: Callable[..., Any]) -> None:
    def has_access(action: str, *_: Any) -> Access:
        return Access.NEW_SNAPSHOT_REQUIRED if action == "write-update" else Access.GRANTED

    server = await serve(has_access)
    a = await join(server)
    await a.recv_type("document")
    await a.send("s1")
    await a.recv_type("snapshot-saved")
    await a.send("u1_a0")
    failed = await a.recv_type("update-save-failed")
    assert failed["requiresNewSnapshot"] is True


async def test_after_a_gateway_restart_a_delta_reconnect_gets_only_what_it_lacks(
    serve: Callable[..., Any],
) -> None:
    first = await serve()
    a = await join(first)
    await a.recv_type("document")
    for name in ("s1", "u1_a0", "u1_a1"):
        await a.send(name)
        await a.recv()
    await first.stop()
    await a.closed()

    second = await serve()
    s1_id = frame("s1")["publicData"]["snapshotId"]
    clocks = quote(json.dumps({frame("s1")["publicData"]["pubKey"]: 0}))
    known = f"&mode=delta&knownSnapshotId={s1_id}&knownSnapshotUpdateClocks={clocks}"
    back = await join(second, path(extra=known))
    delta = await back.recv_type("document")
    assert "snapshot" not in delta
    assert [u["signature"] for u in delta["updates"]] == [frame("u1_a1")["signature"]]
    clock_reset = await back.recv_type("update-save-failed")  # sets its own clock
    assert clock_reset["requiresNewSnapshot"] is False and "clock" not in clock_reset
    other = await join(second)
    await other.recv_type("document")
    await other.send("u1_b0")
    await other.recv_type("update-saved")
    assert (await back.recv_type("update"))["signature"] == frame("u1_b0")["signature"]


async def test_the_gateway_rides_out_a_broker_restart(
    serve: Callable[..., Any], broker: Broker
) -> None:
    server = await serve()
    a, b = await join(server), await join(server)
    await a.recv_type("document")
    await b.recv_type("document")
    await a.send("s1")
    await a.recv_type("snapshot-saved")
    await b.recv_type("snapshot")
    await broker.arestart()
    # the first publishes may fail while the connection comes back: the client re-sends then
    for _ in range(100):
        await a.send("u1_a0")
        if (await a.recv())["type"] == "update-saved":
            break
    else:
        pytest.fail("no update was stored after the broker came back")
    assert (await b.recv_type("update"))["signature"] == frame("u1_a0")["signature"]
    late = await join(server)
    loaded = await late.recv_type("document")
    assert [u["signature"] for u in loaded["updates"]] == [frame("u1_a0")["signature"]]


async def test_a_broker_out_of_reach_closes_without_a_frame_so_js_clients_retry(
    serve: Callable[..., Any], broker: Broker
) -> None:
    server = await serve(config=GatewayConfig(load_timeout=2.0))
    await broker.astop()
    client = await join(server, path(doc_id="a document never opened here"))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert client.received == []  # no document-error: that would stop the JS client
