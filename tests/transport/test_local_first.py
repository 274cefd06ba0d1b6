"""Local-first: offline editing, a durable outbox across SIGKILL, pause and resume."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pycrdt

import secsync
from secsync.config import SecsyncConfig
from secsync.protocol import crypto, wire
from secsync.protocol.encoding import b64encode
from secsync.protocol.events import Event, UpdateApplied
from secsync.protocol.messages import Update
from secsync.servers.binary import free_port
from secsync.servers.broker import Broker
from secsync.transport import jetstream
from secsync.transport.events import DocumentLoaded, DocumentRestored
from tests.factories import plain_yjs_doc
from tests.transport.helpers import until

KEY = crypto.generate_key()


def config(store: Path | None = None, **kw: float) -> SecsyncConfig:
    return SecsyncConfig(
        store_path=str(store) if store else None,
        batch_interval=0.002,
        publish_timeout=1.0,
        request_timeout=1.0,
        retry_initial=0.05,
        retry_max=0.3,
        **kw,  # type: ignore[arg-type]
    )


def text_of(doc: pycrdt.Doc) -> str:
    return str(doc.get("text", type=pycrdt.Text))


async def test_edit_before_the_broker_ever_started(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    url = f"nats://127.0.0.1:{port}"
    signer = crypto.SigningKeyPair.generate()
    async with secsync.connect(url, config=config(tmp_path / "a.db")) as client:
        assert not client.connected.is_set()
        ydoc: pycrdt.Doc = plain_yjs_doc()
        doc = await client.open("offline-start", key=KEY, signing_key=signer, crdt=ydoc)
        assert not doc.online
        ydoc.get("text", type=pycrdt.Text).insert(0, "written offline")
        doc.notify_changed()
        with Broker(port=port, http_port=http_port) as broker:
            await doc.flush(15)  # connects with backoff, then sends
            assert doc.online
            async with secsync.connect(broker.url, config=config()) as other:
                seen: pycrdt.Doc = plain_yjs_doc()
                await other.open(
                    "offline-start",
                    key=KEY,
                    signing_key=crypto.SigningKeyPair.generate(),
                    crdt=seen,
                )
                assert text_of(seen) == "written offline"


WRITER = textwrap.dedent(
    """
    import asyncio, sys, pycrdt, secsync
    from secsync.config import SecsyncConfig
    from secsync.protocol import crypto
    from secsync.protocol.encoding import b64decode

    url, store, key, secret, mode = sys.argv[1:6]
    async def main():
        config = SecsyncConfig(store_path=store, batch_interval=0.002, request_timeout=1.0,
                               publish_timeout=1.0, retry_initial=0.05, retry_max=0.3)
        client = await secsync.connect(url, config=config)
        ydoc = pycrdt.Doc()
        doc = await client.open("durable", key=b64decode(key),
                                signing_key=crypto.SigningKeyPair.from_b64(secret), crdt=ydoc)
        text = ydoc.get("text", type=pycrdt.Text)
        if mode == "write":
            doc.pause_sending()
            for word in ["alpha ", "beta ", "gamma "]:
                text.insert(len(text), word)
            await asyncio.sleep(0)  # let the change be logged
            print("READY", flush=True)
            await asyncio.Event().wait()  # killed here, with nothing sent
        else:
            await doc.flush(20)
            print("SENT", str(text), flush=True)
            await client.close()
    asyncio.run(main())
    """
)


def run_writer(url: str, store: Path, signer: crypto.SigningKeyPair, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            url,
            str(store),
            b64encode(KEY),
            b64encode(signer.secret_key),
            mode,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def test_killed_process_loses_no_unsent_change_and_sends_it_once(broker, tmp_path) -> None:
    store = tmp_path / "writer.db"
    signer = crypto.SigningKeyPair.generate()
    async with secsync.connect(broker.url, config=config()) as client:
        base: pycrdt.Doc = plain_yjs_doc()
        reader = await client.open(
            "durable", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=base
        )
        base.get("text", type=pycrdt.Text).insert(0, "start ")
        await reader.flush(5)

        writer = run_writer(broker.url, store, signer, "write")
        assert writer.stdout is not None
        async with asyncio.timeout(30):
            while (line := await asyncio.to_thread(writer.stdout.readline)).strip() != "READY":
                assert line, "the writer exited early"
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)

        restarted = run_writer(broker.url, store, signer, "send")
        out, _ = await asyncio.to_thread(restarted.communicate, None, 60)
        assert restarted.returncode == 0, out
        assert "alpha beta gamma" in out

        await until([reader], lambda: "gamma" in text_of(base))
        assert text_of(base).count("alpha") == 1 and text_of(base).count("gamma") == 1
        stored = await jetstream.messages_after(
            client.nc, client.config.stream_name, reader.subjects.update, 1
        )
        mine = [wire.decode(m.data, doc_id="durable") for m in stored]
        mine = [m for m in mine if m.author == signer.public_key]
        assert len(mine) == 1  # the three words went out as one batch, once
        assert isinstance(mine[0], Update) and mine[0].clock == 0


async def test_hundreds_of_offline_edits_on_both_sides_converge(tmp_path) -> None:
    with Broker() as broker:
        async with (
            secsync.connect(broker.url, config=config(tmp_path / "a.db")) as ca,
            secsync.connect(broker.url, config=config(tmp_path / "b.db")) as cb,
        ):
            ya, yb = plain_yjs_doc(), plain_yjs_doc()
            da = await ca.open(
                "offline", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=ya
            )
            ya.get("text", type=pycrdt.Text).insert(0, "|")
            await da.flush(5)
            db = await cb.open(
                "offline", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=yb
            )
            assert text_of(yb) == "|"
            broker.kill()
            ta, tb = ya.get("text", type=pycrdt.Text), yb.get("text", type=pycrdt.Text)
            for i in range(300):
                ta.insert(0, "a")
                tb.insert(len(tb), "b")
                if i % 50 == 0:
                    await asyncio.sleep(0)  # edits arrive while the app runs
            await asyncio.to_thread(broker.restart)
            await asyncio.gather(da.flush(30), db.flush(30))
            await until([da, db], lambda: text_of(ya) == text_of(yb), timeout=30)
            assert text_of(ya) == "a" * 300 + "|" + "b" * 300


async def test_restart_loads_locally_and_downloads_only_what_is_new(broker, tmp_path) -> None:
    store = tmp_path / "c.db"
    signer = crypto.SigningKeyPair.generate()
    async with secsync.connect(broker.url, config=config(store)) as client:
        ydoc: pycrdt.Doc = plain_yjs_doc()
        doc = await client.open("resume", key=KEY, signing_key=signer, crdt=ydoc)
        for i in range(30):
            ydoc.get("text", type=pycrdt.Text).insert(0, str(i % 10))
            await doc.flush(5)
    async with secsync.connect(broker.url, config=config()) as other:
        yo: pycrdt.Doc = plain_yjs_doc()
        do = await other.open(
            "resume", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=yo
        )
        yo.get("text", type=pycrdt.Text).insert(0, "new ")
        await do.flush(5)
    async with secsync.connect(broker.url, config=config(store)) as client:
        again: pycrdt.Doc = plain_yjs_doc()
        doc = await client.open("resume", key=KEY, signing_key=signer, crdt=again)
        loads: list[Event] = []
        while not doc._events.empty():
            loads.append(doc._events.get_nowait())
        assert isinstance(
            next(e for e in loads if isinstance(e, DocumentLoaded | DocumentRestored)),
            DocumentRestored,
        )
        loaded = [e for e in loads if isinstance(e, DocumentLoaded)]
        assert loaded[0].updates == 1  # only the one update stored while we were away
        assert text_of(again).startswith("new ") and len(text_of(again)) == 34


async def test_pause_receiving_and_pause_sending(broker) -> None:
    async with (
        secsync.connect(broker.url, config=config()) as ca,
        secsync.connect(broker.url, config=config()) as cb,
    ):
        ya, yb = plain_yjs_doc(), plain_yjs_doc()
        da = await ca.open("pause", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=ya)
        ya.get("text", type=pycrdt.Text).insert(0, "0")
        await da.flush(5)
        db = await cb.open("pause", key=KEY, signing_key=crypto.SigningKeyPair.generate(), crdt=yb)

        await db.pause_receiving()
        ya.get("text", type=pycrdt.Text).insert(1, "1")
        await da.flush(5)
        assert (await ca.js.stream_info(ca.config.stream_name)).state.messages == 2
        assert text_of(yb) == "0"  # stored, but not applied here
        await db.resume_receiving()
        assert text_of(yb) == "01"

        da.pause_sending()
        stored_before = (await ca.js.stream_info(ca.config.stream_name)).state.messages
        for ch in "abcdef":
            ya.get("text", type=pycrdt.Text).insert(len(text_of(ya)), ch)
            da.notify_changed()
            await asyncio.sleep(0)
        assert da.pending_changes == 6
        assert (await ca.js.stream_info(ca.config.stream_name)).state.messages == stored_before
        da.resume_sending()
        await da.flush(5)
        assert (await ca.js.stream_info(ca.config.stream_name)).state.messages == stored_before + 1
        await until([db], lambda: text_of(yb) == "01abcdef")
        applied = [
            e
            for e in [db._events.get_nowait() for _ in range(db._events.qsize())]
            if isinstance(e, UpdateApplied)
        ]
        assert applied  # the batch arrived as updates
