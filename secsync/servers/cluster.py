"""A throwaway nats-server cluster with JetStream (3 nodes) on loopback, from
``broker-config/cluster.conf``, for tests of replicated streams.

:class:`Cluster` starts every node on free loopback ports with a store directory of its own,
waits until the cluster is ready (each node's ``/healthz`` answers ok, every node names the same
JetStream meta leader in ``/jsz``, all routes are up, and the JetStream API answers through each
node), and stops them all again. Each node is a :class:`ClusterNode`, a
:class:`~secsync.servers.broker.Broker` that also passes the cluster settings to the server, so
it has the same ``stop``/``kill``/``restart`` (on the same ports and data) for
failover tests. :meth:`Cluster.stream_leader` tells which node leads a stream.

Blocking methods have ``a``-prefixed coroutine twins that run them in a thread.

:mod:`secsync.servers.supercluster` builds on this: regions of a super-cluster are
:class:`Cluster` objects, and :func:`probe_api` and :func:`monitor_json` serve its readiness
checks too.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from secsync.errors import TransportError
from secsync.logs import get_logger
from secsync.servers.binary import LOOPBACK, conf_array, conf_string, config_file, free_ports
from secsync.servers.broker import Broker
from secsync.servers.launch import POLL_INTERVAL, START_ATTEMPTS, ServerGroup, config_path, run_all
from secsync.servers.monitor import monitor_json, probe_api

log = get_logger("secsync.cluster")

ENV_SERVER_NAME = "SECSYNC_NATS_SERVER_NAME"
ENV_CLUSTER_NAME = "SECSYNC_NATS_CLUSTER_NAME"
ENV_CLUSTER_PORT = "SECSYNC_NATS_CLUSTER_PORT"
ENV_ROUTES = "SECSYNC_NATS_ROUTES"

DEFAULT_CLUSTER_NAME = "secsync"
DEFAULT_SIZE = 3
#: JetStream needs a majority of routed nodes for its meta leader: at least three.
MIN_SIZE = 3
#: The account that clients without authentication use.
DEFAULT_ACCOUNT = "$G"


def cluster_config_path() -> Path:
    """The cluster node config, ``broker-config/cluster.conf``."""
    return config_file("cluster.conf")


def _route_url(port: int) -> str:
    return f"nats-route://{LOOPBACK}:{port}"


class ClusterNode(Broker):
    """One node of a :class:`Cluster`: a :class:`Broker` started from ``cluster.conf`` with its
    server name, cluster name, route port and the routes to the other nodes.

    All ports are fixed when the node is made; :meth:`restart` reuses them and the data.
    """

    def __init__(
        self,
        name: str,
        store_dir: str | os.PathLike[str],
        *,
        cluster_name: str,
        port: int,
        http_port: int,
        cluster_port: int,
        route_ports: Sequence[int],
        config: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            store_dir,
            config=config if config is not None else cluster_config_path(),
            port=port,
            http_port=http_port,
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self._name = name
        self._cluster_name = cluster_name
        self._cluster_port = cluster_port
        self._routes = [_route_url(p) for p in route_ports]

    @property
    def name(self) -> str:
        """The node's ``server_name``, as the cluster reports leaders."""
        return self._name

    @property
    def cluster_name(self) -> str:
        return self._cluster_name

    @property
    def cluster_port(self) -> int:
        """The route port on 127.0.0.1."""
        return self._cluster_port

    @property
    def routes(self) -> list[str]:
        """Route URLs of the other nodes."""
        return list(self._routes)

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<ClusterNode {self._name} {self._port}/{self._http_port} {state}>"

    def monitor(self, path: str, **query: str) -> dict[str, Any] | None:
        """GET a monitoring endpoint (``"jsz"``, ``"healthz"``...) as JSON; ``None`` when the
        node does not answer or answers an error status."""
        return monitor_json(self, path, **query)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader this node knows of, or ``None``."""
        jsz = self.monitor("jsz")
        meta = jsz.get("meta_cluster") if jsz is not None else None
        leader = meta.get("leader") if isinstance(meta, dict) else None
        return leader if isinstance(leader, str) and leader else None

    def _environment(self) -> dict[str, str]:
        return {
            **super()._environment(),
            ENV_SERVER_NAME: conf_string(self._name),
            ENV_CLUSTER_NAME: conf_string(self._cluster_name),
            ENV_CLUSTER_PORT: str(self._cluster_port),
            ENV_ROUTES: conf_array(self._routes),
        }


class Cluster(ServerGroup):
    """``size`` (default 3) nats-server nodes with JetStream, routed into one cluster on loopback.

    ``root_dir`` holds one directory per node (its JetStream data, server log and lock file);
    without it a temporary directory is created, and :meth:`close` removes it. Ports are chosen
    at the first :meth:`start` and kept: a stopped cluster starts again on the same ports and data.

    Use it as a context manager (``with Cluster() as cluster:``, or ``async with``), or call
    :meth:`start` and :meth:`close`. :attr:`urls` lists the nodes' client URLs for
    ``nats.connect``/``secsync.connect``.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str] | None = None,
        *,
        size: int = DEFAULT_SIZE,
        name: str = DEFAULT_CLUSTER_NAME,
        config: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if size < MIN_SIZE:
            raise ValueError(f"a JetStream cluster needs at least {MIN_SIZE} nodes, not {size}")
        self._size = size
        self._name = name
        super().__init__(
            root_dir,
            prefix="secsync-cluster-",
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self._config = config_path(config, cluster_config_path)
        self._nodes: list[ClusterNode] = []
        #: How many servers the JetStream meta layer spans: this cluster's, unless it is one
        #: region of a super-cluster (secsync.servers.supercluster), whose meta layer spans
        #: every region.
        self._meta_size = size

    # --- properties ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The cluster name (``cluster.name`` of every node)."""
        return self._name

    @property
    def size(self) -> int:
        return self._size

    @property
    def root_dir(self) -> Path:
        return self._directory

    @property
    def nodes(self) -> list[ClusterNode]:
        """The nodes, in order (``n1``, ``n2``...); made at the first :meth:`start`."""
        if not self._nodes:
            raise TransportError("the cluster has not been started yet")
        return list(self._nodes)

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node (running or not), ``nats://127.0.0.1:PORT``."""
        return [node.url for node in self.nodes]

    @property
    def running(self) -> bool:
        """Whether every node is running."""
        return bool(self._nodes) and all(node.running for node in self._nodes)

    def node(self, name: str) -> ClusterNode:
        """The node whose server name is ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise TransportError(f"no node {name!r} in cluster {self._name}")

    def __repr__(self) -> str:
        return f"<Cluster {self._name} {self._nodes or 'not started'}>"

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start every node and wait until the cluster is healthy (see :meth:`wait_ready`).

        Raises :class:`TransportError`; nodes started by a failed call are stopped again.
        """
        if not self._config.is_file():
            raise TransportError(f"cluster config not found: {self._config}")
        if self._nodes and any(node.running for node in self._nodes):
            raise TransportError("the cluster is already running")
        binary = self.nats_server()
        started = time.monotonic()
        choose_ports = not self._nodes
        for attempt in range(1, START_ATTEMPTS + 1):
            if choose_ports:
                self._nodes = self._make_nodes(binary)
            try:
                run_all(self._nodes, lambda node: node.start())
                self.wait_ready(started + self.start_timeout - time.monotonic())
                break
            except TransportError as exc:
                run_all(self._nodes, lambda node: node.stop())
                lost_race = "address already in use" in str(exc)
                if not (lost_race and choose_ports) or attempt == START_ATTEMPTS:
                    if choose_ports:
                        self._nodes = []
                    raise
                log.info("cluster.ports_taken", attempt=attempt)
        log.info(
            "cluster.started",
            cluster=self._name,
            urls=self.urls,
            meta_leader=self._nodes[0].meta_leader(),
            seconds=round(time.monotonic() - started, 3),
        )
        return self

    def wait_ready(self, timeout: float = 20.0) -> str:
        """Wait until every running node is healthy and names the same meta leader; its name.

        Healthy: ``/healthz?js-enabled-only=true`` and the full ``/healthz`` (which also needs
        contact with the meta leader and current streams) answer ok, all route connections
        between the nodes are up, and a JetStream API request through each node is answered.
        Raises :class:`TransportError` after ``timeout`` seconds or when a node exits.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            running = [node for node in self.nodes if node.running]
            if len(running) < len(self._nodes):
                # Without every node, only the stopped ones may be missing on purpose.
                exited = [n for n in self._nodes if n._process is not None and not n.running]
                if exited:
                    raise TransportError(
                        f"node {exited[0].name} exited; log {exited[0].log_path}:\n"
                        f"{exited[0].last_run_log()}"
                    )
            leader, problem = self._check_ready(running)
            if leader is not None:
                problem = probe_api(running, deadline)
                if not problem:
                    return leader
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"cluster {self._name} did not become ready within {timeout:.1f} s: {problem}"
                    + "".join(
                        f"\n--- log {node.name} ({node.log_path}):\n{node.last_run_log()}"
                        for node in self._nodes
                    )
                )
            time.sleep(POLL_INTERVAL)

    def _check_ready(self, running: Sequence[ClusterNode]) -> tuple[str | None, str]:
        """(meta leader, "") when ``running`` nodes are ready, else (None, what is missing)."""
        if not running:
            return None, "no node is running"
        leaders: set[str] = set()
        for node in running:
            for query in ({"js-enabled-only": "true"}, {}):
                health = node.monitor("healthz", **query)
                if health is None or health.get("status") != "ok":
                    return None, f"{node.name} is not healthy ({health})"
            jsz = node.monitor("jsz")
            meta = jsz.get("meta_cluster") if jsz is not None else None
            if not isinstance(meta, dict) or not meta.get("leader"):
                return None, f"{node.name} knows no meta leader"
            if meta.get("cluster_size") != self._meta_size:
                return (
                    None,
                    f"{node.name} sees {meta.get('cluster_size')} of {self._meta_size} nodes",
                )
            leaders.add(str(meta["leader"]))
        if len(leaders) != 1:
            return None, f"the nodes name different meta leaders: {sorted(leaders)}"
        problem = self._check_routes(running)
        if problem:
            return None, problem
        return leaders.pop(), ""

    @staticmethod
    def _check_routes(running: Sequence[ClusterNode]) -> str:
        """Which pair of ``running`` nodes lacks route connections; empty when none does.

        Since nats-server 2.10 two nodes are joined by a pool of ``pool_size`` routes (3 by
        default) plus one per pinned account (the system account). The meta leader can be
        elected before the pool is complete (3 of 30 start-ups here, where a node's first
        attempt to dial a peer that was not listening yet is only retried after a second).
        """
        seen: dict[str, dict[str, int]] = {}
        pinned: set[str] = set()
        pool_size = 1
        for node in running:
            varz = node.monitor("varz")
            routez = node.monitor("routez")
            if varz is None or routez is None or not isinstance(routez.get("routes"), list):
                return f"{node.name} does not report its routes"
            cluster = varz.get("cluster")
            size = cluster.get("pool_size") if isinstance(cluster, dict) else None
            pool_size = max(pool_size, size if isinstance(size, int) else 1)
            counts: dict[str, int] = {}
            for route in routez["routes"]:
                if isinstance(route, dict) and isinstance(route.get("remote_name"), str):
                    counts[route["remote_name"]] = counts.get(route["remote_name"], 0) + 1
                    if isinstance(route.get("account"), str):
                        pinned.add(route["account"])
            seen[node.name] = counts
        wanted = pool_size + len(pinned)
        for node in running:
            for other in running:
                if other is not node and seen[node.name].get(other.name, 0) < wanted:
                    return (
                        f"{node.name} has {seen[node.name].get(other.name, 0)} of {wanted} "
                        f"routes to {other.name}"
                    )
        return ""

    def stop(self, timeout: float | None = None) -> None:
        """Stop every node (SIGTERM, all at once; SIGKILL after ``timeout``); the data stays."""
        if self._nodes:
            run_all(self._nodes, lambda node: node.stop(timeout))
            log.info("cluster.stopped", cluster=self._name)

    def kill(self) -> None:
        """SIGKILL every node and reap it; the data stays."""
        if self._nodes:
            run_all(self._nodes, lambda node: node.kill())

    def close(self) -> None:
        """Stop, and remove the root directory if it is a temporary one this cluster made."""
        self.stop()
        self.remove_directory()

    # --- leaders --------------------------------------------------------------------------------

    def meta_leader(self, timeout: float = 10.0) -> ClusterNode:
        """The node that leads the JetStream meta layer (after :meth:`wait_ready` succeeds)."""
        return self.node(self.wait_ready(timeout))

    def stream_leader(
        self, stream: str, *, account: str = DEFAULT_ACCOUNT, timeout: float = 10.0
    ) -> ClusterNode:
        """The node that leads ``stream`` (in ``account``), by the running nodes' ``/jsz``.

        Waits up to ``timeout`` seconds for a running leader that no running node contradicts
        (a new stream, or one whose leader was lost, has none for a moment, and a node may
        still name the lost one). Raises :class:`TransportError`.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            leaders: set[str] = set()
            for node in self.nodes:
                if node.running:
                    found = self.stream_leader_seen_by(node, stream, account)
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

    @staticmethod
    def stream_leader_seen_by(node: ClusterNode, stream: str, account: str) -> str | None:
        jsz = node.monitor("jsz", acc=account, streams="true")
        details = jsz.get("account_details") if jsz is not None else None
        for detail in details if isinstance(details, list) else ():
            if not isinstance(detail, dict) or detail.get("name") != account:
                continue
            for info in detail.get("stream_detail") or ():
                if isinstance(info, dict) and info.get("name") == stream:
                    cluster = info.get("cluster")
                    leader = cluster.get("leader") if isinstance(cluster, dict) else None
                    return leader if isinstance(leader, str) and leader else None
        return None

    # --- asyncio ----------------------------------------------------------------------------------

    async def astop(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.stop, timeout)

    async def await_ready(self, timeout: float = 20.0) -> str:
        return await asyncio.to_thread(self.wait_ready, timeout)

    async def astream_leader(
        self, stream: str, *, account: str = DEFAULT_ACCOUNT, timeout: float = 10.0
    ) -> ClusterNode:
        return await asyncio.to_thread(
            lambda: self.stream_leader(stream, account=account, timeout=timeout)
        )

    # --- internals --------------------------------------------------------------------------------

    def _make_nodes(self, binary: Path) -> list[ClusterNode]:
        """Nodes on fresh ports: client, monitoring and route port each, chosen at once."""
        ports = free_ports(3 * self._size)
        client, http, route = ports[0::3], ports[1::3], ports[2::3]
        return [
            ClusterNode(
                f"n{i + 1}",
                self._directory / f"n{i + 1}",
                cluster_name=self._name,
                port=client[i],
                http_port=http[i],
                cluster_port=route[i],
                route_ports=[p for j, p in enumerate(route) if j != i],
                config=self._config,
                binary=binary,
                stop_timeout=self.stop_timeout,
            )
            for i in range(self._size)
        ]
