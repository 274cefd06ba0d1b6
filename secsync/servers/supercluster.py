"""Multi-server NATS topologies on loopback, for scale-out tests and local use.

* :class:`SuperCluster`: several regions (default ``a`` and ``b``), each a 3-node JetStream
  cluster (:class:`Region`, a :class:`secsync.cluster.Cluster`), joined by gateways, every
  server tagged ``region:<name>`` (``broker-config/supercluster.conf``). Ready when every node is
  healthy, all of them name one meta leader, routes and gateways are connected both ways
  (``/routez``, ``/gatewayz``) and the JetStream API answers through every node.
* :class:`LeafTopology`: a hub (``broker-config/hub.conf``: the single server with a leaf-node
  listener and the JetStream domain ``hub``) and one or more device-local leaf servers without
  JetStream (``broker-config/leaf.conf``). Ready when every leaf connection is up on both ends
  (``/leafz``) and a JetStream API request through every leaf is answered by the hub.

Every server is a :class:`secsync.broker.Broker` (same ``stop``/``kill``/``restart`` on the same
ports and data, for failover tests). Ports are chosen free at the first start and kept.

Cutting the link between regions: with ``SuperCluster(partitionable=True)`` every gateway is
reached through a TCP relay in this process (:class:`GatewayRelay`; each server advertises its
relay's address, so the gossiped gateway URLs lead there as well). :meth:`SuperCluster.partition`
drops every gateway connection and refuses new ones while all servers keep running and keep
their clients; :meth:`SuperCluster.heal` lets them in again, and the servers reconnect on their
own (explicit gateways are retried once a second). nats-server cannot drop a gateway by itself
(gateways cannot be changed by a config reload), so a relay is the clean way to partition on
one machine without privileges. Stopping whole regions (:meth:`SuperCluster.stop_region`,
:meth:`SuperCluster.start_region`: same ports and data) models a region outage instead.

Mind the meta layer: it spans every server of every region. With two regions of three, it needs
four servers, so while the regions are apart (or one is stopped) neither side can create or
delete streams or consumers; streams whose replicas are on one side keep taking writes there.

The leaf's hub can be stopped, killed and started again (:meth:`LeafTopology.stop_hub`,
:meth:`LeafTopology.start_hub`). While it is away, JetStream requests from a leaf's clients fail
at once with "no responders" (nats-py: ``NoRespondersError``; its JetStream API calls raise
``ServiceUnavailableError``, publishes ``NoStreamResponseError``), and core NATS traffic between
clients of one leaf keeps working.

Blocking methods have ``a``-prefixed coroutine twins that run them in a thread.
:func:`build_topology` and :func:`describe_topology` serve ``secsync broker --topology``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from secsync.errors import TransportError
from secsync.logs import get_logger
from secsync.servers.broker import (
    LOOPBACK,
    Broker,
    conf_string,
    config_file,
    find_nats_server,
    free_ports,
)
from secsync.servers.cluster import (
    DEFAULT_ACCOUNT,
    DEFAULT_SIZE,
    MIN_SIZE,
    Cluster,
    ClusterNode,
    ServerGroup,
    _conf_array,
    monitor_json,
    probe_api,
)
from secsync.servers.options import DEFAULT_REGIONS, TOPOLOGIES

log = get_logger("secsync.topology")

ENV_SERVER_TAG = "SECSYNC_NATS_SERVER_TAG"
ENV_GATEWAY_PORT = "SECSYNC_NATS_GATEWAY_PORT"
ENV_GATEWAY_ADVERTISE = "SECSYNC_NATS_GATEWAY_ADVERTISE"
ENV_GATEWAYS = "SECSYNC_NATS_GATEWAYS"
ENV_LEAF_PORT = "SECSYNC_NATS_LEAF_PORT"
ENV_LEAF_REMOTES = "SECSYNC_NATS_LEAF_REMOTES"
# Variables the config files read that secsync.cluster and secsync.broker define.
ENV_SERVER_NAME = "SECSYNC_NATS_SERVER_NAME"

#: The JetStream domain of the hub (fixed in broker-config/hub.conf and leaf.conf).
HUB_DOMAIN = "hub"
#: The hub's ``server_name`` (broker-config/hub.conf).
HUB_NAME = "secsync-hub"

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_POLL_INTERVAL = 0.02
_START_ATTEMPTS = 3  # new ports after a lost race for automatically chosen ports
_RELAY_TIMEOUT = 10.0
_T = TypeVar("_T")


def supercluster_config_path() -> Path:
    return config_file("supercluster.conf")


def hub_config_path() -> Path:
    return config_file("hub.conf")


def leaf_config_path() -> Path:
    return config_file("leaf.conf")


def region_tag(region: str) -> str:
    """The server tag of ``region``'s servers, for ``Placement(tags=[...])``."""
    return f"region:{region}"


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{kind} name {name!r}: use letters, digits, '-' and '_' only")


def _run_all(items: Sequence[_T], action: Callable[[_T], object]) -> None:
    """``action`` on every item at once (threads); raises the first error."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(action, item) for item in items]
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def _logs(servers: Sequence[Broker]) -> str:
    return "".join(
        f"\n--- log {getattr(s, 'name', s.port)} ({s.log_path}):\n{s._last_run_log()}"
        for s in servers
    )


# --- gateway relay --------------------------------------------------------------------------------


class GatewayRelay:
    """TCP relays on loopback, one per gateway listener, that can drop and refuse connections.

    Runs an event loop in a daemon thread of its own. :meth:`add` listens on a free port and
    forwards every connection to a target port; :meth:`cut` drops every relayed connection and
    makes new ones fail at once (accepted, then closed), :meth:`restore` relays again.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="secsync-gateway-relay", daemon=True
        )
        self._servers: list[asyncio.Server] = []
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut = False
        self._closed = False
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def connections(self) -> int:
        """Relayed connections open now."""
        return len(self._links) // 2

    def add(self, target_port: int) -> int:
        """Relay a new free loopback port to ``target_port``; the new port."""
        return self._call(self._add(target_port))

    def cut(self) -> int:
        """Drop every relayed connection and refuse new ones; how many were dropped."""
        return self._call(self._set_cut(True))

    def restore(self) -> None:
        """Relay new connections again."""
        self._call(self._set_cut(False))

    def close(self) -> None:
        """Stop listening, drop every connection, end the thread."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_RELAY_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    def _refusing(self) -> bool:
        return self._cut

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._closed and not self._loop.is_running():
            coro.close()
            raise TransportError("the gateway relay is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_RELAY_TIMEOUT)

    async def _add(self, target_port: int) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._relay(reader, writer, target_port)

        server = await asyncio.start_server(handle, LOOPBACK, 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _set_cut(self, cut: bool) -> int:
        self._cut = cut
        dropped = 0
        if cut:
            dropped = self.connections
            for writer in list(self._links):
                writer.transport.abort()
        return dropped

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target_port: int
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._refusing():
                return
            try:
                up_reader, upstream = await asyncio.open_connection(LOOPBACK, target_port)
            except OSError:
                return  # the server is down: the dialer sees the connection closed
            if self._refusing():  # cut while dialing
                return
            self._links.update((writer, upstream))
            await asyncio.gather(
                self._pipe(reader, upstream), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._links.discard(end)
                    end.transport.abort()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()  # one side gone: drop the other, as a cut cable would

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._links):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()


# --- super-cluster -------------------------------------------------------------------------------


class SuperClusterNode(ClusterNode):
    """One node of a :class:`SuperCluster`: a cluster node with a region tag and a gateway."""

    def __init__(
        self,
        name: str,
        store_dir: str | os.PathLike[str],
        *,
        region: str,
        port: int,
        http_port: int,
        cluster_port: int,
        route_ports: Sequence[int],
        gateway_port: int,
        advertise_port: int,
        gateways: Mapping[str, Sequence[int]],
        config: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            name,
            store_dir,
            cluster_name=region,
            port=port,
            http_port=http_port,
            cluster_port=cluster_port,
            route_ports=route_ports,
            config=config if config is not None else supercluster_config_path(),
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self._gateway_port = gateway_port
        self._advertise_port = advertise_port
        self._gateways = {region_name: list(ports) for region_name, ports in gateways.items()}

    @property
    def region(self) -> str:
        """The region (cluster and gateway name)."""
        return self.cluster_name

    @property
    def tags(self) -> list[str]:
        return [region_tag(self.region)]

    @property
    def gateway_port(self) -> int:
        """The port the gateway listens on."""
        return self._gateway_port

    @property
    def advertise_port(self) -> int:
        """The port other regions dial (a relay's, when the super-cluster is partitionable)."""
        return self._advertise_port

    def gateway_connections(self) -> tuple[set[str], dict[str, int]] | None:
        """(regions with an outbound gateway connection, inbound connections per region) by
        ``/gatewayz``; ``None`` when the node does not answer."""
        gatewayz = self.monitor("gatewayz")
        if gatewayz is None:
            return None
        outbound = gatewayz.get("outbound_gateways")
        inbound = gatewayz.get("inbound_gateways")
        out = {
            name
            for name, info in (outbound.items() if isinstance(outbound, dict) else ())
            if name != self.region and isinstance(info, dict) and info.get("connection")
        }
        into = {
            name: len(conns)
            for name, conns in (inbound.items() if isinstance(inbound, dict) else ())
            if name != self.region and isinstance(conns, list) and conns
        }
        return out, into

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<SuperClusterNode {self.name} region={self.region} {self._port} {state}>"

    def _environment(self) -> dict[str, str]:
        gateways = ", ".join(
            f"{{name: {conf_string(name)}, urls: "
            f"{_conf_array([f'nats://{LOOPBACK}:{p}' for p in ports])}}}"
            for name, ports in self._gateways.items()
        )
        return {
            **super()._environment(),
            ENV_SERVER_TAG: conf_string(region_tag(self.region)),
            ENV_GATEWAY_PORT: str(self._gateway_port),
            ENV_GATEWAY_ADVERTISE: conf_string(f"{LOOPBACK}:{self._advertise_port}"),
            ENV_GATEWAYS: f"[{gateways}]",
        }


class Region(Cluster):
    """One region of a :class:`SuperCluster`: a :class:`Cluster` whose nodes are
    :class:`SuperClusterNode` objects, made and started by the super-cluster.

    :attr:`urls`, :attr:`nodes`, :meth:`node` and :meth:`stream_leader` (among this region's
    nodes) work as for a cluster; :meth:`start`, :meth:`stop` and :meth:`wait_ready` act on
    this region but wait for the whole super-cluster, since its meta layer spans every region.
    """

    def __init__(
        self,
        supercluster: SuperCluster,
        name: str,
        root_dir: Path,
        *,
        size: int,
        config: Path,
        stop_timeout: float,
    ) -> None:
        super().__init__(root_dir, size=size, name=name, config=config, stop_timeout=stop_timeout)
        self._super = supercluster

    @property
    def tag(self) -> str:
        """This region's server tag, ``region:<name>``."""
        return region_tag(self.name)

    @property
    def supercluster(self) -> SuperCluster:
        return self._super

    def __repr__(self) -> str:
        return f"<Region {self.name} {self._nodes or 'not started'}>"

    def start(self) -> Self:
        """Start this region's nodes; wait until the whole super-cluster is ready."""
        self._super.start_region(self.name)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop this region's nodes (SIGTERM, all at once); the data stays."""
        self._super.stop_region(self.name, timeout)

    def kill(self) -> None:
        """SIGKILL this region's nodes; the data stays."""
        self._super.kill_region(self.name)

    def close(self) -> None:
        """Stop this region's nodes (the super-cluster owns the directories)."""
        self.stop()

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Wait until the whole super-cluster is ready; the meta leader's name."""
        return self._super.wait_ready(timeout)

    def meta_leader(self, timeout: float = 10.0) -> ClusterNode:
        """The meta leader of the super-cluster (it may be in another region)."""
        return self._super.meta_leader(timeout)

    def _assign(self, nodes: list[SuperClusterNode], meta_size: int) -> None:
        self._nodes = list(nodes)
        self._meta_size = meta_size


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
            _check_name("region", name)
        if size < MIN_SIZE:
            raise ValueError(f"a JetStream region needs at least {MIN_SIZE} nodes, not {size}")
        self._size = size
        self._config = Path(config).resolve() if config is not None else supercluster_config_path()
        self._binary = Path(binary) if binary is not None else None
        self._owns_root = root_dir is None
        if root_dir is None:
            root_dir = tempfile.mkdtemp(prefix="secsync-supercluster-")
        self._root = Path(root_dir).resolve()
        self._partitionable = partitionable
        self._relay: GatewayRelay | None = None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._regions = {
            name: Region(
                self,
                name,
                self._root,
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
        return self._root

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
        binary = self._binary if self._binary is not None else find_nats_server()
        started = time.monotonic()
        choose_ports = not self._nodes
        for attempt in range(1, _START_ATTEMPTS + 1):
            if choose_ports:
                self._make_nodes(binary)
            try:
                _run_all(self._nodes, lambda node: node.start())
                self.wait_ready(started + self.start_timeout - time.monotonic())
                break
            except TransportError as exc:
                _run_all(self._nodes, lambda node: node.stop())
                lost_race = "address already in use" in str(exc)
                if not (lost_race and choose_ports) or attempt == _START_ATTEMPTS:
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
                    f"{exited[0]._last_run_log()}"
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
                    + _logs(self._nodes)
                )
            time.sleep(_POLL_INTERVAL)

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
            _run_all(self._nodes, lambda node: node.stop(timeout))
            log.info("supercluster.stopped")

    def kill(self) -> None:
        """SIGKILL every node and reap it; the data stays."""
        if self._nodes:
            _run_all(self._nodes, lambda node: node.kill())

    def close(self) -> None:
        """Stop every node and the relay; remove the root directory if this made it."""
        self.stop()
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._owns_root:
            shutil.rmtree(self._root, ignore_errors=True)

    # --- regions, partitions, leaders -----------------------------------------------------------

    def stop_region(self, region: str, timeout: float | None = None) -> None:
        """Stop every node of ``region`` (SIGTERM); the data and ports stay for
        :meth:`start_region`. The other regions lose the meta leader (no quorum) until then."""
        _run_all(self.region_nodes(region), lambda node: node.stop(timeout))
        log.info("supercluster.region_stopped", region=region)

    def kill_region(self, region: str) -> None:
        """SIGKILL every node of ``region``; the data and ports stay."""
        _run_all(self.region_nodes(region), lambda node: node.kill())
        log.info("supercluster.region_killed", region=region)

    def start_region(self, region: str, timeout: float | None = None) -> str:
        """Start the stopped nodes of ``region`` on their ports and data, and wait until the
        whole super-cluster is ready; the meta leader's name."""
        started = time.monotonic()
        stopped = [node for node in self.region_nodes(region) if not node.running]
        _run_all(stopped, lambda node: node.start())
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
            time.sleep(_POLL_INTERVAL)
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
                    found = Cluster._stream_leader_seen_by(node, stream, account)
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
            time.sleep(_POLL_INTERVAL)

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
                    self._root / f"{name}{i + 1}",
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
            self._regions[name]._assign(nodes, count)
            self._nodes.extend(nodes)

    def _forget_nodes(self) -> None:
        self._nodes = []
        if self._relay is not None:
            self._relay.close()
            self._relay = None


# --- hub and leaves -------------------------------------------------------------------------------


class HubNode(Broker):
    """The hub of a :class:`LeafTopology`: a broker from ``hub.conf`` with a leaf-node listener."""

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        port: int,
        http_port: int,
        leaf_port: int,
        config: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            store_dir,
            config=config if config is not None else hub_config_path(),
            port=port,
            http_port=http_port,
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self._leaf_port = leaf_port

    @property
    def name(self) -> str:
        """The hub's ``server_name`` (fixed in hub.conf)."""
        return HUB_NAME

    @property
    def leaf_port(self) -> int:
        return self._leaf_port

    @property
    def leaf_url(self) -> str:
        """Where leaves connect, ``nats-leaf://127.0.0.1:PORT``."""
        return f"nats-leaf://{LOOPBACK}:{self._leaf_port}"

    def monitor(self, path: str, **query: str) -> dict[str, Any] | None:
        return monitor_json(self, path, **query)

    def connected_leaves(self) -> set[str] | None:
        """Server names of the leaves connected now (``/leafz``); ``None`` if no answer."""
        leafz = self.monitor("leafz")
        if leafz is None:
            return None
        leafs = leafz.get("leafs")
        return {
            str(leaf["name"])
            for leaf in (leafs if isinstance(leafs, list) else ())
            if isinstance(leaf, dict) and leaf.get("name")
        }

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<HubNode {self._port} leaf={self._leaf_port} {state}>"

    def _environment(self) -> dict[str, str]:
        return {**super()._environment(), ENV_LEAF_PORT: str(self._leaf_port)}


class LeafNode(Broker):
    """A device-local leaf server from ``leaf.conf``: no JetStream, a leaf connection to the hub.

    Its ``store_dir`` holds only the server log and the lock file."""

    def __init__(
        self,
        name: str,
        store_dir: str | os.PathLike[str],
        *,
        port: int,
        http_port: int,
        remotes: Sequence[str],
        config: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        _check_name("leaf", name)
        super().__init__(
            store_dir,
            config=config if config is not None else leaf_config_path(),
            port=port,
            http_port=http_port,
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self._name = name
        self._remotes = list(remotes)

    @property
    def name(self) -> str:
        return self._name

    @property
    def remotes(self) -> list[str]:
        """The hub's leaf-node URLs this leaf dials."""
        return list(self._remotes)

    def monitor(self, path: str, **query: str) -> dict[str, Any] | None:
        return monitor_json(self, path, **query)

    def hub_connections(self) -> list[str] | None:
        """Server names at the other end of this leaf's connections (``/leafz``): ``[hub]``
        when connected, ``[]`` while the hub is away; ``None`` if no answer."""
        leafz = self.monitor("leafz")
        if leafz is None:
            return None
        leafs = leafz.get("leafs")
        return [
            str(leaf.get("name"))
            for leaf in (leafs if isinstance(leafs, list) else ())
            if isinstance(leaf, dict)
        ]

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<LeafNode {self._name} {self._port} {state}>"

    def _environment(self) -> dict[str, str]:
        return {
            **super()._environment(),
            ENV_SERVER_NAME: conf_string(self._name),
            ENV_LEAF_REMOTES: _conf_array(self._remotes),
        }


class LeafTopology(ServerGroup):
    """A hub with JetStream and ``leaves`` (default 1) device-local leaf servers, on loopback.

    Clients of a leaf (:attr:`leaf_url`, :attr:`leaf_urls`) use the hub's JetStream through it;
    clients may also connect to the hub directly (:attr:`hub_url`). ``root_dir`` holds ``hub/``
    and one directory per leaf (``leaf1/``...); without it a temporary directory is created and
    :meth:`close` removes it.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str] | None = None,
        *,
        leaves: int = 1,
        hub_config: str | os.PathLike[str] | None = None,
        leaf_config: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if leaves < 1:
            raise ValueError(f"a leaf topology needs at least one leaf, not {leaves}")
        self._leaf_count = leaves
        self._hub_config = (
            Path(hub_config).resolve() if hub_config is not None else hub_config_path()
        )
        self._leaf_config = (
            Path(leaf_config).resolve() if leaf_config is not None else leaf_config_path()
        )
        self._binary = Path(binary) if binary is not None else None
        self._owns_root = root_dir is None
        if root_dir is None:
            root_dir = tempfile.mkdtemp(prefix="secsync-leaf-")
        self._root = Path(root_dir).resolve()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._hub: HubNode | None = None
        self._leaves: list[LeafNode] = []

    # --- properties ---------------------------------------------------------------------------

    @property
    def root_dir(self) -> Path:
        return self._root

    @property
    def hub(self) -> HubNode:
        if self._hub is None:
            raise TransportError("the leaf topology has not been started yet")
        return self._hub

    @property
    def leaves(self) -> list[LeafNode]:
        if not self._leaves:
            raise TransportError("the leaf topology has not been started yet")
        return list(self._leaves)

    @property
    def leaf(self) -> LeafNode:
        """The first leaf (``leaf1``)."""
        return self.leaves[0]

    def node(self, name: str) -> Broker:
        """The hub (``"hub"`` or its server name) or the leaf named ``name``."""
        if name in ("hub", HUB_NAME):
            return self.hub
        for leaf in self.leaves:
            if leaf.name == name:
                return leaf
        raise TransportError(f"no server {name!r} in the leaf topology")

    @property
    def servers(self) -> list[Broker]:
        """The hub, then the leaves."""
        return [self.hub, *self.leaves]

    @property
    def hub_url(self) -> str:
        return self.hub.url

    @property
    def leaf_url(self) -> str:
        """The first leaf's client URL: where a device's client connects."""
        return self.leaf.url

    @property
    def leaf_urls(self) -> list[str]:
        return [leaf.url for leaf in self.leaves]

    @property
    def running(self) -> bool:
        return self._hub is not None and all(server.running for server in self.servers)

    def __repr__(self) -> str:
        return f"<LeafTopology {self._hub} {self._leaves}>"

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the hub, then the leaves, and wait until ready (:meth:`wait_ready`).

        Raises :class:`TransportError`; servers started by a failed call are stopped again.
        """
        for config in (self._hub_config, self._leaf_config):
            if not config.is_file():
                raise TransportError(f"leaf topology config not found: {config}")
        if self._hub is not None and any(server.running for server in self.servers):
            raise TransportError("the leaf topology is already running")
        binary = self._binary if self._binary is not None else find_nats_server()
        started = time.monotonic()
        choose_ports = self._hub is None
        for attempt in range(1, _START_ATTEMPTS + 1):
            if choose_ports:
                self._make_servers(binary)
            try:
                # The hub first, so that the leaves connect at their first attempt.
                self.hub.start()
                _run_all(self.leaves, lambda leaf: leaf.start())
                self.wait_ready(started + self.start_timeout - time.monotonic())
                break
            except TransportError as exc:
                _run_all(self.servers, lambda server: server.stop())
                lost_race = "address already in use" in str(exc)
                if not (lost_race and choose_ports) or attempt == _START_ATTEMPTS:
                    if choose_ports:
                        self._hub, self._leaves = None, []
                    raise
                log.info("leaf_topology.ports_taken", attempt=attempt)
        log.info(
            "leaf_topology.started",
            hub=self.hub_url,
            leaves=self.leaf_urls,
            seconds=round(time.monotonic() - started, 3),
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the hub is healthy, every running leaf is connected to it (``/leafz`` on
        both ends) and a JetStream API request through every running leaf (and the hub) is
        answered. Raises :class:`TransportError` after ``timeout`` seconds, when a server exits,
        or at once when the hub is not running."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            exited = [s for s in self.servers if s._process is not None and not s.running]
            if exited:
                name = getattr(exited[0], "name", "hub")
                raise TransportError(
                    f"{name} exited; log {exited[0].log_path}:\n{exited[0]._last_run_log()}"
                )
            if not self.hub.running:
                raise TransportError("the hub is not running")
            running: list[HubNode | LeafNode] = [
                self.hub,
                *(leaf for leaf in self._leaves if leaf.running),
            ]
            problem = self._check_ready(running)
            if not problem:
                problem = probe_api(running, deadline)
                if not problem:
                    return
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"leaf topology did not become ready within {timeout:.1f} s: {problem}"
                    + _logs(self.servers)
                )
            time.sleep(_POLL_INTERVAL)

    def _check_ready(self, running: Sequence[HubNode | LeafNode]) -> str:
        hub = self.hub
        for query in ({"js-enabled-only": "true"}, {}):
            health = hub.monitor("healthz", **query)
            if health is None or health.get("status") != "ok":
                return f"the hub is not healthy ({health})"
        connected = hub.connected_leaves()
        if connected is None:
            return "the hub does not report its leaf connections"
        for server in running:
            if not isinstance(server, LeafNode):
                continue
            if server.name not in connected:
                return f"the hub has no leaf connection from {server.name}"
            ends = server.hub_connections()
            if ends != [hub.name]:
                return f"{server.name} is not connected to the hub (leafz: {ends})"
        return ""

    def wait_hub_away(self, timeout: float = 30.0) -> None:
        """Wait until no running leaf reports a connection to the hub."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            ends = {leaf.name: leaf.hub_connections() for leaf in self.leaves if leaf.running}
            if all(found == [] for found in ends.values()):
                return
            if time.monotonic() >= deadline:
                raise TransportError(f"leaves still connected to the hub: {ends}")
            time.sleep(_POLL_INTERVAL)

    def stop_hub(self, timeout: float | None = None) -> int | None:
        """Stop the hub (SIGTERM; its data and ports stay) and wait until every running leaf
        has noticed; the hub's exit code."""
        code = self.hub.stop(timeout)
        self.wait_hub_away()
        log.info("leaf_topology.hub_stopped", code=code)
        return code

    def kill_hub(self) -> int | None:
        """SIGKILL the hub and wait until every running leaf has noticed; its exit code."""
        code = self.hub.kill()
        self.wait_hub_away()
        log.info("leaf_topology.hub_killed", code=code)
        return code

    def start_hub(self, timeout: float | None = None) -> None:
        """Start the hub again on its ports and data; wait until the leaves have reconnected
        and JetStream answers through them (:meth:`wait_ready`)."""
        started = time.monotonic()
        self.hub.start()
        self.wait_ready(self.start_timeout if timeout is None else timeout)
        log.info("leaf_topology.hub_started", seconds=round(time.monotonic() - started, 3))

    def stop(self, timeout: float | None = None) -> None:
        """Stop the leaves, then the hub; the data stays."""
        if self._hub is not None:
            _run_all(self._leaves, lambda leaf: leaf.stop(timeout))
            self._hub.stop(timeout)
            log.info("leaf_topology.stopped")

    def kill(self) -> None:
        """SIGKILL every server; the data stays."""
        if self._hub is not None:
            _run_all(self.servers, lambda server: server.kill())

    def close(self) -> None:
        """Stop; remove the root directory if this made it."""
        self.stop()
        if self._owns_root:
            shutil.rmtree(self._root, ignore_errors=True)

    # --- asyncio ----------------------------------------------------------------------------------

    async def astop(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.stop, timeout)

    async def await_ready(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.wait_ready, timeout)

    async def astop_hub(self, timeout: float | None = None) -> int | None:
        return await asyncio.to_thread(self.stop_hub, timeout)

    async def akill_hub(self) -> int | None:
        return await asyncio.to_thread(self.kill_hub)

    async def astart_hub(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.start_hub, timeout)

    # --- internals --------------------------------------------------------------------------------

    def _make_servers(self, binary: Path) -> None:
        ports = iter(free_ports(3 + 2 * self._leaf_count))
        hub = HubNode(
            self._root / "hub",
            port=next(ports),
            http_port=next(ports),
            leaf_port=next(ports),
            config=self._hub_config,
            binary=binary,
            start_timeout=max(30.0, self.start_timeout),
            stop_timeout=self.stop_timeout,
        )
        self._hub = hub
        self._leaves = [
            LeafNode(
                f"leaf{i + 1}",
                self._root / f"leaf{i + 1}",
                port=next(ports),
                http_port=next(ports),
                remotes=[hub.leaf_url],
                config=self._leaf_config,
                binary=binary,
                start_timeout=max(30.0, self.start_timeout),
                stop_timeout=self.stop_timeout,
            )
            for i in range(self._leaf_count)
        ]


# --- `secsync broker --topology` ------------------------------------------------------------------

Topology = Cluster | SuperCluster | LeafTopology


def build_topology(
    kind: str,
    root_dir: str | os.PathLike[str],
    *,
    regions: Sequence[str] = DEFAULT_REGIONS,
    leaves: int = 1,
    config: str | os.PathLike[str] | None = None,
) -> Topology:
    """An unstarted ``cluster``, ``supercluster`` or ``leaf`` topology keeping its data under
    ``root_dir`` (``config`` replaces the node config of a cluster or super-cluster)."""
    if kind == "cluster":
        return Cluster(root_dir, config=config)
    if kind == "supercluster":
        return SuperCluster(root_dir, regions=regions, config=config)
    if kind == "leaf":
        if config is not None:
            raise TransportError("--config does not apply to the leaf topology (two files)")
        return LeafTopology(root_dir, leaves=leaves)
    raise TransportError(f"unknown topology {kind!r} (choose from {', '.join(TOPOLOGIES)})")


def topology_servers(topology: Topology) -> list[Broker]:
    """Every server of a started topology."""
    if isinstance(topology, LeafTopology):
        return topology.servers
    return list(topology.nodes)


def describe_topology(topology: Topology) -> Iterator[str]:
    """Lines for a person: client URLs per cluster, region or role, then each server."""
    if isinstance(topology, Cluster):
        yield f"  cluster {topology.name}: {','.join(topology.urls)}"
    elif isinstance(topology, SuperCluster):
        for name in topology.region_names:
            yield f"  region {name} ({region_tag(name)}): {','.join(topology.region_urls(name))}"
    else:
        yield f"  hub:    {topology.hub_url}"
        for leaf in topology.leaves:
            yield f"  {leaf.name}:  {leaf.url}"
    for server in topology_servers(topology):
        name = getattr(server, "name", "?")
        yield (
            f"  server {name}: {server.url} (pid {server.pid}) "
            f"monitoring {server.monitor_url} log {server.log_path}"
        )
