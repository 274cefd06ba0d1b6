"""The Yjs v1 <-> v2 codec on the automerge-paper trace, next to pycrdt applying the same bytes.

Per single-keystroke update (µs): the updates of the trace's first 20,000 transactions (one
keystroke each, but for a few), each converted v1 -> v2 and v2 -> v1, and the same v1 bytes
applied raw to pycrdt one by one. Per full-trace snapshot
(ms): the final state converted both ways, and applied raw to a fresh document.

Run alone with ``python -m benchmarks.yjs_v2 [transactions]`` (all 259,778 by default).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from benchmarks.common import YjsReplay, clock, load_trace, median, per_item_us, repeat, replay_yjs

if TYPE_CHECKING:
    from benchmarks.sections import RunContext


def codec_bench(replay: YjsReplay, reps: int = 5, *, updates: int = 20_000) -> dict[str, Any]:
    """The figures, from a replay (``benchmarks.common.replay_yjs``): the updates of its first
    ``updates`` transactions (almost all single keystrokes), and its final state."""
    import pycrdt

    from secsync.crdt.yjs_v2 import decode_v2, encode_v2

    changes = replay.changes[:updates]
    changes_v2 = [encode_v2(u) for u in changes]
    if [decode_v2(u) for u in changes_v2] != changes:
        raise RuntimeError("the codec does not round-trip the trace's updates")

    def apply_all(changes: Sequence[bytes]) -> None:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.get("text", type=pycrdt.Text)
        for change in changes:
            doc.apply_update(change)

    n = len(changes)
    result: dict[str, Any] = {
        "updates": n,
        "update_bytes_v1": sum(map(len, changes)) / max(n, 1),
        "update_bytes_v2": sum(map(len, changes_v2)) / max(n, 1),
        "v1_to_v2_us": per_item_us(lambda: [encode_v2(u) for u in changes], n, reps),
        "v2_to_v1_us": per_item_us(lambda: [decode_v2(u) for u in changes_v2], n, reps),
        "pycrdt_apply_us": per_item_us(lambda: apply_all(changes), n, reps),
    }
    state = replay.final_state
    state_v2 = encode_v2(state)
    if decode_v2(state_v2) != state:
        raise RuntimeError("the codec does not round-trip the trace's state")
    result.update(
        {
            "state_bytes_v1": len(state),
            "state_bytes_v2": len(state_v2),
            "state_v1_to_v2_ms": median(repeat(lambda: encode_v2(state), reps)) * 1e3,
            "state_v2_to_v1_ms": median(repeat(lambda: decode_v2(state_v2), reps)) * 1e3,
            "state_pycrdt_apply_ms": median(repeat(lambda: apply_all([state]), reps)) * 1e3,
        }
    )
    return result


def run(*, quick: bool, context: RunContext) -> dict[str, Any]:
    """The section of ``python -m benchmarks.run``: the run's own replay of the trace."""
    reps = context.sizes.snapshot_reps
    return codec_bench(context.replay, reps, updates=2_000 if quick else 20_000)


def render(r: dict[str, Any]) -> str:
    """Markdown for ``benchmarks.md``."""
    rows = [
        ("v1 → v2", f"{r['v1_to_v2_us']:.1f} µs", f"{r['state_v1_to_v2_ms']:.1f} ms"),
        ("v2 → v1", f"{r['v2_to_v1_us']:.1f} µs", f"{r['state_v2_to_v1_ms']:.1f} ms"),
        (
            "pycrdt applying the same v1 bytes (raw)",
            f"{r['pycrdt_apply_us']:.1f} µs",
            f"{r['state_pycrdt_apply_ms']:.1f} ms",
        ),
    ]
    lines = [
        "## Yjs update format v2 codec",
        "",
        f"`secsync.crdt.yjs_v2` on the trace: per update, the updates of the first "
        f"{r['updates']:,} transactions ({r['update_bytes_v1']:.1f} B in v1, "
        f"{r['update_bytes_v2']:.1f} B in v2 on average); per snapshot, the final state of the "
        f"run's trace ({r['state_bytes_v1']:,} B in v1, {r['state_bytes_v2']:,} B in v2). "
        "Medians; the codec round-trips every input byte for byte before it is timed.",
        "",
        "| conversion | per update | snapshot of the final state |",
        "|---|---:|---:|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    txns = load_trace()["txns"]
    if args:
        txns = txns[: int(args[0])]
    start = clock()
    replay = replay_yjs(txns, [len(txns)])
    print(f"replayed {len(txns):,} transactions in {clock() - start:.1f} s")
    r = codec_bench(replay)
    print(
        f"per update (the first {r['updates']:,} transactions, {r['update_bytes_v1']:.1f} B "
        f"in v1, {r['update_bytes_v2']:.1f} B in v2):"
    )
    print(f"  v1 -> v2        {r['v1_to_v2_us']:8.2f} µs")
    print(f"  v2 -> v1        {r['v2_to_v1_us']:8.2f} µs")
    print(f"  pycrdt apply    {r['pycrdt_apply_us']:8.2f} µs  (raw, v1)")
    print(
        f"full-trace snapshot ({r['state_bytes_v1']:,} B in v1, {r['state_bytes_v2']:,} B in v2):"
    )
    print(f"  v1 -> v2        {r['state_v1_to_v2_ms']:8.1f} ms")
    print(f"  v2 -> v1        {r['state_v2_to_v1_ms']:8.1f} ms")
    print(f"  pycrdt apply    {r['state_pycrdt_apply_ms']:8.1f} ms  (raw, v1)")


if __name__ == "__main__":
    main()
