"""``secsync broker``: run one nats-server, a cluster, a super-cluster or a hub with leaves on
this machine until Ctrl-C, printing the URLs clients use."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

from secsync.errors import TransportError
from secsync.servers.binary import LOOPBACK, free_port
from secsync.servers.broker import Broker
from secsync.servers.cluster import Cluster
from secsync.servers.leaf import LeafTopology
from secsync.servers.options import (
    DEFAULT_DATA_DIR,
    DEFAULT_HTTP_PORT,
    DEFAULT_PORT,
    DEFAULT_REGIONS,
    TOPOLOGIES,
    add_broker_arguments,
    default_data_dir,
)
from secsync.servers.region import region_tag
from secsync.servers.supercluster import SuperCluster

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def cmd_broker(args: argparse.Namespace) -> int:
    """Run ``secsync broker`` from parsed :func:`add_broker_arguments` options (errors raise,
    for ``secsync.cli.main`` to report)."""
    topology = getattr(args, "topology", "single")
    if topology != "single" and (args.port or args.http_port):
        raise TransportError(
            "--port and --http-port apply to --topology single only; "
            "the other topologies choose free ports and print them"
        )
    port = DEFAULT_PORT if args.port is None else args.port
    http_port = DEFAULT_HTTP_PORT if args.http_port is None else args.http_port
    if topology == "single":
        for option, number in (("--port", port), ("--http-port", http_port)):
            if number:
                check_port_free(number, option)
    return serve_broker(
        topology=topology,
        data_dir=args.data_dir if args.data_dir is not None else default_data_dir(topology),
        port=port,
        http_port=http_port,
        config=args.config,
        regions=tuple(r.strip() for r in getattr(args, "regions", "a,b").split(",") if r.strip()),
        leaves=getattr(args, "leaves", 1),
    )


def check_port_free(port: int, option: str = "--port") -> None:
    """Raise a one-line :class:`TransportError` naming ``port`` if it is taken on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As nats-server (Go) listens: a port that only lingers in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise TransportError(
                f"port {port} on {LOOPBACK} is not available ({exc.strerror or exc}); "
                f"choose another with {option} N, or {option} 0 for any free port"
            ) from None


def run_broker(argv: Sequence[str] | None = None) -> int:
    """``secsync broker [--topology T] [--data-dir DIR] [--port N] [--http-port N] ...``."""
    parser = argparse.ArgumentParser(
        prog="secsync broker",
        description="Run a local nats-server (or several) with JetStream for secsync.",
    )
    add_broker_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_broker(args)
    except (TransportError, OSError, ValueError) as exc:
        print(f"secsync broker: {exc}", file=sys.stderr)
        return 1


def serve_broker(
    *,
    topology: str = "single",
    data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
    port: int = DEFAULT_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    config: str | os.PathLike[str] | None = None,
    regions: Sequence[str] = DEFAULT_REGIONS,
    leaves: int = 1,
) -> int:
    """Run a broker (or a whole topology) until Ctrl-C or SIGTERM, then stop it cleanly.

    Prints the client URLs and how long the start took once everything is ready. Returns an
    exit code: 0 after a requested stop, 1 if a server exited on its own."""
    if topology == "single":
        broker = Broker(
            data_dir,
            config=config,
            port=port or free_port(),
            http_port=http_port or free_port(),
        )

        def start() -> list[str]:
            broker.start()
            return [
                f"secsync broker listening on {broker.url} (pid {broker.pid})",
                f"  monitoring: {broker.monitor_url}",
                f"  data:       {broker.store_dir}",
                f"  server log: {broker.log_path}",
            ]

        def servers() -> list[Broker]:
            return [broker]

        close: Callable[[], object] = broker.stop
    else:
        made = build_topology(topology, data_dir, regions=regions, leaves=leaves, config=config)

        def start() -> list[str]:
            made.start()
            found = topology_servers(made)
            return [
                f"secsync broker: {topology} of {len(found)} servers",
                *describe_topology(made),
                f"  data:       {made.root_dir}",
            ]

        def servers() -> list[Broker]:
            return topology_servers(made)

        close = made.close
    return _serve(start, servers, close)


def _serve(
    start: Callable[[], list[str]],
    servers: Callable[[], list[Broker]],
    close: Callable[[], object],
) -> int:
    """Start, report, wait for a signal or an unexpected exit, stop."""
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous: dict[signal.Signals, _SignalHandler] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
    try:
        started = time.monotonic()
        lines = start()
        seconds = time.monotonic() - started
        for line in lines:
            print(line, flush=True)
        print(f"ready in {seconds:.2f} s. Press Ctrl-C to stop.", flush=True)
        while not stop_requested.is_set():
            running = servers()
            if len(running) == 1:
                code = running[0].wait(timeout=0.25)
            else:
                stop_requested.wait(0.25)
                exited = [s for s in running if not s.running]
                code = exited[0].wait(0) if exited else None
                running = exited or running
            if code is not None and not stop_requested.is_set():
                print(
                    f"nats-server exited unexpectedly (code {code}); see {running[0].log_path}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
        print("stopping ...", flush=True)
        everything = servers()
        with ThreadPoolExecutor(max_workers=len(everything)) as pool:  # all at once
            codes = list(pool.map(lambda server: server.stop(), everything))
        close()
        if len(codes) == 1:
            print(f"stopped (nats-server exit code {codes[0]})", flush=True)
        else:
            print(f"stopped ({len(codes)} servers, exit codes {codes})", flush=True)
        return 0
    finally:
        close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
