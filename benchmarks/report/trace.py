"""§2: the editing trace through ``DocumentSession`` (Yjs, the final snapshot, Automerge)."""

from __future__ import annotations

from benchmarks.report.format import Add, f0, f1, f2, ratio, table
from benchmarks.report.results import Results


def trace(r: Results, add: Add) -> None:
    add("## 2. The editing trace")
    add("")
    yjs = r.yjs
    if yjs:
        add("### Yjs (pycrdt), one update per transaction")
        add("")
        add(
            "Create: the sender's `DocumentSession` turns each transaction's Yjs update into "
            "one sealed, encoded update (`data_to_send` + `wire.encode`); its raw baseline is "
            "pycrdt itself producing that update (the edit in a transaction, observed). Load: a "
            "fresh `DocumentSession` on a fresh `pycrdt.Doc` receives the encoded updates "
            "(`receive_many`) after the initial snapshot, and the text is checked against the "
            "trace; its raw baseline is `pycrdt.Doc.apply_update` of the same Yjs updates. "
            "Medians over the repetitions; the points of one pass are cumulative."
        )
        add("")
        rows = []
        for row in yjs["rows"]:
            rows.append(
                [
                    f"{row['updates']:,}",
                    f2(row["create_s"], " s"),
                    f1(row["create_us"]),
                    f1(row["raw_edit_us"]),
                    f2(row["load_s"], " s"),
                    f1(row["load_us"]),
                    f1(row["raw_apply_us"]),
                    ratio(row["load_us"], row["raw_apply_us"]),
                    f0(row["wire_bytes_mean"]),
                    f0(row["change_bytes_mean"]),
                ]
            )
        for line in table(
            [
                "updates",
                "create total",
                "create µs/upd",
                "raw pycrdt edit µs/upd",
                "load total",
                "load µs/upd",
                "raw pycrdt apply µs/upd",
                "load / raw",
                "wire B/upd",
                "Yjs update B",
            ],
            rows,
        ):
            add(line)
        dp = yjs.get("default_policy") or {}
        if dp.get("one_keystroke_median"):
            add(
                f"**One keystroke on the wire.** With the default snapshot policy (a snapshot "
                f"every {dp['snapshot_after_updates']} updates, so clocks stay small; the first "
                f"{dp['transactions']:,} transactions, {dp['snapshots']} snapshots) a "
                "one-keystroke update (a transaction inserting one character, "
                f"{dp['one_keystroke_count']:,} of them) is {dp['one_keystroke_median']} bytes "
                f"(median; {dp['one_keystroke_min']} to {dp['one_keystroke_max']}), in the native "
                "form the transport stores (`docId` implied by the subject). This is the "
                "figure the target is checked against."
                + (
                    " Its bytes: "
                    + ", ".join(f"{k} {v}" for k, v in dp["breakdown"].items() if k != "clock")
                    + f" (clock {dp['breakdown']['clock']})."
                    if dp.get("breakdown")
                    else ""
                )
            )
            add("")
        add(
            f"On the single snapshot of the pass above (clocks up to "
            f"{max(row['updates'] for row in yjs['rows']) - 1:,}), a one-keystroke update "
            f"({yjs['one_keystroke_count']:,} of them) is {yjs['one_keystroke_wire_median']} "
            f"bytes (median; largest {yjs['one_keystroke_wire_max']})."
            + " The clock is a msgpack integer: 5 bytes past 65,535 updates on one snapshot."
        )
        add("")
    snap = r.snapshot
    if snap:
        add(f"### The final state as one snapshot ({snap['transactions']:,} transactions)")
        add("")
        raw = snap["raw_ms"]
        st = snap["stages_ms"]
        rows = [
            [
                "size",
                f"{snap['wire_bytes']:,} B on the wire",
                f"{snap['state_bytes']:,} B Yjs state",
                f"{snap['text_chars']:,} characters",
            ],
            [
                "create",
                f2(snap["create_ms"], " ms"),
                f2(raw["create_total"], " ms"),
                f"encode state {f2(raw['encode_state'])} + sign {f2(raw['sign'])} + "
                f"encrypt {f2(raw['encrypt'])}",
            ],
            [
                "load",
                f2(snap["load_ms"], " ms"),
                f2(raw["load_total"], " ms"),
                f"verify {f2(raw['verify'])} + decrypt {f2(raw['decrypt'])} + "
                f"apply {f2(raw['apply'])}",
            ],
            [
                "load by stage",
                "",
                "",
                f"decode {f2(st['decode'])} · verify {f2(st['verify'])} · "
                f"decrypt {f2(st['decrypt'])} · apply {f2(st['apply'])} ms",
            ],
        ]
        for line in table(["snapshot", "secsync", "raw calls", "detail (ms)"], rows, "lrrl"):
            add(line)
    am = r.automerge
    if am:
        add("### Automerge")
        add("")
        add(
            "The same trace in Automerge (one change per transaction); raw apply is Automerge's "
            "own `receive_sync_message` with a sync message carrying the change, which is also "
            "how the adapter applies changes."
        )
        add("")
        rows = [
            [
                f"{row['updates']:,}",
                f2(row["create_s"], " s"),
                f1(row["create_us"]),
                f1(row["raw_edit_us"]),
                f2(row["load_s"], " s"),
                f1(row["load_us"]),
                f1(row["raw_apply_us"]),
                ratio(row["load_us"], row["raw_apply_us"]),
                f0(row["wire_bytes_mean"]),
                f0(row["change_bytes_mean"]),
            ]
            for row in am
        ]
        for line in table(
            [
                "updates",
                "create total",
                "create µs/upd",
                "raw automerge edit µs/upd",
                "load total",
                "load µs/upd",
                "raw apply µs/upd",
                "load / raw",
                "wire B/upd",
                "change B",
            ],
            rows,
        ):
            add(line)
