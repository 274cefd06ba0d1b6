"""Documents across a NATS federation: a super-cluster of two regions joined by gateways, and a
device-local leaf server in front of a hub (secsync.servers.supercluster, secsync.servers.leaf,
broker-config/supercluster.conf, hub.conf, leaf.conf).

The document's stream lives in one home region (placement by tag, R3 there); clients connect to
the servers of their own region. A partition cuts every gateway while all servers keep running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import secsync
from secsync.config import SecsyncConfig
from secsync.errors import BrokerRequestError, BrokerUnavailableError
from secsync.protocol.events import Event, SnapshotStored, UpdateStored
from secsync.servers.leaf import LeafTopology
from secsync.servers.region import region_tag
from secsync.servers.supercluster import SuperCluster
from secsync.transport import Document, jetstream
from tests.transport.helpers import YClient, open_y, until

HOME = "b"  # the documents' home region
AWAY = "a"
THIRD = "c"  # holds no document; its servers count in the meta layer's majority

# Home region b, three replicas there. Short retries: a partition is healed within seconds here.
HOMED_IN_B = SecsyncConfig(
    stream_name="FEDERATED",
    subject_root="fed",
    stream_replicas=3,
    stream_placement_tags=(region_tag(HOME),),
    batch_interval=0.0,
    retry_max=1.0,
    publish_timeout=2.0,
    request_timeout=2.0,
    idle_heartbeat=0.5,
)


@pytest.fixture(scope="module")
def supercluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperCluster]:
    made = SuperCluster(
        tmp_path_factory.mktemp("supercluster"), regions=(AWAY, HOME, THIRD), partitionable=True
    )
    started = time.monotonic()
    made.start()
    print(f"\nsuper-cluster (3 regions x 3) ready in {time.monotonic() - started:.2f} s")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def region_clients(
    supercluster: SuperCluster,
) -> AsyncIterator[tuple[secsync.SecsyncClient, secsync.SecsyncClient]]:
    await supercluster.await_ready()
    away = await secsync.connect(supercluster.region_urls(AWAY), config=HOMED_IN_B)
    home = await secsync.connect(supercluster.region_urls(HOME), config=HOMED_IN_B)
    try:
        yield away, home
    finally:
        await away.close()
        await home.close()


async def edit(doc: Document, who: YClient, text: str, *, timeout: float = 20.0) -> None:
    who.text.insert(len(who.text), text)
    await doc.flush(timeout=timeout)


async def test_stream_is_placed_in_its_home_region_and_both_regions_converge(
    supercluster: SuperCluster,
    region_clients: tuple[secsync.SecsyncClient, secsync.SecsyncClient],
) -> None:
    away_client, home_client = region_clients
    info = await home_client.js.stream_info(HOMED_IN_B.stream_name)
    assert info.cluster is not None and info.cluster.name == HOME
    replicas = {info.cluster.leader, *(r.name for r in info.cluster.replicas or [])}
    assert replicas == {node.name for node in supercluster.region_nodes(HOME)}

    alice, bob = YClient(), YClient()
    doc_a = await open_y(away_client, "federated-converge", alice)
    doc_b = await open_y(home_client, "federated-converge", bob)
    for i in range(5):
        await edit(doc_a, alice, f"a{i} ")
        await edit(doc_b, bob, f"b{i} ")
    await until([doc_a, doc_b], lambda: alice.content == bob.content and len(bob.content) == 30)
    assert sorted(alice.content.split()) == sorted(
        [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]
    )
    await doc_a.close()
    await doc_b.close()


async def test_partition_then_heal_converges(
    supercluster: SuperCluster,
    region_clients: tuple[secsync.SecsyncClient, secsync.SecsyncClient],
) -> None:
    away_client, home_client = region_clients
    alice, bob = YClient(), YClient()
    doc_a = await open_y(away_client, "federated-partition", alice)
    doc_b = await open_y(home_client, "federated-partition", bob)
    await edit(doc_a, alice, "before ")
    await until([doc_a, doc_b], lambda: bob.content == "before ")

    await supercluster.apartition()
    try:
        # The home region keeps its stream: edits there are stored while the regions are apart.
        await edit(doc_b, bob, "home-during ")
        # The away region cannot reach the stream: its edits wait, unacknowledged.
        alice.text.insert(len(alice.text), "away-during ")
        with pytest.raises(TimeoutError):
            await doc_a.flush(timeout=3.0)
        assert doc_a.unacknowledged + doc_a.pending_changes > 0
        assert "away-during" not in bob.content
    finally:
        healing = time.monotonic()
        await supercluster.aheal()
    healed = time.monotonic() - healing

    await doc_a.flush(timeout=60)
    expected = {"before", "home-during", "away-during"}
    await until(
        [doc_a, doc_b],
        lambda: alice.content == bob.content and set(bob.content.split()) == expected,
        timeout=60,
    )
    print(
        f"\npartition healed in {healed:.2f} s; both regions agree "
        f"{time.monotonic() - healing:.2f} s after the gateways were let through"
    )
    # and they keep working together afterwards
    await edit(doc_a, alice, "after ")
    await until([doc_a, doc_b], lambda: alice.content == bob.content and "after" in bob.content)
    await doc_a.close()
    await doc_b.close()


async def test_away_region_reads_from_a_local_mirror_and_writes_to_the_home_stream(
    supercluster: SuperCluster,
    region_clients: tuple[secsync.SecsyncClient, secsync.SecsyncClient],
) -> None:
    away_client, home_client = region_clients
    mirror = "FEDERATED_MIRROR_A"
    await jetstream.ensure_mirror(
        away_client.js, mirror, HOMED_IN_B.stream_name, placement_tags=[region_tag(AWAY)]
    )
    await jetstream.ensure_mirror(  # idempotent
        away_client.js, mirror, HOMED_IN_B.stream_name, placement_tags=[region_tag(AWAY)]
    )
    info = await away_client.js.stream_info(mirror)
    assert info.cluster is not None and info.cluster.name == AWAY

    alice, bob = YClient(), YClient()
    doc_b = await open_y(home_client, "federated-mirror", bob)
    await edit(doc_b, bob, "written-in-b ")
    reading_near = dataclasses.replace(HOMED_IN_B, read_stream=mirror)
    async with secsync.connect(supercluster.region_urls(AWAY), config=reading_near) as near:
        doc_a = await open_y(near, "federated-mirror", alice)
        await until(doc_a, lambda: alice.content == "written-in-b ")
        # the live consumer of the away client is on the mirror, not on the home stream
        assert (await near.js.stream_info(mirror)).state.consumer_count == 1
        await edit(doc_a, alice, "written-in-a ")  # stored in the home stream
        await until(doc_b, lambda: bob.content == "written-in-b written-in-a ")
        await edit(doc_b, bob, "again-b ")
        await until(doc_a, lambda: alice.content == bob.content)
        assert alice.content == "written-in-b written-in-a again-b "
        # the mirror holds the home stream's messages at the home stream's sequences
        home_info = await home_client.js.stream_info(HOMED_IN_B.stream_name)
        subject = doc_b.subjects.update
        last_home = await jetstream.last_message(home_client.js, HOMED_IN_B.stream_name, subject)
        assert last_home is not None and last_home.sequence <= home_info.state.last_seq
        last_mirror = await jetstream.last_message(near.js, mirror, subject)
        assert last_mirror is not None
        assert (last_mirror.sequence, last_mirror.data) == (last_home.sequence, last_home.data)
        await doc_a.close()
    with pytest.raises(BrokerRequestError):
        await jetstream.ensure_mirror(away_client.js, HOMED_IN_B.stream_name, mirror)
    await doc_b.close()


async def open_eventually(
    client: secsync.SecsyncClient, doc_id: str, who: YClient, within: float = 30.0
) -> Document:
    """Open, asking again while the meta layer elects a leader (a few seconds at most)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await open_y(client, doc_id, who)
        except BrokerUnavailableError:
            if time.monotonic() > deadline:
                raise


async def test_region_outages_and_the_meta_layer_majority(
    supercluster: SuperCluster,
    region_clients: tuple[secsync.SecsyncClient, secsync.SecsyncClient],
) -> None:
    """The meta layer spans all nine servers: opening a document (which creates consumers)
    needs five of them. One region down leaves six; two regions down leave three."""
    _, home_client = region_clients
    bob = YClient()
    doc_b = await open_y(home_client, "federated-outage", bob)
    await edit(doc_b, bob, "one ")
    try:
        await supercluster.astop_region(AWAY)
        carol = YClient()
        async with secsync.connect(supercluster.region_urls(HOME), config=HOMED_IN_B) as other:
            # 6 of 9 servers: opens (once the meta layer re-elected, if its leader was in a)
            doc_c = await open_eventually(other, "federated-outage", carol)
            assert carol.content == "one "
            await edit(doc_c, carol, "two ")
            await until(doc_b, lambda: bob.content == "one two ")
            await doc_c.close()

        await supercluster.astop_region(THIRD)  # 3 of 9: no majority for new consumers
        with pytest.raises(BrokerUnavailableError):
            async with secsync.connect(supercluster.region_urls(HOME), config=HOMED_IN_B) as c:
                await open_y(c, "federated-outage", YClient())
        await edit(doc_b, bob, "three ")  # an open document still stores its edits at home
    finally:
        await supercluster.astart_region(THIRD)
        await supercluster.astart_region(AWAY)
    dave = YClient()
    async with secsync.connect(supercluster.region_urls(HOME), config=HOMED_IN_B) as later:
        doc_d = await open_eventually(later, "federated-outage", dave)
        assert dave.content == "one two three "
        await doc_d.close()
    await doc_b.close()


# --- two regions: leader loss, then a partition, with writers on both sides ----------------------

# Each run starts its own 2x3 super-cluster; SECSYNC_FEDERATION_RUNS=N repeats it N times.
FEDERATION_RUNS = range(int(os.environ.get("SECSYNC_FEDERATION_RUNS", "1")))
TYPING_PACE = 0.01  # seconds between two tokens of one writer: a fast typist, not a wait
CUT = 5.0  # seconds the gateways stay cut
CONVERGE_BOUND = 30.0  # seconds from letting the gateways through until both sides agree


@dataclasses.dataclass
class Writer:
    """A participant typing numbered tokens, and a record of its document's events."""

    name: str
    who: YClient
    doc: Document
    typed: list[str] = dataclasses.field(default_factory=list)
    events: list[tuple[float, Event]] = dataclasses.field(default_factory=list)
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def record(self) -> None:
        async for event in self.doc.events():
            self.events.append((time.monotonic(), event))
            self.changed.set()

    async def type(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            token = f"{self.name}{len(self.typed)}"
            self.who.text.insert(len(self.who.text), f" {token}")
            self.typed.append(token)
            await asyncio.sleep(TYPING_PACE)

    def first_stored_after(self, moment: float, clock: int, snapshot: bytes | None) -> float | None:
        """When the first update sealed after ``moment`` (above ``clock`` on ``snapshot``, or
        on a newer snapshot) was acknowledged."""
        for at, event in self.events:
            if at > moment and isinstance(event, UpdateStored | SnapshotStored):
                if isinstance(event, SnapshotStored) or event.snapshot_id != snapshot:
                    return at
                if event.clock > clock:
                    return at
        return None


async def wait_for(writers: list[Writer], predicate: Callable[[], bool], timeout: float) -> None:
    """Wait until ``predicate`` holds, re-checking after each event of any writer."""
    async with asyncio.timeout(timeout):
        while not predicate():
            for w in writers:
                w.changed.clear()
            if predicate():
                return
            waits = [asyncio.ensure_future(w.changed.wait()) for w in writers]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()


@pytest.mark.parametrize("run", FEDERATION_RUNS)
async def test_leader_kill_then_partition_loses_no_acknowledged_token(
    tmp_path: Path, run: int
) -> None:
    """Two regions of three; the document's R3 stream lives in b. Writers in a and b type
    throughout: the stream leader is SIGKILLed and restarted, then the gateways are cut for
    5 s. Every acknowledged token is then present exactly once for a fresh reader, and both
    writers converge within CONVERGE_BOUND of the heal. Default configuration but for the
    stream's placement."""
    config = SecsyncConfig(
        stream_name="TWOREGIONS",
        subject_root="two",
        stream_replicas=3,
        stream_placement_tags=(region_tag(HOME),),
    )
    doc_id = f"two-regions-{run}"
    async with SuperCluster(tmp_path / "sc", regions=(AWAY, HOME), partitionable=True) as sc:
        await sc.await_ready()
        away = await secsync.connect(sc.region_urls(AWAY), config=config)
        home = await secsync.connect(sc.region_urls(HOME), config=config)
        tasks: list[asyncio.Task[None]] = []
        try:
            writers = []
            for name, client in (("a", away), ("b", home)):
                who = YClient()
                writers.append(Writer(name, who, await open_y(client, doc_id, who)))
            tasks += [asyncio.create_task(w.record()) for w in writers]
            stop = asyncio.Event()
            tasks += [asyncio.create_task(w.type(stop)) for w in writers]
            alice, bob = writers
            await wait_for(writers, lambda: "a20" in bob.who.content, timeout=30)

            # 1. the stream leader dies and comes back
            leader = await sc.astream_leader(config.stream_name)
            marks = [(w.doc.session._local_clock, w.doc.session.active_snapshot) for w in writers]
            killed = time.monotonic()
            leader.kill()

            def resumed() -> bool:
                return all(
                    w.first_stored_after(killed, clock, s.snapshot_id if s else None) is not None
                    for w, (clock, s) in zip(writers, marks, strict=True)
                )

            await wait_for(writers, resumed, timeout=60)
            first_writes = [
                w.first_stored_after(killed, clock, s.snapshot_id if s else None)
                for w, (clock, s) in zip(writers, marks, strict=True)
            ]
            await leader.arestart()
            await sc.await_ready(60)

            # 2. the gateways are cut for CUT seconds while both keep typing
            await sc.apartition()
            cut_at = time.monotonic()
            await asyncio.sleep(CUT)  # the outage lasts this long; nothing is awaited here
            healing = time.monotonic()
            await sc.aheal()  # gateways let through; returns once a meta leader is elected
            healed = time.monotonic()
            # typing goes on a little after the heal: a few more tokens from each writer
            typed_at_heal = [len(w.typed) for w in writers]
            async with asyncio.timeout(CONVERGE_BOUND):
                pairs = list(zip(writers, typed_at_heal, strict=True))
                while any(len(w.typed) < n + 5 for w, n in pairs):
                    await asyncio.sleep(0.01)
            stop.set()
            for w in writers:
                await w.doc.flush(timeout=CONVERGE_BOUND - (time.monotonic() - healing))
            acknowledged = [t for w in writers for t in w.typed]

            def converged() -> bool:
                return alice.who.content == bob.who.content and set(bob.who.content.split()) >= set(
                    acknowledged
                )

            await wait_for(
                writers, converged, timeout=max(0.0, CONVERGE_BOUND - (time.monotonic() - healing))
            )
            converged_after = time.monotonic() - healing

            reader = YClient()
            async with secsync.connect(sc.region_urls(HOME), config=config) as later:
                fresh = await open_y(later, doc_id, reader)
                present = Counter(reader.content.split())
                await fresh.close()
            lost = [t for t in acknowledged if present[t] == 0]
            doubled = [t for t in acknowledged if present[t] > 1]
            print(
                f"\nrun {run}: acknowledged {len(acknowledged)} "
                f"(a {len(alice.typed)}, b {len(bob.typed)}), "
                f"present {len(acknowledged) - len(lost)}, lost {len(lost)}, "
                f"doubled {len(doubled)}; first acknowledged write after the leader kill "
                f"a {first_writes[0] - killed:.2f} s, b {first_writes[1] - killed:.2f} s; "
                f"gateways cut {healing - cut_at:.2f} s; after they were let through: meta "
                f"leader back {healed - healing:.2f} s, everything acknowledged and both "
                f"writers converged {converged_after:.2f} s"
            )
            assert converged_after <= CONVERGE_BOUND
            assert lost == [] and doubled == []
            assert sorted(present) == sorted(acknowledged)
            assert alice.who.content == bob.who.content == reader.content
        finally:
            for task in tasks:
                task.cancel()
            await away.close()
            await home.close()


# --- leaf node: a device-local server in front of the hub -----------------------------------------


@pytest.fixture(scope="module")
def leaf_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeafTopology]:
    made = LeafTopology(tmp_path_factory.mktemp("leaf"))
    made.start()
    try:
        yield made
    finally:
        made.close()


async def test_offline_edits_on_a_leaf_reach_the_hub_when_it_returns(
    leaf_topology: LeafTopology, tmp_path: Path
) -> None:
    config = SecsyncConfig(
        batch_interval=0.0, retry_max=0.5, publish_timeout=2.0, request_timeout=2.0
    )
    device_config = SecsyncConfig(
        batch_interval=0.0,
        retry_max=0.5,
        publish_timeout=2.0,
        request_timeout=2.0,
        idle_heartbeat=0.5,
        store_path=str(tmp_path / "device.sqlite"),
    )
    hub_user, device_user = YClient(), YClient()
    hub_client = await secsync.connect(leaf_topology.hub_url, config=config)
    device_client = await secsync.connect(leaf_topology.leaf_url, config=device_config)
    try:
        on_hub = await open_y(hub_client, "leaf-doc", hub_user)
        on_device = await open_y(device_client, "leaf-doc", device_user)
        await edit(on_device, device_user, "online ")
        await until([on_hub, on_device], lambda: hub_user.content == "online ")

        await leaf_topology.astop_hub()
        for word in ("offline-1 ", "offline-2 ", "offline-3 "):
            device_user.text.insert(len(device_user.text), word)
        with pytest.raises(TimeoutError):
            await on_device.flush(timeout=2.0)
        assert on_device.pending_changes + on_device.unacknowledged > 0

        returned = time.monotonic()
        await leaf_topology.astart_hub()
        await on_device.flush(timeout=60)
        expected = "online offline-1 offline-2 offline-3 "
        await until([on_hub, on_device], lambda: hub_user.content == expected, timeout=60)
        print(
            f"\noffline edits reached the hub {time.monotonic() - returned:.2f} s after it started"
        )
        assert device_user.content == expected
        # the hub's side writes back through the leaf as well
        await edit(on_hub, hub_user, "hub ")
        await until([on_hub, on_device], lambda: device_user.content == expected + "hub ")
    finally:
        await device_client.close()
        await hub_client.close()
