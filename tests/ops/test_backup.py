"""Backup and restore procedures, each run end to end against real nats-servers.

What clients remember is stream sequences (the last applied one, the sequence of a document's
snapshot, which updates compare-and-set against), so every procedure is checked for keeping
them, for the document content, and for clients editing on afterwards. See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext, api

import secsync
from secsync.cli.operations import main as operations_main
from secsync.config import SecsyncConfig
from secsync.ops.backup import DATA_FILE, backup_stream, restore_stream
from secsync.ops.mirrors import promote_mirror
from secsync.servers.binary import default_config_path, free_port
from secsync.servers.broker import Broker
from secsync.servers.cluster import Cluster
from secsync.transport import Document, jetstream
from secsync.transport.compaction import compact_document
from secsync.transport.events import DocumentLoaded, DocumentRestored
from tests.transport.helpers import YClient, open_y, until

DOC = "operations-doc"
STREAM = "SECSYNC"


def config(store: Path | None = None) -> SecsyncConfig:
    return SecsyncConfig(
        store_path=str(store) if store else None,
        batch_interval=0.002,
        publish_timeout=1.0,
        request_timeout=1.0,
        retry_initial=0.05,
        retry_max=0.3,
        idle_heartbeat=0.25,  # live consumers lost with a server are re-created sooner
    )


async def stream_state(url: str) -> api.StreamState:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(STREAM)).state
    finally:
        await nc.close()


def positions(state: api.StreamState) -> tuple[int, int, int, int]:
    return state.first_seq, state.last_seq, state.messages, state.bytes


def same_signer(who: YClient) -> YClient:
    """The same participant with an empty document, as after a process restart."""
    return YClient(who.signer)


async def edit(doc: Document, who: YClient, text: str) -> None:
    who.text.insert(len(who.text), text)
    await doc.flush(15)


async def test_copy_of_a_stopped_servers_store_keeps_sequences_and_local_stores_resume(
    tmp_path: Path,
) -> None:
    """Offline backup: stop the server, copy its JetStream directory, start a server on it."""
    alice, bob = YClient(), YClient()
    store = tmp_path / "alice.db"
    with Broker(tmp_path / "original") as original:
        async with (
            secsync.connect(original.url, config=config(store)) as client,
            secsync.connect(original.url, config=config()) as other,
        ):
            doc = await open_y(client, DOC, alice)
            await edit(doc, alice, "written before the backup")
            bdoc = await open_y(other, DOC, bob)
            await edit(bdoc, bob, ", and by bob")
            await until(doc, lambda: alice.content == bob.content)
            applied = doc.last_sequence
        before = await stream_state(original.url)
        original.stop()
        shutil.copytree(original.store_dir / "jetstream", tmp_path / "copy" / "jetstream")

    # Alice restarts while the restored server is not up yet: she works from her store.
    port, http_port = free_port(), free_port()
    url = f"nats://127.0.0.1:{port}"
    alice = same_signer(alice)
    async with secsync.connect(url, config=config(store)) as client:
        doc = await open_y(client, DOC, alice)
        loaded = await doc.next_event(5)
        while not isinstance(loaded, DocumentLoaded | DocumentRestored):
            loaded = await doc.next_event(5)
        assert isinstance(loaded, DocumentRestored)
        assert doc.last_sequence == applied
        alice.text.insert(len(alice.text), "; written offline")
        doc.notify_changed()
        with Broker(tmp_path / "copy", port=port, http_port=http_port) as restored:
            assert positions(await stream_state(restored.url)) == positions(before)
            await doc.flush(15)  # the offline edit goes out once the client connects
            after = await stream_state(restored.url)
            assert after.first_seq == before.first_seq
            assert after.last_seq > before.last_seq
            async with secsync.connect(restored.url, config=config()) as third:
                carol = YClient()
                cdoc = await open_y(third, DOC, carol)
                assert carol.content == alice.content
                assert carol.content == "written before the backup, and by bob; written offline"
                await edit(cdoc, carol, " (carol)")
                await until(doc, lambda: alice.content == carol.content)
                await edit(doc, alice, " (alice again)")
                await until(cdoc, lambda: carol.content == alice.content)


async def test_online_backup_restored_on_a_replacement_server(tmp_path: Path) -> None:
    """Online backup by the snapshot API while clients stay connected; the server is lost and
    a replacement at the same address gets the backup; running clients carry on."""
    alice, bob = YClient(), YClient()
    original = Broker(tmp_path / "original").start()
    port, http_port = original.port, original.http_port
    try:
        async with (
            secsync.connect(original.url, config=config(tmp_path / "alice.db")) as client,
            secsync.connect(original.url, config=config()) as other,
        ):
            doc = await open_y(client, DOC, alice)
            bdoc = await open_y(other, DOC, bob)
            await edit(doc, alice, "alice")
            await until(bdoc, lambda: bob.content == "alice")
            await edit(bdoc, bob, " and bob")
            await until([doc, bdoc], lambda: alice.content == bob.content == "alice and bob")

            nc = await nats.connect(original.url)
            try:
                backup = await backup_stream(nc, tmp_path / "backup")
            finally:
                await nc.close()
            state = await stream_state(original.url)
            assert backup.state["last_seq"] == state.last_seq == doc.last_sequence
            assert backup.state["messages"] == state.messages
            assert (tmp_path / "backup" / DATA_FILE).stat().st_size > 0

            original.kill()  # the machine is gone
            with Broker(tmp_path / "replacement", port=port, http_port=http_port) as new:
                # restore before anyone provisions an empty stream (running clients do not)
                code = await asyncio.to_thread(
                    operations_main, ["restore", "--server", new.url, str(tmp_path / "backup")]
                )
                assert code == 0
                assert positions(await stream_state(new.url)) == positions(state)

                await edit(doc, alice, ", restored")
                await until(bdoc, lambda: bob.content == "alice and bob, restored")
                await edit(bdoc, bob, ", edited on")
                await until(doc, lambda: alice.content == bob.content)
                async with secsync.connect(new.url, config=config()) as third:
                    carol = YClient()
                    await open_y(third, DOC, carol)
                    assert carol.content == alice.content == "alice and bob, restored, edited on"
    finally:
        original.close()


@pytest.mark.parametrize("alice", ["online", "restarted"])
async def test_restoring_an_older_backup_is_detected_and_nothing_is_lost(
    tmp_path: Path, alice: str
) -> None:
    """A point-in-time restore rolls the stream back, and new writes take sequences that
    clients which saw the lost writes have already applied. A client notices that the stream
    no longer holds what it applied (when it reconnects, or opens from its local store after
    others wrote there), starts over from what the stream holds and sends again what the
    restore lost of its own."""
    writer, bob = YClient(), YClient()
    store = tmp_path / "alice.db"
    original = Broker(tmp_path / "original").start()
    port, http_port = original.port, original.http_port
    try:
        client = await secsync.connect(original.url, config=config(store))
        doc = await open_y(client, DOC, writer)
        await edit(doc, writer, "in the backup")
        nc = await nats.connect(original.url)
        try:
            backup = await backup_stream(nc, tmp_path / "backup")
        finally:
            await nc.close()
        await edit(doc, writer, "; acknowledged after the backup")
        seen_by_alice = doc.last_sequence
        if alice == "restarted":
            await client.close()  # her checkpoint keeps what she applied last
        original.kill()
        with Broker(tmp_path / "replacement", port=port, http_port=http_port) as new:
            if alice == "online":
                # she is back before the restore: the stream is missing for a moment, and her
                # check has to wait for it
                async with asyncio.timeout(30):
                    while client.nc.stats["reconnects"] < 1 or not client.nc.is_connected:
                        await asyncio.sleep(0.02)
            nc = await nats.connect(new.url)
            try:
                restored = await restore_stream(nc, tmp_path / "backup")
            finally:
                await nc.close()
            assert restored["last_seq"] == backup.state["last_seq"] < seen_by_alice
            async with secsync.connect(new.url, config=config()) as other:
                bdoc = await open_y(other, DOC, bob)
                if alice == "restarted":
                    assert bob.content == "in the backup"  # the acknowledged edit is gone
                else:
                    # gone from the stream (above); Alice, online, may have noticed and sent it
                    # again before Bob opened
                    assert bob.content in (
                        "in the backup",
                        "in the backup; acknowledged after the backup",
                    )
                await edit(bdoc, bob, " (bob)")
                if alice == "restarted":
                    assert bdoc.last_sequence == seen_by_alice  # a sequence Alice applied
                    writer = same_signer(writer)
                    client = await secsync.connect(new.url, config=config(store))
                    doc = await open_y(client, DOC, writer)
                # Alice's client notices, starts over, and sends her lost edit again.
                await until(
                    [doc, bdoc],
                    lambda: (
                        writer.content == bob.content
                        and "; acknowledged after the backup" in bob.content
                        and " (bob)" in writer.content
                    ),
                    timeout=30,
                )
                await edit(doc, writer, ", alice again")
                await until(bdoc, lambda: bob.content == writer.content)
        await client.close()
    finally:
        original.close()


def standby_configs(tmp_path: Path) -> tuple[Path, Path]:
    """single.conf plus a JetStream domain each, joined by a leaf node connection."""
    single = default_config_path().read_text(encoding="utf-8")
    leaf_port = free_port()
    primary = single.replace("jetstream {", "jetstream {\n  domain: primary", 1)
    primary += f"\nleafnodes {{\n  host: 127.0.0.1\n  port: {leaf_port}\n}}\n"
    standby = single.replace("jetstream {", "jetstream {\n  domain: standby", 1)
    standby = standby.replace("server_name: secsync-broker", "server_name: secsync-standby")
    standby += f'\nleafnodes {{\n  remotes: [{{ url: "nats-leaf://127.0.0.1:{leaf_port}" }}]\n}}\n'
    paths = tmp_path / "primary.conf", tmp_path / "standby.conf"
    paths[0].write_text(primary, encoding="utf-8")
    paths[1].write_text(standby, encoding="utf-8")
    return paths


async def wait_mirrored(js: JetStreamContext, last_seq: int) -> api.StreamState:
    """Poll the mirror until it holds ``last_seq`` (a mirror announces nothing)."""
    async with asyncio.timeout(10):
        while True:
            state: api.StreamState = (await js.stream_info(STREAM)).state
            if state.last_seq >= last_seq:
                return state
            await asyncio.sleep(0.02)


async def test_mirror_on_a_standby_server_is_promoted_with_its_sequences(tmp_path: Path) -> None:
    """Online standby: a mirror in another server's JetStream domain, over a leaf node; the
    primary is lost, the mirror is promoted, clients move to the standby."""
    primary_conf, standby_conf = standby_configs(tmp_path)
    alice = YClient()
    store = tmp_path / "alice.db"
    with (
        Broker(tmp_path / "primary", config=primary_conf) as primary,
        Broker(tmp_path / "standby", config=standby_conf) as standby,
    ):
        nc = await nats.connect(standby.url)
        try:
            js = nc.jetstream()
            async with secsync.connect(primary.url, config=config(store)) as client:
                doc = await open_y(client, DOC, alice)
                await edit(doc, alice, "first")
                source = api.StreamSource(
                    name=STREAM, external=api.ExternalStream(api="$JS.primary.API")
                )
                await js.add_stream(
                    api.StreamConfig(name=STREAM, storage=api.StorageType.FILE, mirror=source)
                )
                # a client pointed at the standby cannot turn the mirror into a stream
                try:
                    await secsync.connect(standby.url, config=config())
                except secsync.SecsyncError as exc:
                    assert "mirror" in str(exc)
                else:
                    raise AssertionError("provisioning on the standby succeeded")

                await edit(doc, alice, ", second")
                doc.write_snapshot()
                await doc.flush(15)
                await wait_mirrored(js, doc.last_sequence)
                # compaction on the primary is not mirrored: the mirror keeps what it purged
                compacted = await compact_document(client.nc, DOC)
                assert compacted.purged > 0
                await edit(doc, alice, ", third")
                primary_state = await stream_state(primary.url)
                mirrored = await wait_mirrored(js, primary_state.last_seq)
                assert mirrored.last_seq == primary_state.last_seq == doc.last_sequence
                assert mirrored.messages == primary_state.messages + compacted.purged

            primary.kill()
            await promote_mirror(js, jetstream.StreamSettings())
            info = await js.stream_info(STREAM)
            assert info.config.mirror is None and info.config.subjects == ["secsync.s.>"]
            assert info.state.last_seq == primary_state.last_seq

            alice = same_signer(alice)
            async with (
                secsync.connect(standby.url, config=config(store)) as client,
                secsync.connect(standby.url, config=config()) as other,
            ):
                doc = await open_y(client, DOC, alice)
                assert alice.content == "first, second, third"
                await edit(doc, alice, ", fourth")
                assert doc.last_sequence == primary_state.last_seq + 1
                bob = YClient()
                bdoc = await open_y(other, DOC, bob)
                assert bob.content == "first, second, third, fourth"
                await edit(bdoc, bob, ", fifth")
                await until(doc, lambda: alice.content == bob.content)
        finally:
            await nc.close()


async def replicas_current(cluster: Cluster, stream: str) -> None:
    """Poll the stream leader's /jsz until both followers report themselves current."""
    async with asyncio.timeout(20):
        while True:
            leader = await cluster.astream_leader(stream)
            jsz = await asyncio.to_thread(leader.monitor, "jsz", streams="true")
            details = [
                detail
                for account in (jsz or {}).get("account_details", [])
                for detail in account.get("stream_detail", [])
                if detail.get("name") == stream
            ]
            replicas = details[0].get("cluster", {}).get("replicas", []) if details else []
            if len(replicas) == 2 and all(replica.get("current") for replica in replicas):
                return
            await asyncio.sleep(0.05)


async def test_rolling_restart_step_keeps_documents_writable(tmp_path: Path) -> None:
    """One step of a rolling upgrade of the 3-node cluster (R3): stop the stream leader
    gracefully, keep editing, start it again, wait until its replica is current."""
    r3 = dataclasses.replace(config(), stream_replicas=3)
    alice, bob = YClient(), YClient()
    async with Cluster(tmp_path / "cluster") as cluster:
        urls = cluster.urls
        async with (
            secsync.connect(urls, config=r3) as client,
            secsync.connect(urls[::-1], config=r3) as other,
        ):
            doc = await open_y(client, DOC, alice)
            await edit(doc, alice, "before")
            bdoc = await open_y(other, DOC, bob)
            assert bob.content == "before"

            leader = await cluster.astream_leader(STREAM)
            stopped = time.monotonic()
            await leader.astop()  # SIGTERM: the node hands its leaderships over and exits
            await edit(doc, alice, f", while {leader.name} was down")
            stored_after = time.monotonic() - stopped
            successor = await cluster.astream_leader(STREAM)
            assert successor.name != leader.name
            await leader.astart()
            await cluster.await_ready()
            await replicas_current(cluster, STREAM)
            back_after = time.monotonic() - stopped

            await edit(bdoc, bob, ", after")
            await until(doc, lambda: alice.content == bob.content)
            assert alice.content == f"before, while {leader.name} was down, after"
            print(
                f"\nstream leader {leader.name} stopped: an edit stored after "
                f"{stored_after:.2f} s; the node back and current after {back_after:.2f} s"
            )
