"""A hub with device-local leaf servers on loopback (:class:`LeafTopology`): the hub
(``broker-config/hub.conf``: the single server with a leaf-node listener and the JetStream
domain ``hub``) and one or more leaf servers without JetStream (``broker-config/leaf.conf``).
Ready when every leaf connection is up on both ends (``/leafz``) and a JetStream API request
through every leaf is answered by the hub.

The leaf's hub can be stopped, killed and started again (:meth:`LeafTopology.stop_hub`,
:meth:`LeafTopology.start_hub`). While it is away, JetStream requests from a leaf's clients fail
at once with "no responders" (nats-py: ``NoRespondersError``; its JetStream API calls raise
``ServiceUnavailableError``, publishes ``NoStreamResponseError``), and core NATS traffic between
clients of one leaf keeps working.

Every server is a :class:`~secsync.servers.broker.Broker`; blocking methods have ``a``-prefixed
coroutine twins that run them in a thread.
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
from secsync.servers.launch import (
    POLL_INTERVAL,
    START_ATTEMPTS,
    ServerGroup,
    check_name,
    config_path,
    run_all,
)
from secsync.servers.monitor import monitor_json, probe_api, server_logs

log = get_logger("secsync.topology")

ENV_LEAF_PORT = "SECSYNC_NATS_LEAF_PORT"
ENV_LEAF_REMOTES = "SECSYNC_NATS_LEAF_REMOTES"
# Read by leaf.conf; cluster nodes pass it too (secsync.servers.cluster).
ENV_SERVER_NAME = "SECSYNC_NATS_SERVER_NAME"

#: The JetStream domain of the hub (fixed in broker-config/hub.conf and leaf.conf).
HUB_DOMAIN = "hub"
#: The hub's ``server_name`` (broker-config/hub.conf).
HUB_NAME = "secsync-hub"


def hub_config_path() -> Path:
    return config_file("hub.conf")


def leaf_config_path() -> Path:
    return config_file("leaf.conf")


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
        check_name("leaf", name)
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
            ENV_LEAF_REMOTES: conf_array(self._remotes),
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
        super().__init__(
            root_dir,
            prefix="secsync-leaf-",
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self._leaf_count = leaves
        self._hub_config = config_path(hub_config, hub_config_path)
        self._leaf_config = config_path(leaf_config, leaf_config_path)
        self._hub: HubNode | None = None
        self._leaves: list[LeafNode] = []

    # --- properties ---------------------------------------------------------------------------

    @property
    def root_dir(self) -> Path:
        return self._directory

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
        binary = self.nats_server()
        started = time.monotonic()
        choose_ports = self._hub is None
        for attempt in range(1, START_ATTEMPTS + 1):
            if choose_ports:
                self._make_servers(binary)
            try:
                # The hub first, so that the leaves connect at their first attempt.
                self.hub.start()
                run_all(self.leaves, lambda leaf: leaf.start())
                self.wait_ready(started + self.start_timeout - time.monotonic())
                break
            except TransportError as exc:
                run_all(self.servers, lambda server: server.stop())
                lost_race = "address already in use" in str(exc)
                if not (lost_race and choose_ports) or attempt == START_ATTEMPTS:
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
                    f"{name} exited; log {exited[0].log_path}:\n{exited[0].last_run_log()}"
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
                    + server_logs(self.servers)
                )
            time.sleep(POLL_INTERVAL)

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
            time.sleep(POLL_INTERVAL)

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
            run_all(self._leaves, lambda leaf: leaf.stop(timeout))
            self._hub.stop(timeout)
            log.info("leaf_topology.stopped")

    def kill(self) -> None:
        """SIGKILL every server; the data stays."""
        if self._hub is not None:
            run_all(self.servers, lambda server: server.kill())

    def close(self) -> None:
        """Stop; remove the root directory if this made it."""
        self.stop()
        self.remove_directory()

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
            self._directory / "hub",
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
                self._directory / f"leaf{i + 1}",
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
