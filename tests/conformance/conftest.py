"""Fixtures of the conformance suite: the relay, the cast, and the report row of each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from secsync.servers.broker import Broker
from tests.conformance import plugin
from tests.conformance.harness import World
from tests.conformance.plugin import Conformance, conformance
from tests.conformance.relay import HostileRelay

__all__ = ["Conformance", "conformance"]


def pytest_configure(config: pytest.Config) -> None:
    plugin.register(config)


@pytest.fixture
async def relay(shared_broker: Broker) -> AsyncIterator[HostileRelay]:
    started = await HostileRelay("127.0.0.1", shared_broker.port).start()
    try:
        yield started
    finally:
        await started.close()
    assert not started.errors, started.errors


@pytest.fixture
async def world(shared_broker: Broker, relay: HostileRelay) -> AsyncIterator[World]:
    cast = World(shared_broker.url, relay)
    try:
        yield cast
    finally:
        await cast.close()
