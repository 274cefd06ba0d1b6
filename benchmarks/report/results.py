"""The results of a run, typed: one TypedDict per benchmark's numbers, one ``Results`` for the run.

``Results.from_json`` is the only place that reads the untyped dict (``--json`` file or the
run's own); the sections read its fields. Sections that did not run are ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypedDict, cast


class TraceInfo(TypedDict, total=False):
    transactions_total: int
    transactions_used: int
    points: list[int]
    final_chars: int
    one_keystroke_transactions: int


class StagesRaw(TypedDict, total=False):
    """Raw baselines of §1 (µs per update); a stage that failed is ``None``."""

    decode: float | None
    verify: float | None
    decrypt: float | None
    apply: float | None
    serialize: float | None
    encrypt: float | None
    sign: float | None
    encode: float | None
    hmac: float
    hmac_new: float
    aead: float
    nonce: float
    total: float
    crypto: float


class Stages(TypedDict, total=False):
    """§1, load or create: µs per update by stage, the session total, the raw baselines."""

    messages: int
    session: float
    interleaved: float
    interleaving: float
    other: float
    stages_sum: float
    raw: StagesRaw
    # load
    decode: float | None
    verify: float | None
    decrypt: float | None
    apply: float | None
    session_receive_each: float
    signed_bytes: float
    plaintext_bytes: float
    # create
    serialize: float | None
    aad: float | None
    encrypt: float | None
    sign: float | None
    encode: float | None
    ack: float


class Micro(TypedDict):
    load: Stages
    create: Stages


# §3 rows are keyed by what they measure; ``messages`` and ``load_parallel_us`` sit beside them.
Parallel = dict[str, Any]


class TraceRow(TypedDict):
    updates: int
    create_s: float
    create_us: float
    raw_edit_us: float
    load_s: float
    load_us: float
    raw_apply_s: float
    raw_apply_us: float
    wire_bytes_mean: float
    change_bytes_mean: float


class DefaultPolicy(TypedDict, total=False):
    breakdown: dict[str, int]
    transactions: int
    snapshot_after_updates: int
    snapshots: int
    one_keystroke_count: int
    one_keystroke_median: int
    one_keystroke_max: int
    one_keystroke_min: int


class YjsTrace(TypedDict, total=False):
    rows: list[TraceRow]
    default_policy: DefaultPolicy
    one_keystroke_wire_median: int
    one_keystroke_wire_max: int
    one_keystroke_count: int
    ack_us: float


class SnapshotResult(TypedDict):
    transactions: int
    text_chars: int
    state_bytes: int
    wire_bytes: int
    create_ms: float
    load_ms: float
    stages_ms: dict[str, float]  # decode, verify, decrypt, apply
    raw_ms: dict[str, float]  # verify, decrypt, apply, sign, encrypt, *_total, encode_state


class Scenario(TypedDict, total=False):
    name: str
    items: int
    messages: int
    seconds: float
    items_per_s: float
    messages_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    writer_cpu_us: float
    reader_cpu_us: float
    cycle_us: float


class RawPublish(TypedDict, total=False):
    payload_bytes: int
    window: int
    sequential: float
    pipelined: float
    sequential_cpu_us: float
    pipelined_cpu_us: float
    sequential_headers: float
    pipelined_headers: float


class Idle(TypedDict, total=False):
    seconds: float
    connected_pct: float
    open_document_pct: float
    busiest: list[dict[str, Any]]  # function, calls_per_s


class ColdOpen(TypedDict):
    updates: int
    snapshot_bytes: int
    open_ms: float
    fetch_ms: float
    local_ms: float


class E2E(TypedDict, total=False):
    errors: dict[str, str]
    idle: Idle
    raw: RawPublish
    one_per_edit: Scenario
    saturated: Scenario
    paced: Scenario
    bursts: Scenario
    cold: list[ColdOpen]


class MemoryRow(TypedDict, total=False):
    mode: str
    applied: int
    chars: int
    seconds: float
    rss_after_input_kib: int
    peak_before_kib: int
    peak_kib: int
    vm_hwm_kib: int
    input_bytes: int


# idle, raw, secsync, secsync-batches
Memory = dict[str, MemoryRow]


class ProfileRow(TypedDict):
    function: str
    calls_per_update: float
    tottime_us: float
    cumtime_us: float


class ProfileSide(TypedDict):
    items: int
    plain_us: float
    profiled_us: float
    by_cumulative: list[ProfileRow]
    by_self: list[ProfileRow]
    all: list[ProfileRow]


class Profile(TypedDict):
    load: ProfileSide
    create: ProfileSide


class Federation(TypedDict):
    raw: dict[str, dict[str, float]]  # region -> n, p50_ms, p99_ms, max_ms
    secsync: dict[str, dict[str, Any]]  # region -> stored, applied_other_region, first_apply_ms
    ready_s: float
    home: str
    away: str


class JsSnapshot(TypedDict):
    create_ms: float
    load_ms: float
    wire_bytes: int


class JsMeasured(TypedDict):
    versions: dict[str, str]
    updates: int
    create_us: float
    load_us: float
    load_stages_us: dict[str, float]  # decode, verify_decrypt, apply
    wire_bytes_mean: float
    snapshot: JsSnapshot
    calibration_us: dict[str, float]  # sign, verify, seal, open


class JsReference(TypedDict, total=False):
    """§11: ``node`` is ``None`` when Node was not found (``reason`` says so)."""

    node: str | None
    reason: str
    js: JsMeasured
    python_calibration_us: dict[str, float]
    calibration: dict[str, int]


class Fragment(TypedDict):
    """A section module's own markdown (its first line ``## Title``) and its numbers."""

    markdown: str
    numbers: Any


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything one run measured, as the report reads it."""

    mode: str
    command: str
    started: str
    duration_s: float
    machine: dict[str, str]
    versions: dict[str, str]
    loadavg_start: tuple[float, float, float]
    loadavg_end: tuple[float, float, float]
    errors: dict[str, str]
    section_seconds: dict[str, float]
    trace: TraceInfo
    micro: Micro | None
    parallel: Parallel | None
    yjs: YjsTrace | None
    snapshot: SnapshotResult | None
    automerge: list[TraceRow] | None
    e2e: E2E | None
    e2e_payload_bytes: int | None
    e2e_burst: int
    memory: Memory | None
    profile: Profile | None
    federation: Federation | None
    js_reference: JsReference | None
    # sections that render their own markdown (capacity, open_bound, registered modules)
    fragments: dict[str, Fragment]
    # sections measured on their own and merged in (``--merge``): command, started, same_machine
    merged: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def provenance(self, section: str) -> str | None:
        """The note under a merged section's heading, or None for a section of this run."""
        found = self.merged.get(section)
        if not found:
            return None
        where = "same machine" if found.get("same_machine") else "another machine"
        return (
            f"*Measured on its own with `{found.get('command')}` on {found.get('started')} "
            f"({where}), not in the {self.mode} run above; the next full run measures it as this "
            "section.*"
        )

    @property
    def cores(self) -> str | None:
        return self.machine.get("logical cores")

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], fragment_keys: tuple[str, ...] = ()) -> Results:
        """Build from a run's dict (as ``--json`` writes it); missing sections become ``None``."""

        def section(name: str) -> Any:
            value = raw.get(name)
            return value if value else None

        def loadavg(name: str) -> tuple[float, float, float]:
            value = raw.get(name) or (0.0, 0.0, 0.0)
            return (float(value[0]), float(value[1]), float(value[2]))

        fragments: dict[str, Fragment] = {}
        for key in fragment_keys:
            value = raw.get(key)
            if isinstance(value, dict) and value.get("markdown"):
                fragments[key] = cast(Fragment, value)
        return cls(
            mode=str(raw["mode"]),
            command=str(raw["command"]),
            started=str(raw["started"]),
            duration_s=float(raw["duration_s"]),
            machine=dict(raw["machine"]),
            versions=dict(raw["versions"]),
            loadavg_start=loadavg("loadavg_start"),
            loadavg_end=loadavg("loadavg_end"),
            errors=dict(raw.get("errors") or {}),
            section_seconds=dict(raw.get("section_seconds") or {}),
            trace=cast(TraceInfo, raw.get("trace") or {}),
            micro=section("micro"),
            parallel=section("parallel"),
            yjs=section("yjs"),
            snapshot=section("snapshot"),
            automerge=section("automerge"),
            e2e=section("e2e"),
            e2e_payload_bytes=raw.get("e2e_payload_bytes"),
            e2e_burst=int(raw.get("e2e_burst", 32)),
            memory=section("memory"),
            profile=section("profile"),
            federation=section("federation"),
            js_reference=section("js_reference"),
            fragments=fragments,
            merged=dict(raw.get("merged") or {}),
        )
