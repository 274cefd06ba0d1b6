"""§5 (peak memory of a full-trace load) and §6 (cProfile of the hot paths)."""

from __future__ import annotations

from typing import Literal

from benchmarks.report.format import Add, f1, f2, table
from benchmarks.report.results import ProfileSide, Results


def memory(r: Results, add: Add) -> None:
    add("## 5. Memory")
    add("")
    mem = r.memory
    if not mem:
        add("*Not measured in this run.*")
        add("")
        return
    sec = mem["secsync"]
    add(
        f"Peak RSS (`ru_maxrss`) of a fresh process per row, loading {sec['applied']:,} updates "
        f"({sec['chars']:,} characters). Every process imports secsync and pycrdt and reads its "
        "input (length-prefixed frames) before the clock starts; “growth” is the peak minus the "
        "RSS after reading the input. Each process is started through a small launcher process: "
        "Linux hands the RSS high-water mark of the address space that `execve` replaces on to "
        "the new program's `ru_maxrss`, so a child started directly from the large benchmark "
        "process would report the benchmark's own peak. `VmHWM` (from `/proc/self/status`) is "
        "the same peak read another way."
    )
    add("")
    names = {
        "idle": "imports + input only (no load)",
        "raw": "raw pycrdt `apply_update` of the Yjs updates",
        "secsync": "secsync: one `receive_many` of all wire updates",
        "secsync-batches": "secsync: `receive_many` in pages of 256, events dropped",
    }
    rows = []
    for mode in ("idle", "raw", "secsync", "secsync-batches"):
        row = mem.get(mode)
        if not row:
            continue
        rows.append(
            [
                names[mode],
                f"{row['input_bytes'] / 2**20:,.1f}",
                f"{row['rss_after_input_kib'] / 1024:,.1f}",
                f"{row['peak_kib'] / 1024:,.1f}",
                f"{(row['peak_kib'] - row['rss_after_input_kib']) / 1024:,.1f}",
                f"{row.get('vm_hwm_kib', 0) / 1024:,.1f}",
                f2(row["seconds"], " s") if mode != "idle" else "",
            ]
        )
    for line in table(
        [
            "process",
            "input MiB",
            "RSS after input MiB",
            "peak (ru_maxrss) MiB",
            "growth MiB",
            "VmHWM MiB",
            "load time",
        ],
        rows,
    ):
        add(line)
    if mem.get("secsync") and mem.get("raw"):
        grow = mem["secsync"]["peak_kib"] - mem["secsync"]["rss_after_input_kib"]
        grow_raw = mem["raw"]["peak_kib"] - mem["raw"]["rss_after_input_kib"]
        paged = mem.get("secsync-batches")
        add(
            f"One `receive_many` of everything grows the process by {grow / 1024:,.1f} MiB "
            f"against {grow_raw / 1024:,.1f} MiB for pycrdt alone, "
            f"{(grow - grow_raw) * 1024 / max(1, sec['applied']):,.0f} bytes per update more"
            + (
                f"; in pages with the events dropped it grows by "
                f"{(paged['peak_kib'] - paged['rss_after_input_kib']) / 1024:,.1f} MiB. The "
                "difference is the returned event list: one `UpdateApplied` object per update "
                "(its author key and snapshot id are shared with the other events, its clock "
                "is its own). A `Document` keeps at most `event_queue_size` events (10,000 by "
                "default) for the application."
                if paged
                else "."
            )
        )
        add("")


def _profile_table(
    prof: ProfileSide, key: Literal["by_cumulative", "by_self"], add: Add, limit: int
) -> None:
    rows = [
        [
            f"`{row['function']}`",
            f2(row["calls_per_update"]) if row["calls_per_update"] >= 0.01 else "once per call",
            f2(row["tottime_us"]),
            f2(row["cumtime_us"]),
        ]
        for row in prof[key][:limit]
    ]
    for line in table(
        ["function", "calls / update", "self µs / update", "cumulative µs / update"], rows, "lrrr"
    ):
        add(line)


def profile(r: Results, add: Add) -> None:
    add("## 6. Profile of the hot paths")
    add("")
    prof = r.profile
    if not prof:
        add("*Not measured in this run.*")
        add("")
        return
    add(
        "`cProfile` (standard library) over the first "
        f"{prof['load']['items']:,} trace updates. The profiler inflates every Python call: "
        f"load runs at {f1(prof['load']['profiled_us'])} µs per update under it versus "
        f"{f1(prof['load']['plain_us'])} µs without; create at "
        f"{f1(prof['create']['profiled_us'])} versus {f1(prof['create']['plain_us'])}. Read the "
        "ranking and the call counts, not the absolute times."
    )
    add("")
    add("### Load (`DocumentSession.receive_many`), top by cumulative time")
    add("")
    _profile_table(prof["load"], "by_cumulative", add, 18)
    add("Top by self time:")
    add("")
    _profile_table(prof["load"], "by_self", add, 12)
    add("### Create (`data_to_send` + `wire.encode` + `update_stored`), top by cumulative time")
    add("")
    _profile_table(prof["create"], "by_cumulative", add, 18)
    add("Top by self time:")
    add("")
    _profile_table(prof["create"], "by_self", add, 12)
