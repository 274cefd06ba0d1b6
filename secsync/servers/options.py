"""The options of ``secsync broker``, apart from :mod:`secsync.servers.broker` so that the
command line can list them without importing what runs a broker."""

from __future__ import annotations

import argparse

DEFAULT_DATA_DIR = ".secsync-broker-data"
DEFAULT_PORT = 4222
DEFAULT_HTTP_PORT = 8222

#: What ``secsync broker --topology`` starts (see :mod:`secsync.servers` for all but ``single``).
TOPOLOGIES = ("single", "cluster", "supercluster", "leaf")
DEFAULT_REGIONS = ("a", "b")


def default_data_dir(topology: str = "single") -> str:
    """Where ``secsync broker --topology TOPOLOGY`` keeps its data unless told otherwise."""
    return DEFAULT_DATA_DIR if topology == "single" else f"{DEFAULT_DATA_DIR}/{topology}"


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``secsync broker`` (for wiring into the main CLI)."""
    parser.add_argument(
        "--topology",
        choices=TOPOLOGIES,
        default="single",
        help="single: one server (default); cluster: 3 nodes; supercluster: two regions of 3 "
        "nodes joined by gateways; leaf: a hub and a device-local leaf server",
    )
    parser.add_argument(
        "--data-dir",
        help="data and server logs, kept across runs (default: ./.secsync-broker-data, and "
        "./.secsync-broker-data/<topology> for the other topologies)",
    )
    parser.add_argument(
        "--port",
        type=int,
        help=f"client port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free); "
        "single server only, the other topologies use free ports",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        help=f"monitoring port on 127.0.0.1 (default {DEFAULT_HTTP_PORT}; 0: any free); "
        "single server only",
    )
    parser.add_argument(
        "--config",
        help="nats-server config of the single server or of each (super-)cluster node "
        "(default: the topology's file that ships with secsync, from broker-config/)",
    )
    parser.add_argument(
        "--regions",
        default=",".join(DEFAULT_REGIONS),
        help="supercluster: comma-separated region names (default: a,b)",
    )
    parser.add_argument(
        "--leaves", type=int, default=1, help="leaf: how many leaf servers (default: 1)"
    )
