"""Run the benchmark suite and write ``docs/benchmarks.md`` and ``docs/benchmarks.png``.

    python -m benchmarks.run            # the full run (about 8 minutes on 2 idle cores)
    python -m benchmarks.run --quick    # a smoke run (about 2 minutes), written to benchmarks/out/
    python -m benchmarks.run --json run.json   # also keep every number
    python -m benchmarks.run --render run.json # rewrite the report, measuring nothing
    python -m benchmarks.run --render docs/benchmarks.json --merge part.json
                                        # ... with sections measured on their own (--only)
    python benchmarks/run.py --help

Sections that fail are reported as failed in the report; the run goes on. Every report is
written with its numbers beside it (``benchmarks.json``), so it can be rendered again.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.common import FULL, QUICK, REPO
from benchmarks.sections import MODULE_SECTIONS, RunContext

SECTIONS = (
    "micro",
    "parallel",
    "trace",
    "snapshot",
    "automerge",
    "js",
    "e2e",
    "memory",
    "profile",
    "federation",
    *(s.key for s in MODULE_SECTIONS),
)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run with reduced sizes")
    parser.add_argument(
        "--out",
        type=Path,
        help="directory for benchmarks.md and benchmarks.png "
        "(default: docs/, or benchmarks/out/ with --quick)",
    )
    parser.add_argument("--json", type=Path, help="also write every number as JSON here")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: write the report again from a --json file of an earlier run",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        metavar="JSON",
        help="with --render: take the sections that this --json file of an --only run measured "
        "(repeatable); the report says they were measured on their own",
    )
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)"
    )
    args = parser.parse_args(argv)

    from benchmarks.e2e import quiet_logs

    quiet_logs()
    sizes = QUICK if args.quick else FULL
    out_dir = args.out or (REPO / "benchmarks" / "out" if args.quick else REPO / "docs")
    if args.merge and not args.render:
        parser.error("--merge needs --render")
    if args.render:
        saved = json.loads(args.render.read_text(encoding="utf-8"))
        for part in args.merge or ():
            merge(saved, json.loads(part.read_text(encoding="utf-8")))
        write_report(
            saved,
            args.out or (REPO / "benchmarks" / "out" if saved["mode"] != "full" else REPO / "docs"),
        )
        return 0
    wanted = set(args.only or SECTIONS)

    started = time.time()
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "mode": sizes.name,
        "sizes": dataclasses.asdict(sizes),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": os.getloadavg(),
        "machine": common.machine_info(),
        "versions": common.versions(),
        "command": "python -m benchmarks.run"
        + (" --quick" if args.quick else "")
        + "".join(f" --only {name}" for name in args.only or ()),
        "errors": {},
        "section_seconds": {},
    }

    def section(name: str, fn: Callable[[], Any]) -> Any:
        if name not in wanted:
            return None
        _log(f"{name} ...")
        start = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:
            traceback.print_exc()
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            value = None
        results["section_seconds"][name] = time.perf_counter() - start
        _log(f"{name} done in {results['section_seconds'][name]:.1f} s")
        return value

    # --- the trace, replayed once into pycrdt (the raw CRDT side) ---------------------------
    _log("loading and replaying the trace")
    trace = common.load_trace()
    total = len(trace["txns"])
    used = max((p or total) for p in sizes.trace_points)
    txns = trace["txns"][:used]
    points = [min(p or total, used) for p in sizes.trace_points]
    cold_base = used - max(sizes.cold_counts)
    micro_n = min(sizes.micro_messages, used)
    checkpoints = sorted(
        set(points)
        | {micro_n}
        | {cold_base + c for c in sizes.cold_counts}
        | {p for p in sizes.automerge_points if p <= used}
    )
    start = time.perf_counter()
    replay = common.replay_yjs(txns, checkpoints, state_points=[cold_base])
    results["section_seconds"]["replay"] = time.perf_counter() - start
    if used == total and replay.texts[total] != trace["endContent"]:
        raise SystemExit("the replayed trace does not end in the recorded text")
    one_keystroke = [
        i
        for i, txn in enumerate(txns)
        if len(txn["patches"]) == 1 and txn["patches"][0][1] == 0 and len(txn["patches"][0][2]) == 1
    ]
    results["trace"] = {
        "transactions_total": total,
        "transactions_used": used,
        "points": points,
        "final_chars": len(replay.texts[used]),
        "one_keystroke_transactions": len(one_keystroke),
    }
    _log(f"replayed {used:,} transactions in {results['section_seconds']['replay']:.1f} s")
    start = time.perf_counter()
    stream = common.build_stream(replay.changes, checkpoints=points)
    results["section_seconds"]["build_stream"] = time.perf_counter() - start

    # The harness's own data (the parsed trace, the replay, the encoded updates) is old by
    # now: keep it out of the collector's way, so that gc.collect() before each timed run is
    # cheap and measured code pays for its own garbage only. The collector stays on.
    gc.collect()
    gc.freeze()

    def prefix(n: int) -> common.Stream:
        return dataclasses.replace(stream, updates=stream.updates[:n])

    # --- sections ---------------------------------------------------------------------------
    from benchmarks import memory, micro, profiling
    from benchmarks import trace as trace_bench

    def run_micro() -> dict[str, Any]:
        return {
            "load": micro.load_stages(prefix(micro_n), sizes.micro_reps),
            "create": micro.create_stages(replay.changes[:micro_n], sizes.micro_reps),
        }

    results["micro"] = section("micro", run_micro)
    results["parallel"] = section(
        "parallel",
        lambda: micro.parallel_verification(
            prefix(min(sizes.parallel_messages, used)), sizes.parallel_reps
        ),
    )
    results["yjs"] = section(
        "trace",
        lambda: trace_bench.yjs_trace(
            txns, replay, stream, points, reps=sizes.trace_reps, one_keystroke=one_keystroke
        ),
    )
    results["snapshot"] = section(
        "snapshot", lambda: trace_bench.snapshot_bench(replay, sizes.snapshot_reps)
    )
    results["automerge"] = section(
        "automerge",
        lambda: trace_bench.automerge_trace(
            txns,
            [p for p in sizes.automerge_points if p <= used],
            sizes.trace_reps,
            replay.texts,
        ),
    )

    def run_js() -> dict[str, Any]:
        from benchmarks import js_reference

        return js_reference.run(
            replay.changes[:micro_n],
            replay.texts[micro_n],
            replay.final_state,
            replay.texts[max(replay.texts)],
            reps=sizes.micro_reps,
            snapshot_reps=sizes.snapshot_reps,
        )

    results["js_reference"] = section("js", run_js)
    keystroke_sizes = sorted(len(stream.updates[i]) for i in one_keystroke)
    payload_size = keystroke_sizes[len(keystroke_sizes) // 2] if keystroke_sizes else 240
    results["e2e_payload_bytes"] = payload_size
    results["e2e_burst"] = sizes.e2e_burst

    def run_e2e() -> dict[str, Any]:
        from benchmarks.e2e import run_e2e as e2e

        return asyncio.run(e2e(sizes, payload_size, replay, cold_base))

    results["e2e"] = section("e2e", run_e2e)
    mem_n = min(sizes.memory_point or used, used)
    results["memory"] = section(
        "memory", lambda: memory.measure(prefix(mem_n), replay.changes[:mem_n])
    )

    def run_profile() -> dict[str, Any]:
        n = min(sizes.profile_messages, used)
        return {
            "load": profiling.profile_load(prefix(n)),
            "create": profiling.profile_create(replay.changes[:n]),
        }

    results["profile"] = section("profile", run_profile)

    def run_federation() -> dict[str, Any]:
        from benchmarks import federation

        return federation.run(quick=sizes.name == "quick")

    results["federation"] = section("federation", run_federation)

    context = RunContext(sizes=sizes, txns=txns, replay=replay, stream=stream)
    for module_section in MODULE_SECTIONS:
        results[module_section.key] = section(
            module_section.key, lambda s=module_section: s.measure(context)
        )

    results["duration_s"] = time.perf_counter() - t0
    results["loadavg_end"] = os.getloadavg()
    results["finished_epoch"] = started + results["duration_s"]

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    write_report(results, out_dir)
    _log(f"total {results['duration_s']:.0f} s")
    return 1 if results["errors"] else 0


# Where each section keeps its numbers in the results, when not under its own name.
RESULT_KEYS = {
    "trace": ("yjs",),
    "js": ("js_reference",),
    "e2e": ("e2e", "e2e_payload_bytes", "e2e_burst"),
}


def merge(results: dict[str, Any], part: dict[str, Any]) -> None:
    """Put the sections that ``part`` (an ``--only`` run) measured into ``results``, and note
    where they came from (``merged``: section -> command, date, same machine or not)."""
    ran = [name for name in part.get("section_seconds", {}) if name in SECTIONS]
    for name in ran:
        for key in RESULT_KEYS.get(name, (name,)):
            results[key] = part.get(key)
        results.setdefault("section_seconds", {})[name] = part["section_seconds"][name]
        errors = results.setdefault("errors", {})
        errors.pop(name, None)
        if name in part.get("errors", {}):
            errors[name] = part["errors"][name]
        results.setdefault("merged", {})[name] = {
            "command": part.get("command", "python -m benchmarks.run"),
            "started": part.get("started", "?"),
            "same_machine": part.get("machine") == results.get("machine"),
        }


def write_report(results: dict[str, Any], out_dir: Path) -> None:
    from benchmarks import report

    out_dir.mkdir(parents=True, exist_ok=True)
    typed = report.results_of(results)
    png = out_dir / "benchmarks.png"
    plot_note = report.plot(typed, png)
    markdown = report.render(typed, png.name if plot_note is None else None, plot_note)
    (out_dir / "benchmarks.md").write_text(markdown, encoding="utf-8")
    numbers = out_dir / "benchmarks.json"
    numbers.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    _log(f"wrote {out_dir / 'benchmarks.md'}" + (f" and {png}" if plot_note is None else ""))


if __name__ == "__main__":
    sys.exit(main())
