"""Fixtures of the fuzz suite: count the generated inputs, bound time and memory per input."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from secsync.errors import SecsyncError
from tests.conformance import plugin, report
from tests.conformance.plugin import conformance

__all__ = ["Inputs", "conformance", "inputs"]

T = TypeVar("T")

# Per input: generous bounds for a loaded 2-core machine; a bomb takes far longer or far more.
MAX_SECONDS = 2.0
MAX_BYTES_BASE = 4 * 1024 * 1024
MAX_BYTES_PER_INPUT_BYTE = 64


def pytest_configure(config: pytest.Config) -> None:
    plugin.register(config)


@dataclass
class Inputs:
    """Counts the inputs a fuzz test fed to the code under test, and bounds each one."""

    count: int = 0
    """Generated inputs (Hypothesis examples) this test ran."""
    calls: int = 0
    """Calls of code under test (an example may feed several decoders or several parts)."""
    slowest: float = 0.0
    largest: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def example(self) -> None:
        """Count one generated input (call once at the start of each example)."""
        self.count += 1

    def feed(self, function: Callable[..., T], data: Any, *args: Any, **kwargs: Any) -> T | None:
        """Call ``function(data, ...)``: its result, or ``None`` when it raised a SecsyncError.

        Any other exception fails the test; so does an input that takes longer than
        ``MAX_SECONDS`` or allocates more than ``MAX_BYTES_BASE + 64 * len(data)`` bytes at peak.
        """
        self.calls += 1
        size = len(data) if isinstance(data, bytes | bytearray | str | list | tuple) else 0
        # trace only the call (tracing Hypothesis's own work would slow everything down)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            result: T | None = function(data, *args, **kwargs)
            outcome = "accepted"
        except SecsyncError as exc:
            result, outcome = None, f"{type(exc).__name__} {exc.code}"
        finally:
            elapsed = time.perf_counter() - started
            _, allocated = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.slowest = max(self.slowest, elapsed)
        self.largest = max(self.largest, allocated)
        assert elapsed < MAX_SECONDS, f"{elapsed:.2f} s for an input of {size} bytes"
        limit = MAX_BYTES_BASE + MAX_BYTES_PER_INPUT_BYTE * size
        assert allocated <= limit, f"{allocated} bytes allocated for an input of {size} bytes"
        return result


@pytest.fixture
def inputs(request: pytest.FixtureRequest) -> Iterator[Inputs]:
    counter = Inputs()
    started = time.perf_counter()
    try:
        yield counter
    finally:
        name = request.node.name
        report.REGISTRY.add_fuzz(name, counter.count)
        report.REGISTRY.fuzz_calls[name] = report.REGISTRY.fuzz_calls.get(name, 0) + counter.calls
        report.REGISTRY.fuzz_seconds[name] = report.REGISTRY.fuzz_seconds.get(name, 0.0) + (
            time.perf_counter() - started
        )
