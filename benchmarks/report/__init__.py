"""Render the results of a run as ``benchmarks.md`` (and ``benchmarks.png`` with matplotlib).

``results`` builds the typed results once from the run's dict; ``format`` holds the number
formats and the one table builder; ``plots`` the picture; every other module renders sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.report import e2e, fragments, js, overview, per_message, resources, trace, why
from benchmarks.report.results import Results
from benchmarks.sections import MODULE_SECTIONS

FIRST_MODULE_SECTION = 9  # §1-§8 are built in; module sections follow, then the JS reference


def results_of(raw: Mapping[str, Any] | Results) -> Results:
    """The typed results of a run's dict (built once; a ``Results`` is returned as it is)."""
    if isinstance(raw, Results):
        return raw
    return Results.from_json(raw, tuple(s.key for s in MODULE_SECTIONS))


def plot(raw: Mapping[str, Any] | Results, path: Path) -> str | None:
    """Write the PNG; returns None on success, else the reason it was skipped."""
    from benchmarks.report import plots

    return plots.plot(results_of(raw), path)


def render(raw: Mapping[str, Any] | Results, png: str | None, plot_note: str | None) -> str:
    r = results_of(raw)
    out: list[str] = []
    add = out.append
    overview.header(r, add)
    overview.summary(r, add)
    overview.machine(r, add)
    per_message.per_message(r, add, png, plot_note)
    trace.trace(r, add)
    per_message.parallel(r, add)
    e2e.end_to_end(r, add)
    resources.memory(r, add)
    resources.profile(r, add)
    why.why(r, add)
    fragments.federation(r, add)
    number = FIRST_MODULE_SECTION
    for section in MODULE_SECTIONS:
        fragments.fragment(r, add, section.key, number, section.title)
        number += 1
    js.js_reference(r, add, number)
    overview.reproduce(r, add)
    return "\n".join(out).rstrip() + "\n"
