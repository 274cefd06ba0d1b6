"""Pytest hooks of the conformance report, registered once by either suite's conftest."""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import report

NAME = "secsync-conformance-report"
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def register(config: pytest.Config) -> None:
    """Register the hooks once, whichever of tests/conformance and tests/fuzz loads first."""
    if not config.pluginmanager.has_plugin(NAME):
        config.pluginmanager.register(_Plugin(), NAME)


class _Plugin:
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        item.stash.setdefault(REPORTS, {})[rep.when] = rep
        return rep

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        durations = _registry().durations
        durations[report.nodeid] = durations.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        registry = _registry()
        if registry.written or (not registry.rows and not registry.fuzz):
            return
        registry.written = True
        data = registry.to_json()
        base = _basetemp(session.config)
        if base is not None:
            (base / report.JSON_NAME).write_text(json.dumps(data, indent=1))
        if os.environ.get(report.ENV_WRITE) == "1":
            report.write_doc(data)


def _registry() -> report.Registry:
    return report.REGISTRY


def _basetemp(config: pytest.Config) -> Path | None:
    factory: Any = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return None
    try:
        return Path(factory.getbasetemp())
    except OSError:
        return None


def outcome_of(item: pytest.Item) -> tuple[str, str]:
    """(outcome, bug) of a finished test's call phase, for its report row."""
    reports = item.stash.get(REPORTS, {})
    rep = reports.get("call") or reports.get("setup")
    marker = item.get_closest_marker("xfail")
    bug = str(marker.kwargs.get("reason", "")) if marker is not None else ""
    if rep is None:
        return "not run", bug
    if rep.when == "setup" and rep.failed:
        return "error", bug
    if hasattr(rep, "wasxfail"):
        return ("known bug" if rep.skipped else "XPASS: remove the xfail"), bug
    if rep.failed and "XPASS" in str(rep.longrepr):
        return "XPASS (strict): the bug looks fixed, remove the xfail", bug
    if rep.passed:
        return "pass", bug
    if rep.skipped:
        return "skipped", bug
    return "FAIL", bug


@dataclass
class Conformance:
    """The report row of one scenario test: declare it first, add observations as you go."""

    row: report.Row

    def declare(self, id: str, title: str, *, attack: str, expected: str) -> None:
        self.row.id, self.row.title = id, title
        self.row.attack, self.row.expected = attack, expected

    def observe(self, text: str) -> None:
        self.row.observed = f"{self.row.observed}; {text}" if self.row.observed else text


@pytest.fixture
def conformance(request: pytest.FixtureRequest) -> Iterator[Conformance]:
    """The row this test adds to docs/conformance.md (outcome filled in after the test)."""
    record = Conformance(report.Row(id="?", title=request.node.name, attack="", expected=""))
    yield record
    record.row.test = request.node.nodeid
    record.row.outcome, record.row.bug = outcome_of(request.node)
    reports = request.node.stash.get(REPORTS, {})
    record.row.seconds = round(sum(r.duration for r in reports.values()), 2)
    report.REGISTRY.rows.append(record.row)
