"""Sections that a benchmark module measures and renders itself: the hook for new sections.

A module becomes a section of ``python -m benchmarks.run`` and of ``benchmarks.md`` with one
entry in ``MODULE_SECTIONS`` and two functions of its own:

    def run(*, quick: bool) -> dict[str, Any]:      # JSON-able numbers; quick = smoke run
    def render(numbers: dict[str, Any]) -> str:      # markdown, first line "## Title"

``run`` may also take ``context: RunContext`` (the run's trace, replay and sizes) to reuse the
replayed trace instead of loading it again. The report numbers the ``## Title`` after the
built-in sections, in the order of ``MODULE_SECTIONS``; ``--only KEY`` runs the section alone,
``--json`` keeps ``{"markdown": ..., "numbers": ...}`` under its key, and ``--render`` writes it
again without measuring.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.common import Sizes, Stream, YjsReplay
    from benchmarks.report.results import Fragment


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What the run has already prepared: sizes, the trace slice used, its replay into pycrdt
    (one Yjs update per transaction, texts at the checkpoints) and those updates sealed."""

    sizes: Sizes
    txns: Sequence[dict[str, Any]]
    replay: YjsReplay
    stream: Stream

    @property
    def quick(self) -> bool:
        return self.sizes.name == "quick"


@dataclasses.dataclass(frozen=True)
class ModuleSection:
    """One module section: ``key`` names it for ``--only`` and in the results, ``title`` heads
    it in a run where it did not run; ``run`` and ``render`` name the module's functions."""

    key: str
    module: str
    title: str
    run: str = "run"
    render: str = "render"

    def measure(self, context: RunContext) -> Fragment:
        module = importlib.import_module(self.module)
        run = getattr(module, self.run)
        if "context" in inspect.signature(run).parameters:
            numbers = run(quick=context.quick, context=context)
        else:
            numbers = run(quick=context.quick)
        return {"markdown": getattr(module, self.render)(numbers), "numbers": numbers}


MODULE_SECTIONS: tuple[ModuleSection, ...] = (
    ModuleSection(
        "capacity", "benchmarks.capacity", "Capacity of one server and one stream", run="section"
    ),
    ModuleSection("open_bound", "benchmarks.open_bound", "Opening with many stored snapshots"),
    ModuleSection("yjs_v2", "benchmarks.yjs_v2", "Yjs update format v2 codec"),
    ModuleSection("gateway", "benchmarks.gateway", "JS clients through the gateway"),
    ModuleSection(
        "snapshot_interval", "benchmarks.snapshot_interval", "How often to write a snapshot"
    ),
    ModuleSection("service", "benchmarks.service", "One process following many documents"),
)
