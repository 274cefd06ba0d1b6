"""§4: end to end through JetStream (raw nats-py, writer → reader, cold open)."""

from __future__ import annotations

from typing import Literal

from benchmarks.report.format import Add, f0, f1, table
from benchmarks.report.results import Results

ScenarioKey = Literal["one_per_edit", "saturated", "paced", "bursts"]


def end_to_end(r: Results, add: Add) -> None:
    add("## 4. End to end through JetStream")
    add("")
    e2e = r.e2e
    if not e2e:
        add("*Not measured in this run.*")
        add("")
        return
    idle = e2e.get("idle")
    if idle:
        busy = idle["open_document_pct"] >= 5
        culprit = ", ".join(
            f"`{b['function']}` {b['calls_per_s']:,.0f} calls/s" for b in idle.get("busiest", [])
        )
        add(
            ("**Warning — an idle open document keeps a core busy.** " if busy else "")
            + f"Idle CPU: a connected client uses {f1(idle['connected_pct'])} % of a core; with "
            f"one open document and no edits, {f1(idle['open_document_pct'])} %"
            + (
                f". Busiest secsync functions while idle: {culprit}. Every process below "
                "(writer, reader) carries that load, so the rates and CPU figures of this "
                "section are lower and higher than they should be."
                if busy and culprit
                else "."
            )
        )
        add("")
    raw = e2e.get("raw") or {}
    size = r.e2e_payload_bytes
    add(
        f"A throwaway nats-server (`secsync.servers.broker.Broker`, file storage, loopback). Raw: "
        f"nats-py acknowledged publishes of {size} random bytes (the median one-keystroke "
        f"update), sequential `js.publish` or `publish_async` with at most {raw.get('window')} "
        "unacknowledged; “with headers” adds what secsync sends (`Nats-Msg-Id` and the "
        "compare-and-set expectation on the snapshot subject)."
    )
    add("")
    rows = [
        ["sequential `js.publish`", f0(raw.get("sequential")), f0(raw.get("sequential_headers"))],
        ["pipelined `publish_async`", f0(raw.get("pipelined")), f0(raw.get("pipelined_headers"))],
    ]
    for line in table(["raw nats-py", "msgs/s", "msgs/s with headers"], rows):
        add(line)
    add(
        f"Publisher CPU per message: {f1(raw.get('sequential_cpu_us'))} µs sequential, "
        f"{f1(raw.get('pipelined_cpu_us'))} µs pipelined (nats-py, no secsync)."
    )
    add("")
    add(
        "secsync: a writer `Document` (this process) and a reader `Document` in a second "
        "process, each with its own connection; latency is from the writer's edit to the "
        "reader's apply (both stamped with CLOCK_MONOTONIC). “Messages” are updates the reader "
        "applied; “edits” are the writer's transactions."
    )
    add("")
    scenarios: list[tuple[ScenarioKey, str]] = [
        (
            "one_per_edit",
            "one update per edit (`flush()` after each keystroke), `batch_interval=0`",
        ),
        (
            "saturated",
            "keystrokes as fast as the loop runs, `batch_interval=0` (the sender batches)",
        ),
        ("paced", "typing at a steady rate, default config (`batch_interval` 20 ms)"),
        (
            "bursts",
            f"a program editing in bursts of {r.e2e_burst} transactions per "
            "event-loop turn, `batch_interval=0`",
        ),
    ]
    rows = []
    for key, what in scenarios:
        row = e2e.get(key)
        if not row:
            rows.append([what, "failed", "", "", "", "", "", "", ""])
            continue
        rows.append(
            [
                what,
                f"{row['items']:,}",
                f"{row['messages']:,}",
                f0(row["messages_per_s"]),
                f0(row["items_per_s"]),
                f1(row["p50_ms"]),
                f1(row["p99_ms"]),
                f0(row["writer_cpu_us"]),
                f0(row["reader_cpu_us"]),
            ]
        )
    for line in table(
        [
            "scenario",
            "edits",
            "messages",
            "messages/s",
            "edits/s",
            "p50 ms",
            "p99 ms",
            "writer CPU µs/edit",
            "reader CPU µs/msg",
        ],
        rows,
        "lrrrrrrrr",
    ):
        add(line)
    add(
        "CPU is each process's own `time.process_time` over the scenario. The machine has "
        f"{r.cores} cores for the writer, the reader and "
        "nats-server together."
    )
    add("")
    one = e2e.get("one_per_edit") or {}
    sat = e2e.get("saturated") or {}
    if one and sat and raw.get("pipelined"):
        add(
            f"One update per edit, waiting for each, reaches "
            f"{one['messages_per_s'] / raw['sequential'] * 100:.0f} % of the raw sequential rate; "
            "with the writer at full speed, "
            f"{sat['items_per_s'] / raw['pipelined'] * 100:.0f} % of the raw pipelined rate in "
            f"edits and {sat['messages_per_s'] / raw['pipelined'] * 100:.0f} % in updates "
            f"({sat['items'] / sat['messages']:.1f} edits per update; "
            f"{sat['messages_per_s'] / raw['pipelined_headers'] * 100:.0f} % of raw pipelined "
            "with the same headers). The writer spends "
            f"{f0(sat['writer_cpu_us'])} µs of CPU per edit and the reader "
            f"{f0(sat['reader_cpu_us'])} µs per update there, against the raw publisher's "
            f"{f1(raw.get('pipelined_cpu_us'))} µs per message."
        )
        add("")
    cold = e2e.get("cold")
    add("### Cold open")
    add("")
    if not cold:
        add("*Not measured in this run.*")
        add("")
        return
    add(
        "`client.open` on an open connection, of a document stored as one snapshot (the trace "
        "state after all but the last updates) plus 0 … N updates after it; median of the runs "
        "(one run for 100,000). Beside it, what the open is made of, each measured alone: "
        "“pull fetch” reads the same messages with nats-py as `open` does (a consumer created, "
        "pages of 1,024 fetched, nothing decoded); “direct get” reads them by batch direct get "
        "(`messages_after`); `receive_many` loads the same bytes into a fresh "
        "`DocumentSession` in process (snapshot, then one `receive_many`), with no worker "
        "thread and with one (`verify_threads=1`, as the open in the column beside uses). "
        "The goal: `open` within 1.25 times the larger of pull fetch and `receive_many`, which is "
        "what fetching and verifying at the same time would give."
    )
    add("")

    def within(row: dict[str, object]) -> str:
        slower = max(row.get("pull_ms") or 0.0, row.get("local_ms") or 0.0)  # type: ignore[type-var]
        opened = row.get("open_ms")
        return f"{opened / slower:.2f}" if slower and isinstance(opened, float) else "n/a"

    rows = [
        [
            f"{row['updates']:,}",
            f"{row['snapshot_bytes']:,}",
            f1(row["open_ms"]),
            f1(row.get("open_threaded_ms")),
            f1(row.get("pull_ms")),
            f1(row["fetch_ms"]),
            f1(row["local_ms"]),
            f1(row.get("local_threaded_ms")),
            within(row),
        ]
        for row in cold
    ]
    for line in table(
        [
            "updates after the snapshot",
            "snapshot B",
            "open ms",
            "open ms, 1 worker",
            "pull fetch ms",
            "direct get ms",
            "receive_many ms",
            "receive_many ms, 1 worker",
            "open ÷ max(pull fetch, receive_many)",
        ],
        rows,
    ):
        add(line)
