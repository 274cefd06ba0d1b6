"""Shared by the modules that start many nats-servers: none may outlive its module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def nats_server_children() -> set[int]:
    """Live nats-server processes whose parent is this test process (Linux /proc)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        state, ppid = stat[stat.rfind(")") + 2 :].split()[:2]
        if comm == "nats-server" and int(ppid) == os.getpid() and state != "Z":
            found.add(int(entry.name))
    return found


@pytest.fixture(scope="module", autouse=True)
def no_server_left_running() -> Iterator[None]:
    """Every nats-server the module starts is stopped by the time it ends (torn down last).
    Import it into a module to use it there."""
    before = nats_server_children()
    yield
    assert nats_server_children() - before == set()
