"""The picture of the report: §1's stages as bars, §4's JetStream rates (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report.format import get, ok
from benchmarks.report.per_message import CREATE_STAGES, LOAD_STAGES
from benchmarks.report.results import Results

COLORS = {
    "decode": "#8c564b",
    "verify": "#d62728",
    "decrypt": "#ff7f0e",
    "apply": "#2ca02c",
    "interleaving": "#c7c7c7",
    "other": "#7f7f7f",
    "serialize": "#17becf",
    "aad": "#bcbd22",
    "encrypt": "#ff7f0e",
    "sign": "#d62728",
    "encode": "#8c564b",
}
LEGEND = (
    ("#d62728", "Ed25519 (verify / sign)"),
    ("#ff7f0e", "commitment tag + AEAD (decrypt / encrypt)"),
    ("#8c564b", "msgpack wire form (decode / encode)"),
    ("#17becf", "serialize changes"),
    ("#bcbd22", "public data → AAD"),
    ("#2ca02c", "apply to pycrdt"),
    ("#c7c7c7", "interleaving"),
    ("#7f7f7f", "session bookkeeping"),
)


def plot(r: Results, path: Path) -> str | None:
    """Write the PNG; returns None on success, else the reason it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (`pip install -r benchmarks/requirements.txt`)"
    load = get(r.micro, "load")
    create = get(r.micro, "create")
    if not load or not create:
        return "the per-message section did not run"
    e2e = r.e2e or {}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.6), gridspec_kw={"width_ratios": [3, 2]})
    bars = [
        ("load · secsync", load, LOAD_STAGES),
        ("load · raw calls", load["raw"] | {"other": 0.0, "interleaving": 0.0}, LOAD_STAGES),
        ("create · secsync", create, CREATE_STAGES),
        (
            "create · raw calls",
            create["raw"] | {"other": 0.0, "aad": 0.0, "interleaving": 0.0},
            CREATE_STAGES,
        ),
    ]
    for y, (_label, data, stages) in enumerate(reversed(bars)):
        x = 0.0
        for key, _name, _raw in stages:
            width = max(0.0, data.get(key) or 0.0)
            left.barh(y, width, left=x, color=COLORS[key], edgecolor="white")
            if width >= 4:
                left.text(
                    x + width / 2,
                    y,
                    f"{width:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                )
            x += width
        left.text(x + 1, y, f"{x:.0f} µs", va="center", fontsize=9)
    left.set_yticks(range(len(bars)), [b[0] for b in reversed(bars)])
    left.plot([50, 50], [1.5, 3.5], color="black", linestyle="--", linewidth=1)
    left.text(50, 3.5, " load target 50 µs", fontsize=7, va="bottom")
    left.plot([35, 35], [-0.5, 1.5], color="black", linestyle=":", linewidth=1)
    left.text(35, -0.5, " create target 35 µs", fontsize=7, va="top")
    left.set_xlabel("µs per update (median)")
    left.set_title(f"Per update, by stage ({load['messages']:,} trace updates)")
    from matplotlib.patches import Patch

    left.legend(
        handles=[Patch(color=c, label=label) for c, label in LEGEND],
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=4,
        frameon=False,
    )
    left.set_ylim(-1.0, len(bars) - 0.2)
    left.set_xlim(0, max(60.0, left.get_xlim()[1] * 1.12))

    raw = e2e.get("raw") or {}
    rates = [
        ("raw\njs.publish\nsequential", raw.get("sequential"), "#1f77b4"),
        ("raw\npublish_async\npipelined", raw.get("pipelined"), "#1f77b4"),
        (
            "secsync\nDocument\n1 update / edit",
            get(e2e, "one_per_edit", "messages_per_s"),
            "#d62728",
        ),
        (
            "secsync\nDocument\nfull speed",
            get(e2e, "saturated", "messages_per_s"),
            "#ff7f0e",
        ),
    ]
    rates = [(n, v, c) for n, v, c in rates if ok(v)]
    if rates:
        right.bar(range(len(rates)), [v for _, v, _ in rates], color=[c for _, _, c in rates])
        right.set_xticks(range(len(rates)), [n for n, _, _ in rates], fontsize=7)
        for i, (_, v, _) in enumerate(rates):
            right.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
        if raw.get("pipelined"):
            right.axhline(0.7 * raw["pipelined"], color="black", linestyle="--", linewidth=1)
            right.text(
                len(rates) - 0.5,
                0.7 * raw["pipelined"],
                "70 % of raw pipelined",
                fontsize=7,
                ha="right",
                va="bottom",
            )
        right.set_ylabel("acknowledged updates per second")
        right.set_title(f"JetStream, {r.e2e_payload_bytes} B payloads")
    else:
        right.text(0.5, 0.5, "end-to-end section did not run", ha="center")
    fig.suptitle(
        f"secsync benchmarks ({r.mode} run, {r.started}, "
        f"{r.machine.get('cpu', '')}, {r.cores} cores)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
