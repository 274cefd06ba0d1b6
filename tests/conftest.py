"""Shared fixtures: throwaway nats-server brokers (see secsync.servers.broker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from secsync.servers.broker import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A started broker of its own for one test; its data and log stay under ``tmp_path``."""
    started = Broker(tmp_path / "broker").start()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the whole session: use unique stream names and leave it running."""
    started = Broker(tmp_path_factory.mktemp("shared-broker")).start()
    try:
        yield started
    finally:
        started.close()
