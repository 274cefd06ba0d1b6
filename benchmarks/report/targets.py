"""The targets of the report (performance goals 1-4) and how each was met or missed."""

from __future__ import annotations

from typing import Any, TypedDict

from benchmarks.report.format import get, ok
from benchmarks.report.results import Results


class Target(TypedDict):
    key: str
    what: str
    goal: str
    value: float | None
    unit: str
    status: str
    by: str
    met: bool


def projected_parallel_load(r: Results) -> float | None:
    """Load with ``verify_threads=1`` (two threads): the package's own parallel ``receive_many``,
    measured in §3."""
    value = get(r.parallel, "load_parallel_us")
    return float(value) if isinstance(value, int | float) else None


def writer_ratio(r: Results) -> float | None:
    """Writer CPU per edit at full speed over (creating an update + a raw pipelined publish's
    CPU per message), all from one run (none when §1 and §4 come from different runs)."""
    if ("e2e" in r.merged) != ("micro" in r.merged):
        return None  # one figure from another run: not a ratio of one run
    e2e = r.e2e or {}
    writer = (e2e.get("saturated") or {}).get("writer_cpu_us")
    raw = (e2e.get("raw") or {}).get("pipelined_cpu_us")
    create = get(r.micro, "create", "session")
    if not (ok(writer) and ok(raw) and ok(create)):
        return None
    return float(writer) / (float(create) + float(raw))


def cold_ratio(r: Results, updates: int) -> float | None:
    """``open`` over the larger of a pull fetch and ``receive_many`` of the same messages."""
    for row in (r.e2e or {}).get("cold") or []:
        if row.get("updates") == updates and row.get("pull_ms") and row.get("local_ms"):
            return float(row["open_ms"]) / max(float(row["pull_ms"]), float(row["local_ms"]))
    return None


def service_row(r: Results) -> dict[str, Any] | None:
    """The shared-consumer follower with the most documents (§ "One process following many
    documents")."""
    fragment = r.fragments.get("service") or {}
    rows = [row for row in (fragment.get("numbers") or {}).get("rows") or []]
    shared = [row for row in rows if row.get("mode") == "per_shard"]
    return max(shared, key=lambda row: row["documents"]) if shared else None


def targets(r: Results) -> list[Target]:
    service = service_row(r) or {}
    e2e = r.e2e or {}
    raw = e2e.get("raw") or {}
    # The writer edits as fast as it can and never waits for acknowledgements (the sender
    # pipelines); the rate is edits that reached the reader per second.
    saturated = e2e.get("saturated") or {}
    e2e_pct = (
        saturated["items_per_s"] / raw["pipelined"] * 100
        if saturated.get("items_per_s") and raw.get("pipelined")
        else None
    )
    rows = [
        (
            "load",
            "Load (decode + verify + decrypt + apply), single-threaded",
            "≤ 50 µs/update",
            get(r.micro, "load", "session"),
            50.0,
            " µs",
            "le",
        ),
        (
            "load_parallel",
            "Load with parallel verification (2 threads)",
            "≤ 30 µs/update",
            projected_parallel_load(r),
            30.0,
            " µs",
            "le",
        ),
        (
            "create",
            "Create (encrypt + sign + encode)",
            "≤ 35 µs/update",
            get(r.micro, "create", "session"),
            35.0,
            " µs",
            "le",
        ),
        (
            "wire",
            "Wire size of a one-keystroke update (default snapshot policy)",
            "≤ 250 bytes",
            get(r.yjs, "default_policy", "one_keystroke_median"),
            250.0,
            " bytes",
            "le",
        ),
        (
            "e2e",
            "End to end, writer at full speed (edits applied/s), vs raw pipelined publish",
            "≥ 40 %",
            e2e_pct,
            40.0,
            " %",
            "ge",
        ),
        (
            "writer_cpu",
            "Writer CPU per edit at full speed, vs creating an update + a raw pipelined publish",
            "≤ 3.0x",
            writer_ratio(r),
            3.0,
            "x",
            "le",
        ),
        (
            "cold_10k",
            "Cold open of 10,000 updates, vs max(pull fetch, receive_many) of the same",
            "≤ 1.25x",
            cold_ratio(r, 10_000),
            1.25,
            "x",
            "le",
        ),
        (
            "cold_100k",
            "Cold open of 100,000 updates, vs max(pull fetch, receive_many) of the same",
            "≤ 1.25x",
            cold_ratio(r, 100_000),
            1.25,
            "x",
            "le",
        ),
        (
            "service_memory",
            f"Client memory per idle document, one process following "
            f"{service.get('documents', 0):,} documents on shared consumers",
            "≤ 20 KB",
            service.get("client_kb_per_doc"),
            20.0,
            " KB",
            "le",
        ),
        (
            "service_idle",
            "Client CPU while those documents are idle",
            "≤ 1 %",
            service.get("idle_cpu_percent"),
            1.0,
            " %",
            "le",
        ),
        (
            "snapshot",
            "Full-trace snapshot load",
            "≤ 50 ms",
            get(r.snapshot, "load_ms"),
            50.0,
            " ms",
            "le",
        ),
    ]
    reference = get(r.parallel, "reference: sha512 of 256 KiB blocks", "speedup")
    out: list[Target] = []
    for key, what, goal, value, limit, unit, sense in rows:
        digits = 0 if unit == " bytes" else 2 if unit == "x" else 1
        if not ok(value):
            status, by = "not measured", ""
        elif key == "load_parallel" and ok(reference) and reference < 1.5:
            status = "**inconclusive**"
            by = (
                f"the machine gave work without the GIL only {reference:.2f}x on 2 threads "
                "during this run (§3)"
            )
        elif (value <= limit) if sense == "le" else (value >= limit):
            status = "**met**"
            spare = abs(limit - value)
            by = f"{spare:,.{digits}f}{unit} to spare" if spare else "exactly at the limit"
        else:
            status = "**missed**"
            over = value - limit if sense == "le" else limit - value
            if unit == " %":
                by = f"{'over' if sense == 'le' else 'short'} by {over:,.1f} percentage points"
            else:
                rel = over / limit * 100
                side = "over" if sense == "le" else "short"
                by = f"{side} by {over:,.{digits}f}{unit} ({rel:.0f} %)"
        out.append(
            {
                "key": key,
                "what": what,
                "goal": goal,
                "value": value,
                "unit": unit,
                "status": status,
                "by": by,
                "met": status == "**met**",
            }
        )
    return out
