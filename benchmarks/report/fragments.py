"""§8 (across regions) and the sections that benchmark modules render themselves (§9 on)."""

from __future__ import annotations

from benchmarks.report.format import Add, table
from benchmarks.report.results import Results


def federation(r: Results, add: Add) -> None:
    add("## 8. Across regions (super-cluster)")
    add("")
    fed = r.federation
    if not fed:
        add("*Not measured in this run.*")
        add("")
        return
    home, away = fed["home"], fed["away"]
    add(
        f"`secsync.servers.supercluster.SuperCluster`: two regions (`{away}`, `{home}`) "
        f"of three nodes, "
        f"joined by gateways, all on this machine (healthy {fed['ready_s']:.1f} s after "
        f"launch). The stream is homed in region `{home}` (placement by the tag "
        f"`region:{home}`, three replicas there). Loopback adds no distance: the difference "
        "between the rows is the extra hops through the gateway; add the real round trip "
        "between your regions to the away row."
    )
    add("")
    rows = []
    for region in (home, away):
        raw = fed["raw"][region]
        sec = fed["secsync"][region]
        other = away if region == home else home
        rows.append(
            [
                f"`{region}`" + (" (home)" if region == home else " (away)"),
                f"{raw['p50_ms']:.2f} / {raw['p99_ms']:.2f}",
                f"{sec['stored']['p50_ms']:.2f} / {sec['stored']['p99_ms']:.2f}",
                f"{sec['applied_other_region']['p50_ms']:.2f} / "
                f"{sec['applied_other_region']['p99_ms']:.2f} (in `{other}`)",
                f"{sec['first_apply_ms']:.0f}",
            ]
        )
    for line in table(
        [
            "client in region",
            "raw `js.publish` p50 / p99 ms",
            "secsync edit stored p50 / p99 ms",
            "edit applied in the other region p50 / p99 ms",
            "first apply after the reader opened, ms",
        ],
        rows,
        "lrrrr",
    ):
        add(line)
    add(
        f"Raw: {fed['raw'][home]['n']:,} sequential acknowledged publishes of 250 bytes; "
        f"secsync: {fed['secsync'][home]['stored']['n']:,} edits, `flush()` after each "
        "(one update per edit), read by a `Document` connected to the other region. The last "
        "column is the first edit after the reader opened: a live consumer created moments "
        "before in another region can lose its first delivery (its deliver subject's interest "
        "has not crossed the gateway yet), and nats-py's ordered consumer recovers it at the "
        "next idle heartbeat (`idle_heartbeat`, 1 s by default)."
    )
    add("")


def fragment(r: Results, add: Add, key: str, number: int, title: str) -> None:
    """A module's own markdown, its ``## Title`` numbered like the other sections."""
    found = r.fragments.get(key)
    text = found["markdown"] if found else ""
    if not text:
        add(f"## {number}. {title}")
        add("")
        add("*Not measured in this run.*")
        add("")
        return
    lines = text.splitlines()
    if lines and lines[0].startswith("## "):
        lines[0] = f"## {number}. " + lines[0][3:]
        note = r.provenance(key)
        if note:
            lines[1:1] = ["", note]
    for line in lines:
        add(line)
    add("")
