"""A super-cluster on loopback (:class:`SuperCluster`): several regions (default ``a`` and
``b``), each a 3-node JetStream cluster (:class:`~secsync.servers.region.Region`), joined by
gateways, every server tagged ``region:<name>`` (``broker-config/supercluster.conf``). Ready
when every node is healthy, all name one meta leader, routes and gateways are connected both
ways (``/routez``, ``/gatewayz``) and the JetStream API answers through every node. Ports are
chosen free at the first start and kept.

Cutting the link between regions: with ``SuperCluster(partitionable=True)`` every gateway is
reached through a TCP relay in this process (:class:`~secsync.servers.relay.GatewayRelay`; each
server advertises its relay's address, so the gossiped gateway URLs lead there as well).
:meth:`SuperCluster.partition` drops every gateway connection and refuses new ones while all
servers keep running and keep their clients; :meth:`SuperCluster.heal` lets them in again, and
the servers reconnect on their own (explicit gateways are retried once a second). nats-server
cannot drop a gateway by itself (gateways cannot be changed by a config reload), so a relay is
the clean way to partition on one machine without privileges. Stopping whole regions
(:meth:`SuperCluster.stop_region`, :meth:`SuperCluster.start_region`: same ports and data)
models a region outage instead.

Mind the meta layer: it spans every server of every region. With two regions of three, it needs
four servers, so while the regions are apart (or one is stopped) neither side can create or
delete streams or consumers; streams whose replicas are on one side keep taking writes there.
Blocking methods have ``a``-prefixed coroutine twins that run them in a thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from secsync.errors import TransportError
from secsync.logs import get_logger
from secsync.servers.binary import free_ports
from secsync.servers.cluster import DEFAULT_ACCOUNT, DEFAULT_SIZE, MIN_SIZE, Cluster
from secsync.servers.launch import (
    POLL_INTERVAL,
    START_ATTEMPTS,
    ServerGroup,
    check_name,
    config_path,
    run_all,
)
from secsync.servers.monitor import probe_api, server_logs
from secsync.servers.options import DEFAULT_REGIONS
from secsync.servers.region import Region, SuperClusterNode, supercluster_config_path
from secsync.servers.relay import GatewayRelay

log = get_logger("secsync.topology")


class SuperCluster(ServerGroup):
    """Regions of ``size`` JetStream nodes each (default two regions, ``a`` and ``b``, of three),
    joined by gateways, on loopback; every server tagged ``region:<name>``.

    Nodes are named after their region (``a1``, ``a2``, ``a3``, ``b1``...); a region's cluster
    and gateway name is the region name, so ``Placement(cluster="b")`` and
    ``Placement(tags=["region:b"])`` both place a stream in region ``b``.

    ``root_dir`` holds one directory per node; without it a temporary directory is created and
    :meth:`close` removes it. ``partitionable=True`` puts a :class:`GatewayRelay` in front of
    every gateway, for :meth:`partition` and :meth:`heal`.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str] | None = None,
        *,
        regions: Sequence[str] = DEFAULT_REGIONS,
        size: int = DEFAULT_SIZE,
        partitionable: bool = False,
        config: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        names = list(regions)
        if len(names) < 2:
            raise ValueError("a super-cluster needs at least two regions")
        if len(set(names)) != len(names):
            raise ValueError(f"region names must differ: {names}")
        for name in names:
            check_name("region", name)
        if size < MIN_SIZE:
            raise ValueError(f"a JetStream region needs at least {MIN_SIZE} nodes, not {size}")
        self._size = size
        super().__init__(
            root_dir,
            prefix="secsync-supercluster-",
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self._config = config_path(config, supercluster_config_path)
        self._partitionable = partitionable
        self._relay: GatewayRelay | None = None
        self._regions = {
            name: Region(
                self,
                name,
                self._directory,
                size=size,
                config=self._config,
                stop_timeout=stop_timeout,
            )
            for name in names
        }
        self._nodes: list[SuperClusterNode] = []

    # --- properties ---------------------------------------------------------------------------

    @property
    def root_dir(self) -> Path:
        return self._directory

    @property
    def region_names(self) -> list[str]:
        return list(self._regions)

    @property
    def regions(self) -> dict[str, Region]:
        return dict(self._regions)

    def region(self, name: str) -> Region:
        try:
            return self._regions[name]
        except KeyError:
            raise TransportError(f"no region {name!r} (regions: {list(self._regions)})") from None

    @property
    def nodes(self) -> list[SuperClusterNode]:
        """Every node, region by region; made at the first :meth:`start`."""
        if not self._nodes:
            raise TransportError("the super-cluster has not been started yet")
        return list(self._nodes)

    def node(self, name: str) -> SuperClusterNode:
        """The node whose server name is ``name`` (``"a1"``...)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise TransportError(f"no node {name!r} in the super-cluster")

    def region_nodes(self, region: str) -> list[SuperClusterNode]:
        self.region(region)
        return [node for node in self.nodes if node.region == region]

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node, region by region."""
        return [node.url for node in self.nodes]

    def region_urls(self, region: str) -> list[str]:
        """Client URLs of ``region``'s nodes (for a client homed there)."""
        return [node.url for node in self.region_nodes(region)]

    @property
    def running(self) -> bool:
        """Whether every node is running."""
        return bool(self._nodes) and all(node.running for node in self._nodes)

    @property
    def partitionable(self) -> bool:
        return self._partitionable

    @property
    def partitioned(self) -> bool:
        """Whether the gateways are cut (:meth:`partition`)."""
        return self._relay is not None and self._relay.is_cut

    def __repr__(self) -> str:
        return f"<SuperCluster {list(self._regions)} {self._nodes or 'not started'}>"

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start every node and wait until the super-cluster is ready (:meth:`wait_ready`).

        Raises :class:`TransportError`; nodes started by a failed call are stopped again.
        """
        if not self._config.is_file():
            raise TransportError(f"super-cluster config not found: {self._config}")
        if self._nodes and any(node.running for node in self._nodes):
            raise TransportError("the super-cluster is already running")
        binary = self.nats_server()
        started = time.monotonic()
        choose_ports = not self._nodes
        for attempt in range(1, START_ATTEMPTS + 1):
            if choose_ports:
                self._make_nodes(binary)
            try:
                run_all(self._nodes, lambda node: node.start())
                self.wait_ready(started + self.start_timeout - time.monotonic())
                break
            except TransportError as exc:
                run_all(self._nodes, lambda node: node.stop())
                lost_race = "address already in use" in str(exc)
                if not (lost_race and choose_ports) or attempt == START_ATTEMPTS:
                    if choose_ports:
                        self._forget_nodes()
                    raise
                log.info("supercluster.ports_taken", attempt=attempt)
        log.info(
            "supercluster.started",
            regions={name: self.region_urls(name) for name in self._regions},
            seconds=round(time.monotonic() - started, 3),
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Wait until the running nodes are ready; the meta leader's name.

        Ready: in every region, each running node's ``/healthz`` (also the full check, which
        needs the meta leader and current streams) answers ok, routes are complete, and every
        node names the same meta leader of all ``regions x size`` servers; every running node has
        an outbound gateway connection to each other region, each region has an inbound one from
        every running node of each other region (``/gatewayz``); and a JetStream API request
        through each running node is answered. Stopped nodes are left out; while a region is
        stopped or the regions are partitioned, there is no meta leader, so this times out.
        Raises :class:`TransportError` after ``timeout`` seconds or when a node exits.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            exited = [n for n in self.nodes if n._process is not None and not n.running]
            if exited:
                raise TransportError(
                    f"node {exited[0].name} exited; log {exited[0].log_path}:\n"
                    f"{exited[0].last_run_log()}"
                )
            running = [node for node in self._nodes if node.running]
            leader, problem = self._check_ready(running)
            if leader is not None:
                problem = probe_api(running, deadline)
                if not problem:
                    return leader
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"super-cluster did not become ready within {timeout:.1f} s: {problem}"
                    + server_logs(self._nodes)
                )
            time.sleep(POLL_INTERVAL)

    def _check_ready(self, running: Sequence[SuperClusterNode]) -> tuple[str | None, str]:
        if not running:
            return None, "no node is running"
        leaders: set[str] = set()
        for name, region in self._regions.items():
            in_region = [node for node in running if node.region == name]
            if not in_region:
                continue
            leader, problem = region._check_ready(in_region)
            if leader is None:
                return None, f"region {name}: {problem}"
            leaders.add(leader)
        if len(leaders) != 1:
            return None, f"the regions name different meta leaders: {sorted(leaders)}"
        problem = self._check_gateways(running)
        if problem:
            return None, problem
        return leaders.pop(), ""

    def _check_gateways(self, running: Sequence[SuperClusterNode]) -> str:
        """Which gateway connection between running nodes is missing; empty when none is."""
        per_region: dict[str, int] = {}
        for node in running:
            per_region[node.region] = per_region.get(node.region, 0) + 1
        inbound: dict[tuple[str, str], int] = {}
        for node in running:
            seen = node.gateway_connections()
            if seen is None:
                return f"{node.name} does not report its gateways"
            outbound, into = seen
            for other in per_region:
                if other != node.region and other not in outbound:
                    return f"{node.name} has no gateway connection to region {other}"
            for other, count in into.items():
                key = (node.region, other)
                inbound[key] = inbound.get(key, 0) + count
        for region in per_region:
            for other, count in per_region.items():
                if other != region and inbound.get((region, other), 0) < count:
                    return (
                        f"region {region} has {inbound.get((region, other), 0)} of {count} "
                        f"inbound gateway connections from region {other}"
                    )
        return ""

    def gateways_down(self) -> bool:
        """Whether no running node has a gateway connection to another region."""
        for node in self.nodes:
            if not node.running:
                continue
            seen = node.gateway_connections()
            if seen is None or seen[0] or seen[1]:
                return False
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Stop every node (SIGTERM, all at once; SIGKILL after ``timeout``); the data stays."""
        if self._nodes:
            run_all(self._nodes, lambda node: node.stop(timeout))
            log.info("supercluster.stopped")

    def kill(self) -> None:
        """SIGKILL every node and reap it; the data stays."""
        if self._nodes:
            run_all(self._nodes, lambda node: node.kill())

    def close(self) -> None:
        """Stop every node and the relay; remove the root directory if this made it."""
        self.stop()
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        self.remove_directory()

    # --- regions, partitions, leaders -----------------------------------------------------------

    def stop_region(self, region: str, timeout: float | None = None) -> None:
        """Stop every node of ``region`` (SIGTERM); the data and ports stay for
        :meth:`start_region`. The other regions lose the meta leader (no quorum) until then."""
        run_all(self.region_nodes(region), lambda node: node.stop(timeout))
        log.info("supercluster.region_stopped", region=region)

    def kill_region(self, region: str) -> None:
        """SIGKILL every node of ``region``; the data and ports stay."""
        run_all(self.region_nodes(region), lambda node: node.kill())
        log.info("supercluster.region_killed", region=region)

    def start_region(self, region: str, timeout: float | None = None) -> str:
        """Start the stopped nodes of ``region`` on their ports and data, and wait until the
        whole super-cluster is ready; the meta leader's name."""
        started = time.monotonic()
        stopped = [node for node in self.region_nodes(region) if not node.running]
        run_all(stopped, lambda node: node.start())
        leader = self.wait_ready(self.start_timeout if timeout is None else timeout)
        log.info(
            "supercluster.region_started",
            region=region,
            seconds=round(time.monotonic() - started, 3),
        )
        return leader

    def partition(self, timeout: float = 30.0) -> None:
        """Cut every gateway connection, and keep them cut until :meth:`heal`; returns once no
        running node reports a gateway connection. Servers and their clients keep running.
        Needs ``partitionable=True``."""
        relay = self._require_relay()
        started = time.monotonic()
        dropped = relay.cut()
        deadline = started + max(0.0, timeout)
        while not self.gateways_down():
            if time.monotonic() >= deadline:
                raise TransportError(f"gateways still connected {timeout:.1f} s after the cut")
            time.sleep(POLL_INTERVAL)
        log.info(
            "supercluster.partitioned",
            dropped=dropped,
            seconds=round(time.monotonic() - started, 3),
        )

    def heal(self, timeout: float = 60.0) -> str:
        """Let gateway connections through again and wait until the super-cluster is ready
        (gateways reconnect within about a second, then a meta leader is elected); its name."""
        relay = self._require_relay()
        started = time.monotonic()
        relay.restore()
        leader = self.wait_ready(timeout)
        log.info("supercluster.healed", seconds=round(time.monotonic() - started, 3))
        return leader

    def meta_leader(self, timeout: float = 10.0) -> SuperClusterNode:
        """The node that leads the JetStream meta layer (after :meth:`wait_ready` succeeds)."""
        return self.node(self.wait_ready(timeout))

    def stream_leader(
        self, stream: str, *, account: str = DEFAULT_ACCOUNT, timeout: float = 10.0
    ) -> SuperClusterNode:
        """The node that leads ``stream``, by the running nodes' ``/jsz`` (see
        :meth:`Cluster.stream_leader`). Raises :class:`TransportError`."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            leaders: set[str] = set()
            for node in self.nodes:
                if node.running:
                    found = Cluster.stream_leader_seen_by(node, stream, account)
                    if found is not None:
                        leaders.add(found)
            if len(leaders) == 1:
                leader = leaders.pop()
                for node in self._nodes:
                    if node.name == leader and node.running:
                        return node
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"no single leader for stream {stream!r} within {timeout:.1f} s "
                    f"(seen: {sorted(leaders) or 'none'})"
                )
            time.sleep(POLL_INTERVAL)

    # --- asyncio ----------------------------------------------------------------------------------

    async def astop(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.stop, timeout)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    async def await_ready(self, timeout: float = 30.0) -> str:
        return await asyncio.to_thread(self.wait_ready, timeout)

    async def astop_region(self, region: str, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.stop_region, region, timeout)

    async def akill_region(self, region: str) -> None:
        await asyncio.to_thread(self.kill_region, region)

    async def astart_region(self, region: str, timeout: float | None = None) -> str:
        return await asyncio.to_thread(self.start_region, region, timeout)

    async def apartition(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.partition, timeout)

    async def aheal(self, timeout: float = 60.0) -> str:
        return await asyncio.to_thread(self.heal, timeout)

    async def ameta_leader(self, timeout: float = 10.0) -> SuperClusterNode:
        return await asyncio.to_thread(self.meta_leader, timeout)

    async def astream_leader(
        self, stream: str, *, account: str = DEFAULT_ACCOUNT, timeout: float = 10.0
    ) -> SuperClusterNode:
        return await asyncio.to_thread(
            lambda: self.stream_leader(stream, account=account, timeout=timeout)
        )

    # --- internals --------------------------------------------------------------------------------

    def _require_relay(self) -> GatewayRelay:
        if self._relay is None:
            raise TransportError(
                "this super-cluster cannot be partitioned: make it with partitionable=True"
            )
        if not self._nodes:
            raise TransportError("the super-cluster has not been started yet")
        return self._relay

    def _make_nodes(self, binary: Path) -> None:
        """Nodes on fresh ports: client, monitoring, route and gateway port each, chosen at
        once; with a relay, the advertised gateway ports are the relay's."""
        self._forget_nodes()
        names = list(self._regions)
        count = len(names) * self._size
        ports = iter(free_ports(4 * count))
        plan: list[dict[str, int]] = [
            {kind: next(ports) for kind in ("client", "http", "route", "gateway")}
            for _ in range(count)
        ]
        if self._partitionable:
            self._relay = GatewayRelay()
            for entry in plan:
                entry["advertise"] = self._relay.add(entry["gateway"])
        else:
            for entry in plan:
                entry["advertise"] = entry["gateway"]
        gateways = {
            name: [plan[r * self._size + i]["advertise"] for i in range(self._size)]
            for r, name in enumerate(names)
        }
        for r, name in enumerate(names):
            region_plan = plan[r * self._size : (r + 1) * self._size]
            nodes = [
                SuperClusterNode(
                    f"{name}{i + 1}",
                    self._directory / f"{name}{i + 1}",
                    region=name,
                    port=entry["client"],
                    http_port=entry["http"],
                    cluster_port=entry["route"],
                    route_ports=[e["route"] for j, e in enumerate(region_plan) if j != i],
                    gateway_port=entry["gateway"],
                    advertise_port=entry["advertise"],
                    gateways=gateways,
                    config=self._config,
                    binary=binary,
                    start_timeout=max(30.0, self.start_timeout),
                    stop_timeout=self.stop_timeout,
                )
                for i, entry in enumerate(region_plan)
            ]
            self._regions[name].assign(nodes, count)
            self._nodes.extend(nodes)

    def _forget_nodes(self) -> None:
        self._nodes = []
        if self._relay is not None:
            self._relay.close()
            self._relay = None
