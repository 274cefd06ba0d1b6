"""One region of a super-cluster: its nodes (:class:`SuperClusterNode`, a cluster node with a
region tag and a gateway) and the region itself (:class:`Region`, a cluster that the
super-cluster starts and stops)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, Self

from secsync.servers.binary import LOOPBACK, conf_array, conf_string, config_file
from secsync.servers.cluster import Cluster, ClusterNode

ENV_SERVER_TAG = "SECSYNC_NATS_SERVER_TAG"
ENV_GATEWAY_PORT = "SECSYNC_NATS_GATEWAY_PORT"
ENV_GATEWAY_ADVERTISE = "SECSYNC_NATS_GATEWAY_ADVERTISE"
ENV_GATEWAYS = "SECSYNC_NATS_GATEWAYS"


def supercluster_config_path() -> Path:
    return config_file("supercluster.conf")


def region_tag(region: str) -> str:
    """The server tag of ``region``'s servers, for ``Placement(tags=[...])``."""
    return f"region:{region}"


class RegionOwner(Protocol):
    """What a :class:`Region` asks of its super-cluster (a
    :class:`~secsync.servers.supercluster.SuperCluster`): the whole meta layer spans every
    region, so starting, stopping and waiting go through it."""

    def start_region(self, region: str, timeout: float | None = None) -> str: ...

    def stop_region(self, region: str, timeout: float | None = None) -> None: ...

    def kill_region(self, region: str) -> None: ...

    def wait_ready(self, timeout: float = 30.0) -> str: ...

    def meta_leader(self, timeout: float = 10.0) -> ClusterNode: ...


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
            f"{conf_array([f'nats://{LOOPBACK}:{p}' for p in ports])}}}"
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
        supercluster: RegionOwner,
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
    def supercluster(self) -> RegionOwner:
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

    def assign(self, nodes: list[SuperClusterNode], meta_size: int) -> None:
        self._nodes = list(nodes)
        self._meta_size = meta_size
