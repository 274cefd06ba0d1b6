"""The multi-server launchers against real servers: a super-cluster of two regions joined by
gateways (broker-config/supercluster.conf) and a hub with device-local leaf
servers (hub.conf, leaf.conf).

One super-cluster (six servers, ~5 s to become ready on two cores) and one leaf topology serve
the module; tests that stop or cut something restore it before they end.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import nats
import nats.errors
import nats.js.errors
import pycrdt
import pytest
from nats.aio.client import Client
from nats.js.api import Placement

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import StreamNotFoundError, TransportError, WrongLastSequenceError
from secsync.servers.leaf import HUB_DOMAIN, HUB_NAME, LeafTopology
from secsync.servers.region import region_tag
from secsync.servers.supercluster import SuperCluster
from secsync.transport.jetstream import (
    StreamSettings,
    ensure_stream,
    last_message,
    messages_after,
    messages_scoped,
    publish,
)
from tests.factories import plain_yjs_doc
from tests.servers import nats_server_children, no_server_left_running  # noqa: F401

pytestmark = pytest.mark.slow

EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
MSG_ID = "Nats-Msg-Id"


# --- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def supercluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperCluster]:
    made = SuperCluster(tmp_path_factory.mktemp("supercluster"), partitionable=True)
    started = time.monotonic()
    made.start()
    print(f"\nsuper-cluster (2 x 3) ready in {time.monotonic() - started:.2f} s")
    pids = [node.pid for node in made.nodes]
    try:
        yield made
    finally:
        made.close()
        assert not any(node.running for node in made.nodes)
        assert not set(pids) & nats_server_children()


@pytest.fixture(scope="module")
def leaves(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeafTopology]:
    made = LeafTopology(tmp_path_factory.mktemp("leaf"), leaves=2)
    started = time.monotonic()
    made.start()
    print(f"\nhub and 2 leaves ready in {time.monotonic() - started:.2f} s")
    try:
        yield made
    finally:
        made.close()
        assert not any(server.running for server in made.servers)


async def _ignore_error(exc: Exception) -> None:
    """error_cb: keeps nats-py from printing tracebacks."""


@asynccontextmanager
async def connected(servers: str | list[str]) -> AsyncIterator[Client]:
    nc = await nats.connect(servers, error_cb=_ignore_error, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


def unique(prefix: str) -> tuple[str, str]:
    """A stream name and a subject root of its own."""
    tag = secrets.token_hex(4)
    return f"{prefix.upper()}{tag.upper()}", f"{prefix}{tag}"


# --- super-cluster ------------------------------------------------------------------------------


def test_supercluster_nodes_regions_and_tags(supercluster: SuperCluster) -> None:
    assert supercluster.running
    assert supercluster.region_names == ["a", "b"]
    assert [n.name for n in supercluster.nodes] == ["a1", "a2", "a3", "b1", "b2", "b3"]
    assert len(set(supercluster.urls)) == 6
    for name in ("a", "b"):
        region = supercluster.region(name)
        assert region.name == name
        assert region.tag == f"region:{name}"
        assert region.urls == supercluster.region_urls(name)
        assert [n.name for n in region.nodes] == [f"{name}{i}" for i in (1, 2, 3)]
        for node in supercluster.region_nodes(name):
            varz = node.monitor("varz")
            assert varz is not None
            assert varz["server_name"] == node.name
            assert varz["cluster"]["name"] == name
            assert varz["gateway"]["name"] == name
            assert varz["tags"] == [region_tag(name)]
    with pytest.raises(TransportError, match="no region"):
        supercluster.region("c")


async def test_supercluster_is_ready_with_gateways_both_ways(supercluster: SuperCluster) -> None:
    leader = await supercluster.await_ready()
    assert {node.meta_leader() for node in supercluster.nodes} == {leader}
    jsz = supercluster.node("b2").monitor("jsz")
    assert jsz is not None
    assert jsz["meta_cluster"]["cluster_size"] == 6  # one meta layer over both regions
    inbound = {"a": 0, "b": 0}
    for node in supercluster.nodes:
        seen = node.gateway_connections()
        assert seen is not None
        outbound, into = seen
        other = "b" if node.region == "a" else "a"
        assert outbound == {other}
        inbound[node.region] += into.get(other, 0)
    # every node dials one node of the other region: three connections arrive in each region
    assert inbound == {"a": 3, "b": 3}
    assert not supercluster.gateways_down()
    # the JetStream API answers through every node
    for node in supercluster.nodes:
        async with connected(node.url) as nc:
            info = await nc.jetstream().account_info()
            assert info.api.total >= 0


async def test_stream_placed_by_region_tag_lands_in_region_b(supercluster: SuperCluster) -> None:
    name, root = unique("placed")
    b_nodes = {node.name for node in supercluster.region_nodes("b")}
    # created and written from region a; stored in region b only
    async with connected(supercluster.region_urls("a")) as nc:
        js = nc.jetstream(timeout=10)
        info = await js.add_stream(
            name=name,
            subjects=[f"{root}.>"],
            num_replicas=3,
            placement=Placement(tags=[region_tag("b")]),
            allow_direct=True,
        )
        assert info.cluster is not None
        assert info.cluster.name == "b"
        leader = await supercluster.astream_leader(name)
        assert leader.region == "b"
        info = await js.stream_info(name)
        assert info.cluster is not None
        assert {info.cluster.leader, *(p.name for p in info.cluster.replicas or ())} == b_nodes
        assert await publish(js, f"{root}.d.upd", b"across the gateway") == (1, False)
        stored = await last_message(js, name, f"{root}.d.upd")
        assert stored is not None
        assert stored.data == b"across the gateway"
    # the region's own view agrees
    assert (await asyncio.to_thread(supercluster.region("b").stream_leader, name)).name == (
        leader.name
    )


async def test_secsync_client_provisions_its_stream_in_its_home_region(
    supercluster: SuperCluster,
) -> None:
    """SecsyncConfig.stream_placement_tags reaches the broker, and documents sync through a
    client in the other region."""
    name, _ = unique("home")
    config = SecsyncConfig(
        stream_name=name,
        subject_root=f"h{secrets.token_hex(3)}",
        stream_replicas=3,
        stream_placement_tags=(region_tag("a"),),
        batch_interval=0.005,
        publish_timeout=10.0,
        request_timeout=10.0,
    )
    key = secsync.generate_key()
    ydoc_a: pycrdt.Doc = plain_yjs_doc()
    ydoc_b: pycrdt.Doc = plain_yjs_doc()
    text_a = ydoc_a.get("text", type=pycrdt.Text)
    text_b = ydoc_b.get("text", type=pycrdt.Text)
    async with (
        secsync.connect(supercluster.region_urls("a"), config=config) as in_a,
        secsync.connect(supercluster.region_urls("b"), config=config) as in_b,
    ):
        leader = await supercluster.astream_leader(name)
        assert leader.region == "a"
        doc_a = await in_a.open(
            "doc", key=key, signing_key=secsync.SigningKeyPair.generate(), crdt=ydoc_a
        )
        doc_b = await in_b.open(
            "doc", key=key, signing_key=secsync.SigningKeyPair.generate(), crdt=ydoc_b
        )
        text_b.insert(0, "from region b")
        await doc_b.flush(20)
        async with asyncio.timeout(20):
            while str(text_a) != "from region b":
                await doc_a.next_event()
        await doc_a.close()
        await doc_b.close()


async def test_partition_cuts_the_gateway_and_heal_restores_it(
    supercluster: SuperCluster,
) -> None:
    stream_a, root_a = unique("parta")
    stream_b, root_b = unique("partb")
    async with (
        connected(supercluster.region_urls("a")) as nca,
        connected(supercluster.region_urls("b")) as ncb,
    ):
        jsa, jsb = nca.jetstream(timeout=10), ncb.jetstream(timeout=10)
        for js, stream, root, region in (
            (jsa, stream_a, root_a, "a"),
            (jsb, stream_b, root_b, "b"),
        ):
            await ensure_stream(
                js,
                StreamSettings(
                    name=stream,
                    subjects=(f"{root}.>",),
                    replicas=3,
                    placement_tags=(region_tag(region),),
                ),
            )
        assert await publish(jsb, f"{root_a}.x", b"before") == (1, False)

        started = time.monotonic()
        await supercluster.apartition()
        cut_after = time.monotonic() - started
        try:
            assert supercluster.partitioned
            assert supercluster.gateways_down()
            assert all(node.running for node in supercluster.nodes)
            # each region keeps writing to its own stream ...
            assert await publish(jsa, f"{root_a}.x", b"a during") == (2, False)
            assert await publish(jsb, f"{root_b}.x", b"b during") == (1, False)
            # ... while the other region's stream is out of reach at once: no interest in its
            # subjects on this side of the cut, so "no responders", not a timeout
            with pytest.raises(nats.js.errors.NoStreamResponseError):
                await jsb.publish(f"{root_a}.x", b"b to a", timeout=5)
            with pytest.raises(StreamNotFoundError):  # how secsync's transport reports it
                await publish(jsb, f"{root_a}.x", b"b to a")
        finally:
            started = time.monotonic()
            await supercluster.aheal()
            healed_after = time.monotonic() - started
        assert not supercluster.partitioned
        assert await publish(jsb, f"{root_a}.x", b"b after") == (3, False)
        assert await publish(jsa, f"{root_b}.x", b"a after") == (2, False)
    print(f"\ngateways down {cut_after:.2f} s after the cut, ready {healed_after:.2f} s after heal")


def test_partition_needs_a_partitionable_supercluster() -> None:
    made = SuperCluster()
    with pytest.raises(TransportError, match="partitionable=True"):
        made.partition()
    made.close()


async def test_kill_and_restart_one_node(supercluster: SuperCluster) -> None:
    # Not the meta leader: losing it would stall the JetStream API for an election (seconds).
    leader = await supercluster.ameta_leader(30)
    node = next(n for n in supercluster.region_nodes("a") if n.name != leader.name)
    old_pid, port = node.pid, node.port
    node.kill()
    try:
        assert not node.running
        assert old_pid not in nats_server_children()
        others = [n.url for n in supercluster.region_nodes("a") if n is not node]
        async with connected(others) as nc:  # the region still serves
            # A request may land while the meta layer notices the loss (the killed node's
            # connections and routes time out): ask again until answered, within a bound.
            js = nc.jetstream(timeout=5)
            async with asyncio.timeout(45):
                while True:
                    try:
                        info = await js.account_info()
                        break
                    except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
                        continue
            assert info.api.total >= 0
    finally:
        await node.arestart()
    assert node.pid not in (None, old_pid)
    assert node.port == port
    assert await supercluster.await_ready(60) in {n.name for n in supercluster.nodes}


async def test_stop_and_start_a_region(supercluster: SuperCluster) -> None:
    stream, root = unique("outage")
    async with connected(supercluster.region_urls("a")) as nc:
        js = nc.jetstream(timeout=10)
        await ensure_stream(
            js,
            StreamSettings(name=stream, subjects=(f"{root}.>",), replicas=3, placement_cluster="a"),
        )
        pids = [node.pid for node in supercluster.region_nodes("b")]
        await supercluster.astop_region("b")
        assert not any(node.running for node in supercluster.region_nodes("b"))
        assert not set(pids) & nats_server_children()
        # region a's stream takes writes without region b (and without a meta leader)
        assert await publish(js, f"{root}.x", b"while b is away") == (1, False)
        started = time.monotonic()
        await supercluster.astart_region("b")
        print(f"\nregion b back and super-cluster ready in {time.monotonic() - started:.2f} s")
    assert supercluster.running
    async with connected(supercluster.region_urls("b")) as nc:
        stored = await last_message(nc.jetstream(timeout=10), stream, f"{root}.x")
        assert stored is not None
        assert stored.data == b"while b is away"


# --- hub and leaves -----------------------------------------------------------------------------


def test_leaf_topology_servers_and_connections(leaves: LeafTopology) -> None:
    assert leaves.running
    assert [leaf.name for leaf in leaves.leaves] == ["leaf1", "leaf2"]
    assert leaves.leaf is leaves.leaves[0]
    assert leaves.leaf_url == leaves.leaves[0].url
    assert len({leaves.hub_url, *leaves.leaf_urls}) == 3
    assert leaves.node("hub") is leaves.hub
    assert leaves.node("leaf2") is leaves.leaves[1]
    assert leaves.hub.connected_leaves() == {"leaf1", "leaf2"}
    for leaf in leaves.leaves:
        assert leaf.hub_connections() == [HUB_NAME]
        assert leaf.remotes == [leaves.hub.leaf_url]
        varz = leaf.monitor("varz")
        assert varz is not None
        assert varz["server_name"] == leaf.name
        assert not varz.get("jetstream", {}).get("config")  # no JetStream on a leaf
        assert not list(leaf.store_dir.rglob("*.blk"))
    hub_varz = leaves.hub.monitor("varz")
    assert hub_varz is not None
    assert hub_varz["jetstream"]["config"]["domain"] == HUB_DOMAIN
    assert hub_varz["leaf"]["port"] == leaves.hub.leaf_port


async def test_jetstream_through_the_leaf_lands_in_the_hub(leaves: LeafTopology) -> None:
    name, root = unique("leafjs")
    subject = f"{root}.d.upd"
    async with connected(leaves.leaf_url) as on_leaf, connected(leaves.hub_url) as on_hub:
        js = on_leaf.jetstream(timeout=10)
        # stream creation, publishes with headers and compare-and-set, all decided at the hub
        await ensure_stream(js, StreamSettings(name=name, subjects=(f"{root}.>",)))
        assert await publish(js, subject, b"one", headers={MSG_ID: "m1"}) == (1, False)
        assert await publish(js, subject, b"one", headers={MSG_ID: "m1"}) == (1, True)
        assert await publish(js, subject, b"two", headers={EXPECTED_SEQ: "1"}) == (2, False)
        with pytest.raises(WrongLastSequenceError):
            await publish(js, subject, b"stale", headers={EXPECTED_SEQ: "1"})
        # reads through the leaf: direct get, batch direct get, a consumer
        last = await last_message(js, name, subject)
        assert last is not None
        assert (last.sequence, last.data, last.headers.get(EXPECTED_SEQ)) == (2, b"two", "1")
        assert [m.data for m in await messages_after(on_leaf, name, subject, 1)] == [
            b"one",
            b"two",
        ]
        assert [m.data for m in await messages_scoped(js, name, subject, 1)] == [b"one", b"two"]
        # the hub holds exactly that, in its own file store
        hub_js = on_hub.jetstream(timeout=10)
        info = await hub_js.stream_info(name)
        assert info.state.messages == 2
        stored = await hub_js.get_msg(name, seq=1)
        assert stored.data == b"one"
        assert stored.headers is not None
        assert stored.headers[MSG_ID] == "m1"
    assert list((leaves.hub.store_dir / "jetstream").rglob("*.blk"))


async def test_secsync_documents_sync_between_leaf_and_hub(leaves: LeafTopology) -> None:
    config = SecsyncConfig(
        stream_name=unique("leafdocs")[0], subject_root=f"l{secrets.token_hex(3)}"
    )
    key = secsync.generate_key()
    ydocs: list[pycrdt.Doc] = [plain_yjs_doc(), plain_yjs_doc()]
    texts = [ydoc.get("text", type=pycrdt.Text) for ydoc in ydocs]
    async with (
        secsync.connect(leaves.leaf_url, config=config) as device,
        secsync.connect(leaves.hub_url, config=config) as server_side,
    ):
        docs = [
            await client.open(
                "doc", key=key, signing_key=secsync.SigningKeyPair.generate(), crdt=ydoc
            )
            for client, ydoc in zip((device, server_side), ydocs, strict=True)
        ]
        texts[0].insert(0, "typed on the device")
        await docs[0].flush(10)
        async with asyncio.timeout(15):
            while str(texts[1]) != "typed on the device":
                await docs[1].next_event()
        texts[1].insert(0, "> ")
        await docs[1].flush(10)
        async with asyncio.timeout(15):
            while str(texts[0]) != "> typed on the device":
                await docs[0].next_event()
        for doc in docs:
            await doc.close()


async def test_hub_away_and_back(leaves: LeafTopology) -> None:
    name, root = unique("away")
    async with (
        connected(leaves.leaf_url) as first,
        connected(leaves.leaf_url) as second,
        connected(leaves.leaves[1].url) as other_leaf,
    ):
        js = first.jetstream(timeout=5)
        await ensure_stream(js, StreamSettings(name=name, subjects=(f"{root}.>",)))
        assert await publish(js, f"{root}.x", b"before") == (1, False)

        local = await second.subscribe(f"{root}.presence")
        remote = await other_leaf.subscribe(f"{root}.presence")
        await second.flush()
        await other_leaf.flush()

        hub_pid = leaves.hub.pid
        await leaves.astop_hub()
        try:
            assert not leaves.hub.running
            assert hub_pid not in nats_server_children()
            assert all(leaf.hub_connections() == [] for leaf in leaves.leaves)
            # JetStream requests fail at once: nothing on the leaf answers them
            started = time.monotonic()
            with pytest.raises(nats.errors.NoRespondersError):
                await first.request("$JS.API.INFO", b"", timeout=5)
            with pytest.raises(nats.js.errors.ServiceUnavailableError):
                await js.account_info()
            with pytest.raises(nats.js.errors.NoStreamResponseError):
                await js.publish(f"{root}.x", b"while away", timeout=5)
            with pytest.raises(StreamNotFoundError):  # secsync's transport reports it so
                await publish(js, f"{root}.x", b"while away")
            assert time.monotonic() - started < 4  # none of them waited for a timeout
            # core NATS between clients of one leaf (presence) keeps working
            await first.publish(f"{root}.presence", b"still here")
            assert (await local.next_msg(timeout=5)).data == b"still here"
            # ... but not to another device's leaf, which is reached through the hub
            with pytest.raises(nats.errors.TimeoutError):
                await remote.next_msg(timeout=0.3)
        finally:
            started = time.monotonic()
            await leaves.astart_hub()
            back_after = time.monotonic() - started
        assert leaves.hub.connected_leaves() == {"leaf1", "leaf2"}
        assert await publish(js, f"{root}.x", b"after") == (2, False)
        last = await last_message(js, name, f"{root}.x")
        assert last is not None
        assert last.data == b"after"
        # the other leaf's interest reaches this one through the hub a moment after both
        # reconnected: publish until it arrives
        async with asyncio.timeout(10):
            while True:
                await first.publish(f"{root}.presence", b"through the hub")
                try:
                    received = await remote.next_msg(timeout=0.1)
                except nats.errors.TimeoutError:
                    continue
                break
        assert received.data == b"through the hub"
    print(f"\nhub back and JetStream answering through the leaves {back_after:.2f} s after start")
