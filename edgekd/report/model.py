"""The typed report model: everything report.json, report.md and report.html show, and nothing else.

`edgekd.report.build` makes it from bench records (edgekd.ondevice.records.BenchDoc) and manifests;
the renderers only format it. Speed-ups are against one named reference (catalog.REFERENCE) on
every device; a device that did not measure the reference says so instead of using another one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgekd.run_records import PruneStep, ScoutChoice

REPORT_SCHEMA = "edgekd.report/4"


@dataclass
class Figure:
    """Latency of one artifact at one batch size; `speedup` = reference p50 / this p50 on the same device."""

    batch_size: int
    p50_ms: float
    p99_ms: float
    throughput_ips: float
    speedup: float | None
    stable: bool = True
    spread: float = 0.0
    unstable: str | None = None  # why not stable (Latency.unstable)
    power_w: float | None = None  # None: no power rails on this device ("n/a", never 0)
    energy_mj: float | None = None  # millijoules per image
    gpu_compute_ms: float | None = None  # median GPU compute time (TensorRT), beside the wall-clock p50


@dataclass
class Row:
    """One artifact on one device (`id` is a catalogue id, the same on every device)."""

    id: str
    label: str
    model: str
    precision: str
    status: str  # done | failed | skipped
    reason: str | None = None
    note: str | None = None  # what the bench record says a reader must know (a calibrated fallback and why)
    runtime: str | None = None  # "onnxruntime (CPU)"
    runtime_version: str | None = None  # "onnxruntime 1.20.1" (listed once per device, not in every row)
    threads: int | None = None
    size_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    latency: list[Figure] = field(default_factory=list)
    top1: float | None = None
    top1_delta: float | None = None  # against the accuracy reference, in points
    agreement: float | None = None
    kl: float | None = None
    top1_batch: int | None = None  # the chunk the validation images ran in for `top1` (None: older bench files)
    top1_by_batch: dict[int, float] = field(default_factory=dict)  # dynamic int8: top-1 at each benchmark batch
    budget: str | None = None  # accuracy budget: within | over | n/a | None (not measured)
    budget_note: str = ""
    deployable: bool = False  # ships to this device: what its latency budget is judged on (budgets.deployable)
    latency_budget: str | None = None  # within | over | n/a (not timed at its batch) | None (no budget, not deployable)
    latency_budget_note: str = ""
    pareto: bool = False
    pareto_energy: bool = False  # on the accuracy-vs-energy front (only when the section has energy)
    reference: bool = False
    recommended: bool = False
    latency_only: bool = False  # a control timed for its latency alone (catalog.LATENCY_ONLY): never scored or judged

    def at(self, batch_size: int) -> Figure | None:
        return next((f for f in self.latency if f.batch_size == batch_size), None)

    @property
    def verdict(self) -> str:
        """Both budgets in a few words ("within", "over accuracy", "over latency", ...); "" when neither judged it."""
        marks = {"accuracy": self.budget, "latency": self.latency_budget}
        over = [what for what, mark in marks.items() if mark == "over"]
        if over:
            return "over " + " and ".join(over)
        if "n/a" in marks.values():
            return "n/a"
        return "within" if any(marks.values()) else ""


@dataclass
class LatencyLimit:
    """`benchmark.budget.latency_ms` of one device: the p50 at `batch_size` at most `ms`."""

    ms: float
    batch_size: int

    def __str__(self) -> str:
        return f"p50 ≤ {self.ms:g} ms at batch {self.batch_size}"


@dataclass
class DeviceSection:
    """One bench document: a device of a run, its rows in catalogue order (the reference first)."""

    run: str
    device: str
    kind: str
    created: str
    machine: str  # one line: CPU, cores, memory, GPU, power mode, OS
    timing: str  # one line: warm-up, runs, rounds
    measured_under: str  # one line: load, other processes, governor, threads; Jetson power mode, clocks, heat
    clocks_note: str | None  # set on a Jetson whose clocks were not locked: shown beside the figures
    batch_sizes: list[int]
    primary_batch: int
    reference_note: str | None  # set when the named reference was not measured on this device
    teacher_top1: float | None  # the accuracy reference (see teacher_top1_from)
    teacher_top1_from: str
    student_top1: float | None  # the fp32 student, for the quantized artifacts' budget
    rows: list[Row] = field(default_factory=list)
    recommendation: str | None = None
    recommendation_note: str | None = None
    tied: list[str] = field(default_factory=list)  # artifacts whose p50 the recommended one's ties with (budgets.tie)
    int8_note: str | None = None  # set when this CPU's int8 kernels may saturate: shown under the accuracy table
    energy: bool = False  # every plotted artifact has energy at the primary batch: an accuracy-vs-energy plot
    key: str = ""  # how the report names this section: the device, or run/device when several runs are compared
    latency_limit: LatencyLimit | None = None  # this device's latency budget (None: none set)

    @property
    def ranked_batch(self) -> int:
        """The batch size the recommendation compares latencies at: the latency budget's, else the smallest."""
        return self.latency_limit.batch_size if self.latency_limit else self.primary_batch

    def row(self, artifact_id: str) -> Row | None:
        return next((r for r in self.rows if r.id == artifact_id), None)


@dataclass
class StageRow:
    name: str
    status: str
    seconds: float | None
    note: str  # reason (skipped) or error (failed)


@dataclass
class KdGain:
    """What distillation bought: the distilled student against the same student trained on hard labels. Where both
    stages recorded which validation images they got right, the pair: `gained` images only the distilled student
    classifies right, `lost` images only the baseline does, out of `images`, and the exact two-sided McNemar test's
    `p_value` (how often chance alone splits the gained + lost images at least this unevenly)."""

    distilled_top1: float
    baseline_top1: float
    images: int | None = None
    gained: int | None = None
    lost: int | None = None
    p_value: float | None = None

    @property
    def gain(self) -> float:
        return self.distilled_top1 - self.baseline_top1


@dataclass
class SweepRow:
    settings: dict[str, float]
    val_top1: float | None
    val_kl: float | None
    best: bool
    number: int = 0
    state: str = "complete"
    selection_top1: float | None = None


@dataclass
class SensitivityRow:
    """One quantized layer: top-1 and KL to fp32 with this layer alone left float, every other layer int8."""

    layer: str
    top1: float
    kl: float | None


@dataclass
class Sensitivity:
    """The qat stage's `sensitivity` record: layers most sensitive first (floating it recovers the most),
    scored on `images` training images; `kept` are the layers `qat.auto_keep_float` left float."""

    images: int | None
    fp32_top1: float | None
    int8_top1: float | None
    layers: list[SensitivityRow]
    kept: list[str] = field(default_factory=list)


@dataclass
class PruneCheck:
    """A latency-targeted pruning's target beside the benchmark's figure of the trained student on the device the
    steps were timed on (batch 1), and the teacher's figure in the benchmark against its figure at step 0: how far
    the machine's speed moved between the pruning and the benchmark."""

    device: str
    target_ms: float
    met: bool
    step: int  # the step that met the target, else the last
    step_ms: float  # that step's figure as timed
    judged_ms: float | None  # ...and at step 0's machine speed, which the target was judged on
    step_share: float | None  # that step's latency as a share of the teacher's in the same rounds
    artifact: str  # the trained student's row in the benchmark (student_onnx, or a device's engine row)
    bench_ms: float  # at batch 1, as the steps were timed
    teacher_artifact: str | None = None
    teacher_ms: float | None = None  # the teacher's figure in the benchmark's rounds
    teacher_spread: float = 0.0
    teacher_then_ms: float | None = None  # the teacher's figure at step 0


RETIMED = "scout_onnx"
"""The scout's choice as the scout exported it: on `local` the benchmark times it in the same rounds as the trained
student's `student_onnx`."""


@dataclass
class ScoutCheck:
    """The chosen student's latency as the scout measured it (random weights, before training) beside the
    benchmark's figure of the trained student's `artifact` on the same device.

    On `local` the benchmark also re-timed the scout's own file (catalogue `scout_onnx`) in the same rounds as the
    trained student: `agree` is judged between those two (one machine, one moment: only the weights differ), and
    `retimed_ms / scout_ms` is how the machine's speed moved between the scout's moment and the benchmark's. Not
    re-timed (a device, or no such record: `not_retimed` says why), `agree` is judged between the scout's figure and
    the trained student's, as before. Figures agree when they differ by no more than the larger spread of their
    rounds (budgets.tie, the rule of the recommendation)."""

    device: str
    artifact: str
    batch_size: int
    scout_ms: float
    scout_spread: float
    bench_ms: float
    bench_spread: float
    agree: bool
    stable: bool  # neither compared figure is marked unstable (rounds disagreed, or the machine was busy)
    scout_cached: bool = False  # the scout's figure came from scout/cache.json, taken by an earlier scout
    retimed_ms: float | None = None  # the scout's file (`scout_onnx`) timed in the benchmark's rounds
    retimed_spread: float | None = None
    steady: bool | None = None  # the re-timed figure ties with the scout's: the machine kept its speed
    drift: float | None = None  # retimed_ms / scout_ms - 1: > 0, the same file ran slower in the benchmark
    not_retimed: str | None = None  # why the scout's file was not re-timed (None when it was)


@dataclass
class RunSection:
    label: str
    path: str
    stages: list[StageRow] = field(default_factory=list)
    kd: KdGain | None = None
    kd_note: str | None = None  # why there is no KD-vs-baseline figure
    sweep: list[SweepRow] = field(default_factory=list)
    sweep_chosen_by: str = ""  # how the sweep's winner was chosen, and on which images
    sweep_importance: dict[str, float] = field(default_factory=dict)  # setting -> share of the score's variance
    curves: list[dict[str, Any]] = field(default_factory=list)  # distill/metrics.jsonl epochs
    sensitivity: Sensitivity | None = None
    pruning: list[PruneStep] = field(default_factory=list)  # the prune stage's steps (step 0: the teacher)
    scout: ScoutChoice | None = None  # what the scout stage chose for `student.model: auto`, and why
    scout_check: ScoutCheck | None = None  # the chosen student's scout latency, re-timed, beside the benchmark's
    prune_target_ms: float | None = None  # student.prune.target.latency_ms of the run's prune stage
    prune_check: PruneCheck | None = None  # that target beside the benchmark's figure of the trained student


@dataclass
class SummaryRow:
    """The recommendation on one device, against the named reference."""

    key: str
    recommended: str | None
    label: str | None
    batch_size: int
    p50_ms: float | None
    stable: bool
    speedup: float | None
    top1: float | None
    cost: float | None  # reference top-1 minus the recommended artifact's, in points
    note: str | None
    unstable: int = 0  # figures of this device marked unstable (the device is marked in the summary)
    latency_limit: LatencyLimit | None = None


@dataclass
class Report:
    title: str
    created: str
    reference: str
    reference_label: str
    budget: dict[str, float]
    runs: list[RunSection]
    devices: list[DeviceSection]
    summary: list[SummaryRow]
    skipped: list[str]  # stages skipped or failed, with their reason
    failed: list[str]  # artifacts that failed to load or run
    over_budget: list[str]
    unmet: list[str]  # devices without a student within budget (or without a teacher to check against)
    latency_unmet: list[str]  # devices with a latency budget that no deployable artifact meets with the accuracy one
    unstable: list[str]  # "<device>: <id> batch <n>: <why>" of every unstable figure (BenchDoc.unstable); --strict
    schema: str = REPORT_SCHEMA

    @property
    def meets_budget(self) -> bool:
        """Every device has a student artifact within the accuracy budget, every device with a latency budget a
        deployable artifact within both, and no artifact failed."""
        return not self.unmet and not self.latency_unmet and not self.failed

    @property
    def recommendations(self) -> dict[str, str | None]:
        return {d.key: d.recommendation for d in self.devices}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "meets_budget": self.meets_budget, "recommendations": self.recommendations}
