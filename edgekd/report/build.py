"""Build the typed report model from the bench records and manifests of one or several runs.

All the judgement lives here (speed-ups against the named reference, budget marks, Pareto front,
recommendation, what distillation bought); the renderers only format the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from edgekd.config import BudgetConfig
from edgekd.errors import EdgekdError
from edgekd.manifest import Manifest, StageRecord, read_manifest
from edgekd.ondevice import catalog
from edgekd.ondevice.records import ArtifactRecord, BenchDoc, Latency, RecordError
from edgekd.report.budgets import judge_accuracy, judge_latency, latency_limit, recommend, tie, unmet_latency
from edgekd.report.conditions import clocks_note, measured_under
from edgekd.report.load import load_benches, load_curves
from edgekd.report.model import (
    RETIMED,
    DeviceSection,
    Figure,
    KdGain,
    PruneCheck,
    Report,
    Row,
    RunSection,
    ScoutCheck,
    Sensitivity,
    SensitivityRow,
    StageRow,
    SummaryRow,
    SweepRow,
)
from edgekd.run_records import (
    LOCAL,
    PruneStep,
    ScoutChoice,
    ScoutTable,
    SensitivityRecord,
    SweepTrial,
    ValOutcome,
    prune_steps,
    prune_target_ms,
    scout_choice,
)
from edgekd.rundir import RunDir

T = TypeVar("T")

_ORDER = {a.id: i for i, a in enumerate(catalog.ARTIFACTS)}
STUDENT_FP32 = ("student_onnx", "student", "student_ts")
"""Where the fp32 student's accuracy is read from, in order of preference (the budget of quantized students)."""


def pareto_front(latencies: list[float], accuracies: list[float]) -> list[bool]:
    """True where no other point is at least as fast and at least as accurate, and strictly better in one."""
    front = []
    for i, (li, ai) in enumerate(zip(latencies, accuracies)):
        dominated = any(
            lj <= li and aj >= ai and (lj < li or aj > ai)
            for j, (lj, aj) in enumerate(zip(latencies, accuracies))
            if j != i
        )
        front.append(not dominated)
    return front


def _top1(rec: ArtifactRecord | None) -> float | None:
    return rec.accuracy.top1 if rec is not None and rec.status == "done" and rec.accuracy else None


def _accuracy_reference(bench: BenchDoc, run: list[BenchDoc]) -> tuple[float | None, str]:
    """The teacher's top-1 that budgets are checked against, and where it was measured."""
    ref = catalog.REFERENCE
    if (top1 := _top1(bench.get(ref))) is not None:
        return top1, f"{ref} on {bench.device}"
    for other in run:
        if (top1 := _top1(other.get(ref))) is not None:
            return top1, f"{ref} on {other.device}"
    for doc in [bench, *run]:
        for rec in doc.artifacts:
            if rec.row.model == "teacher" and rec.row.precision == "fp32" and (top1 := _top1(rec)) is not None:
                return top1, f"{rec.id} on {doc.device} ({ref} was not measured in this run)"
    return None, "no teacher was measured in this run"


def _student_reference(bench: BenchDoc, run: list[BenchDoc]) -> float | None:
    for doc in [bench, *run]:
        for art_id in STUDENT_FP32:
            if (top1 := _top1(doc.get(art_id))) is not None:
                return top1
    return None


def _runtime(rec: ArtifactRecord) -> str | None:
    if rec.runtime is None:
        return None
    provider = rec.runtime.provider.replace("ExecutionProvider", "")
    return rec.runtime.name + (f" ({provider})" if provider else "")


def _label(rec: ArtifactRecord) -> str:
    """The catalogue label; an engine the tests' TensorRT stand-in ran says so instead of `TensorRT`."""
    if rec.runtime is not None and rec.runtime.name == "tensorrt-standin":
        return rec.row.label.replace("TensorRT", "tensorrt-standin")
    return rec.row.label


def _row(rec: ArtifactRecord, ref: ArtifactRecord | None, teacher_top1: float | None) -> Row:
    art = rec.row
    figures = []
    for lat in rec.latency:
        ref_lat = ref.latency_at(lat.batch_size) if ref is not None and ref.status == "done" else None
        speedup = ref_lat.p50_ms / lat.p50_ms if ref_lat is not None and lat.p50_ms > 0 else None
        figures.append(
            Figure(
                lat.batch_size,
                lat.p50_ms,
                lat.p99_ms,
                lat.throughput_ips,
                speedup,
                lat.stable,
                lat.spread,
                None if lat.stable else lat.unstable or f"rounds differ by {lat.spread:.0%}",
                lat.power_w,
                lat.energy_mj,
                lat.gpu_compute_ms,
            )
        )
    top1 = _top1(rec)
    acc = rec.accuracy if rec.status == "done" else None
    return Row(
        id=rec.id,
        label=_label(rec),
        model=art.model,
        precision=art.precision,
        status=rec.status,
        reason=rec.reason,
        note=rec.note,
        runtime=_runtime(rec),
        runtime_version=f"{rec.runtime.name} {rec.runtime.version}" if rec.runtime else None,
        threads=rec.runtime.threads if rec.runtime else None,
        size_bytes=rec.size_bytes,
        params=rec.params,
        macs=rec.macs,
        latency=figures,
        top1=top1,
        top1_delta=top1 - teacher_top1 if top1 is not None and teacher_top1 is not None else None,
        agreement=acc.agreement if acc else None,
        kl=acc.kl if acc else None,
        top1_batch=acc.batch_size if acc else None,
        top1_by_batch={b.batch_size: b.top1 for b in acc.by_batch} if acc else {},
        reference=rec.id == catalog.REFERENCE,
        latency_only=art.model in catalog.LATENCY_ONLY,
    )


def _describe(system: dict[str, Any], power_mode: bool = True) -> str:
    parts = [str(system.get("cpu") or "unknown CPU")]
    if system.get("cores"):
        parts.append(f"{system['cores']} cores")
    if system.get("memory_gb"):
        parts.append(f"{system['memory_gb']} GB")
    if system.get("gpu"):
        parts.append(f"GPU {system['gpu']}")
    if power_mode and system.get("power_mode"):  # a device bench says it in "Measured under"
        parts.append(f"power mode {system['power_mode']}")
    if system.get("os"):
        parts.append(str(system["os"]))
    if system.get("python"):
        parts.append(f"Python {system['python']}")
    return ", ".join(parts)


def _timing(settings: dict[str, Any]) -> str:
    known = {
        "warmup": "{} warm-up runs",
        "min_runs": "at least {} runs",
        "min_seconds": "at least {:g} s",
        "repeats": "{} rounds",
    }
    return ", ".join(fmt.format(settings[k]) for k, fmt in known.items() if settings.get(k) is not None)


def _int8_slower_than_fp16(rows: list[Row], device: str) -> str | None:
    """Which TensorRT int8 engines were no faster than the same model's fp16 engine (NVIDIA/TensorRT #4720)."""
    engines = [r for r in rows if r.status == "done" and catalog.get(r.id).runtime == "tensorrt"]
    lost = []
    for int8 in (r for r in engines if r.precision == "int8"):
        fp16 = next((r for r in engines if r.precision == "fp16" and r.model == int8.model), None)
        for fig in int8.latency if fp16 is not None else []:
            other = fp16.at(fig.batch_size)
            if other is not None and fig.p50_ms >= other.p50_ms:
                lost.append(
                    f"{int8.id} ({fig.p50_ms:.2f} ms) was not faster than {fp16.id} ({other.p50_ms:.2f} ms) "
                    f"at batch {fig.batch_size}"
                )
                break
    return f"int8 lost to fp16 on {device}: " + "; ".join(lost) if lost else None


def _int8_saturation(rows: list[Row], system: dict[str, Any]) -> str | None:
    """The note under the accuracy table when ONNX Runtime ran int8 files on an x86 CPU without VNNI."""
    ids = [
        r.id
        for r in rows
        if catalog.get(r.id).runtime == "onnxruntime" and r.precision == "int8" and r.top1 is not None
    ]
    if system.get("int8_dot") != "no-vnni" or not ids:
        return None
    return (
        f"this CPU has no VNNI: ONNX Runtime's int8 kernels add u8 x s8 products in saturating 16-bit sums, so "
        f"the top-1 of {', '.join(ids)} here can differ from the same file's on a VNNI CPU or in TensorRT"
    )


def device_section(bench: BenchDoc, run: list[BenchDoc], label: str, budget: BudgetConfig) -> DeviceSection:
    """One device of one run: rows with speed-ups against the named reference, budget marks, recommendation."""
    ref = bench.get(catalog.REFERENCE)
    batch_sizes = sorted({lat.batch_size for rec in bench.artifacts for lat in rec.latency}) or sorted(
        bench.settings.get("batch_sizes") or [1]
    )
    primary = batch_sizes[0]
    ref_note = None
    if ref is None or ref.status != "done":
        why = f"{ref.status}: {ref.reason}" if ref is not None else "not in this bench file"
        ref_note = f"{catalog.REFERENCE} was not measured on {bench.device} ({why}), so no speed-ups are given here"
    teacher_top1, teacher_from = _accuracy_reference(bench, run)
    student_top1 = _student_reference(bench, run)
    rows = [_row(rec, ref, teacher_top1) for rec in bench.artifacts]
    rows.sort(key=lambda r: (not r.reference, _ORDER[r.id]))
    limit = latency_limit(budget, bench.device)
    for row in rows:
        judge_accuracy(row, teacher_top1, student_top1, budget)
    if limit is not None:
        judge_latency(rows, limit)
    plotted = [r for r in rows if r.top1 is not None and r.at(primary) is not None]
    for row, flag in zip(plotted, pareto_front([r.at(primary).p50_ms for r in plotted], [r.top1 for r in plotted])):
        row.pareto = flag
    energy = bool(plotted) and all(r.at(primary).energy_mj is not None for r in plotted)
    if energy:
        front = pareto_front([r.at(primary).energy_mj for r in plotted], [r.top1 for r in plotted])
        for row, flag in zip(plotted, front):
            row.pareto_energy = flag
    section = DeviceSection(
        run=label,
        device=bench.device,
        kind=bench.kind,
        created=bench.created,
        machine=_describe(bench.system, power_mode="jetson" not in bench.conditions),
        timing=_timing(bench.settings),
        measured_under=measured_under(bench.conditions, bench.settings, bench.system),
        clocks_note=clocks_note(bench.conditions, bench.kind),
        batch_sizes=batch_sizes,
        primary_batch=primary,
        reference_note=ref_note,
        teacher_top1=teacher_top1,
        teacher_top1_from=teacher_from,
        student_top1=student_top1,
        rows=rows,
        recommendation=None,
        recommendation_note=None,
        int8_note=_int8_saturation(rows, bench.system),
        energy=energy,
        latency_limit=limit,
    )
    best = recommend(rows, limit, section.ranked_batch)
    if best.row is not None:
        best.row.recommended = True
        section.recommendation, section.tied = best.row.id, best.tied
    slower = _int8_slower_than_fp16(rows, bench.device)
    section.recommendation_note = "; ".join(n for n in (best.note, slower) if n) or None
    return section


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_section(run: RunDir, label: str, manifest: Manifest, omit_stage: str | None) -> RunSection:
    """Stages, what distillation bought, the sweep, the curves and per-layer sensitivity of one run."""
    section = RunSection(label, str(run.root), curves=load_curves(run.path("distill_metrics")))
    for name, rec in manifest.stages.items():
        if name == omit_stage:  # the stage rendering this report is still running: leave it out
            continue
        note = rec.reason or rec.error or ""
        section.stages.append(StageRow(name, rec.status, rec.seconds, note))
    distill = manifest.done("distill")
    baseline_rec = manifest.stage("baseline")
    if kd := kd_gain(distill, manifest.done("baseline"), manifest.path):
        section.kd = kd
    elif baseline_rec is not None and baseline_rec.status == "skipped":
        section.kd_note = f"no hard-label baseline: {baseline_rec.reason}"
    elif baseline_rec is not None and baseline_rec.status == "failed":
        section.kd_note = f"the hard-label baseline failed: {baseline_rec.error}"
    metrics = distill.metrics if distill else {}
    where = f"{manifest.path}: stages.distill.metrics"
    sweep = metrics.get("sweep") or {}
    listed = sweep.get("trials") if isinstance(sweep, dict) else None
    trials = _typed(lambda: [SweepTrial.from_dict(t, f"sweep.trials[{i}]") for i, t in enumerate(listed or [])], where)
    best = sweep.get("best") if isinstance(sweep, dict) else None
    for t in trials:
        section.sweep.append(
            SweepRow(t.settings, t.val_top1, t.selection_kl, t.number == best, t.number, t.state, t.selection_top1)
        )
    if isinstance(sweep, dict) and isinstance(sweep.get("chosen_by"), str):
        section.sweep_chosen_by = sweep["chosen_by"]
    importance = sweep.get("importance") if isinstance(sweep, dict) else None
    if isinstance(importance, dict):
        section.sweep_importance = {str(k): v for k, v in importance.items() if _num(v) is not None}
    prune = manifest.done("prune")
    if prune is not None:
        section.pruning = _typed(lambda: prune_steps(prune.metrics), f"{manifest.path}: stages.prune.metrics")
        section.prune_target_ms = _typed(lambda: prune_target_ms(prune.metrics), f"{manifest.path}: stages.prune")
    scout = manifest.stage("scout")
    if scout is not None and scout.finished:  # a skipped scout's last choice is not this run's student
        section.scout = _typed(lambda: scout_choice(scout.metrics), f"{manifest.path}: stages.scout.metrics")
    qat = manifest.done("qat")
    record = qat.metrics.get("sensitivity") if qat else None
    if record is not None:
        sens = _typed(lambda: SensitivityRecord.from_dict(record), f"{manifest.path}: stages.qat.metrics")
        section.sensitivity = sensitivity(sens)
    return section


SCOUTED = "student_onnx"
"""The artifact whose benchmark figure the scout's figure of the chosen student is checked against: the fp32 ONNX on
ONNX Runtime is what the scout times on `local`; on a device, the student's counterpart of the row the scout judged
(its `onnx_file_trt_fp16` is the student's `student_trt_fp16`)."""


def scouted(entry_artifact: str | None) -> str | None:
    """The student artifact that corresponds to the row a scout figure is of (SCOUTED where it names none); None
    where the student has no one such row."""
    return catalog.counterpart(entry_artifact, "student") if entry_artifact is not None else SCOUTED


def _figure(bench: BenchDoc | None, artifact: str, batch_size: int) -> Latency | None:
    record = bench.get(artifact) if bench is not None else None
    return record.latency_at(batch_size) if record is not None and record.status == "done" else None


def _not_retimed(table: ScoutTable, bench: BenchDoc | None) -> str:
    """Why the scout's file has no figure in the benchmark of the scout's device."""
    if table.device != LOCAL:
        return (
            f"the benchmark on {table.device} times the run's artifacts only; the scout's file is re-timed on `local`"
        )
    record = bench.get(RETIMED) if bench is not None else None
    if record is None:
        return f"the bench file has no `{RETIMED}` record (a scout stage from before it was kept: re-run it)"
    if record.status != "done":
        return f"`{RETIMED}` {record.status}: {record.reason}"
    return f"`{RETIMED}` was not timed at batch {table.batch_size}"


def scout_check(choice: ScoutChoice, benches: list[BenchDoc]) -> ScoutCheck | None:
    """The chosen student's scout figure beside the benchmark's of the trained student on the same device (`local`:
    this machine's bench file, where the scout's own file was re-timed in the same rounds), when both were measured
    at the budget's batch."""
    table = choice.table
    entry = table.entry(choice.chosen)
    artifact = scouted(entry.artifact if entry is not None else None)
    bench = next((b for b in benches if b.device == table.device or (table.device == LOCAL and b.kind == "host")), None)
    trained = _figure(bench, artifact, table.batch_size) if artifact is not None else None
    if entry is None or entry.latency is None or artifact is None or trained is None:
        return None
    scout = entry.latency
    retimed = _figure(bench, RETIMED, table.batch_size) if table.device == LOCAL else None
    same_moment = retimed or scout  # what the trained student is judged against: its own rounds where it can be
    check = ScoutCheck(
        device=table.device,
        artifact=artifact,
        batch_size=table.batch_size,
        scout_ms=scout.p50_ms,
        scout_spread=scout.spread,
        bench_ms=trained.p50_ms,
        bench_spread=trained.spread,
        agree=tie(same_moment, trained),  # the rule that ties latencies in the recommendation
        stable=same_moment.stable and trained.stable,
        scout_cached=entry.cached,
    )
    if retimed is None:
        check.not_retimed = _not_retimed(table, bench)
    else:
        check.retimed_ms, check.retimed_spread = retimed.p50_ms, retimed.spread
        check.steady, check.drift = tie(scout, retimed), retimed.p50_ms / scout.p50_ms - 1
    return check


def prune_check(steps: list[PruneStep], target_ms: float | None, benches: list[BenchDoc]) -> PruneCheck | None:
    """A latency target of the pruning beside the benchmark's batch-1 figures of the trained student and the
    teacher on the device the steps were timed on (their rows: those of the step's figure), when both exist."""
    if target_ms is None or len(steps) < 2 or steps[-1].device is None or steps[-1].latency_ms is None:
        return None
    last = steps[-1]
    device = last.device
    bench = next((b for b in benches if b.device == device or (device == LOCAL and b.kind == "host")), None)
    artifact = scouted(last.artifact)
    trained = _figure(bench, artifact, 1) if artifact is not None else None
    if artifact is None or trained is None:
        return None
    check = PruneCheck(
        device,
        target_ms,
        last.met_target,
        last.step,
        last.latency_ms,
        last.judged_ms,
        last.of_teacher,
        artifact,
        trained.p50_ms,
    )
    teacher_artifact = catalog.counterpart(artifact, "teacher")
    teacher = _figure(bench, teacher_artifact, 1) if teacher_artifact is not None else None
    if teacher is not None and steps[0].latency_ms is not None:
        check.teacher_artifact, check.teacher_then_ms = teacher_artifact, steps[0].latency_ms
        check.teacher_ms, check.teacher_spread = teacher.p50_ms, teacher.spread
    return check


def kd_gain(distilled: StageRecord | None, baseline: StageRecord | None, where: object) -> KdGain | None:
    """The finished distill stage's student against the baseline's (None unless both have a val top-1), paired
    image by image where both recorded which validation images they got right (runs from before `val_correct`
    was recorded: the figures alone)."""
    d_top1 = _num(distilled.metrics.get("val_top1")) if distilled else None
    b_top1 = _num(baseline.metrics.get("val_top1")) if baseline else None
    if distilled is None or baseline is None or d_top1 is None or b_top1 is None:
        return None
    gain = KdGain(d_top1, b_top1)
    if "val_correct" not in distilled.metrics or "val_correct" not in baseline.metrics:
        return gain
    d = _typed(lambda: ValOutcome.from_dict(distilled.metrics["val_correct"]), f"{where}: stages.distill.metrics")
    b = _typed(lambda: ValOutcome.from_dict(baseline.metrics["val_correct"]), f"{where}: stages.baseline.metrics")
    if d.images != b.images:  # not scored on the same split: nothing to pair
        return gain
    d_right, b_right = d.right(), b.right()
    gain.images = d.images
    gain.gained, gain.lost = int((d_right & ~b_right).sum()), int((b_right & ~d_right).sum())
    gain.p_value = mcnemar_p(gain.gained, gain.lost)
    return gain


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar test: if neither model were better, each of the n = gained + lost images that only
    one of them gets right would go either way with probability 1/2; p = P(a split at least as uneven). Summed in
    log space, so large splits cost no big integers."""
    n = gained + lost
    log_half = n * math.log(0.5)
    tail = sum(
        math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + log_half)
        for k in range(min(gained, lost) + 1)
    )
    return min(1.0, 2 * tail)


def _typed(read: Callable[[], T], where: str) -> T:
    """A typed record read from a manifest; a record of another shape is a one-line EdgekdError naming the field."""
    try:
        return read()
    except RecordError as e:
        raise EdgekdError(f"{where}.{e}") from None


def sensitivity(record: SensitivityRecord) -> Sensitivity | None:
    """The report's view of the qat stage's sensitivity record: layers most sensitive first."""
    rows = [SensitivityRow(r.layer, r.top1, r.kl) for r in record.layers]
    if not rows:
        return None
    rows.sort(key=lambda r: (-r.top1, r.kl if r.kl is not None else 0.0))  # most sensitive first
    kept = record.auto_keep_float.kept if record.auto_keep_float else []
    return Sensitivity(record.images, record.fp32_top1, record.int8_top1, rows, list(kept))


def _summary_row(section: DeviceSection, key: str) -> SummaryRow:
    row = section.row(section.recommendation) if section.recommendation else None
    fig = row.at(section.ranked_batch) if row else None
    ref = section.row(catalog.REFERENCE)
    ref_top1 = ref.top1 if ref is not None else None
    cost = ref_top1 - row.top1 if row is not None and row.top1 is not None and ref_top1 is not None else None
    notes = [n for n in (section.recommendation_note, section.reference_note, section.clocks_note) if n]
    return SummaryRow(
        key=key,
        recommended=row.id if row else None,
        label=row.label if row else None,
        batch_size=section.ranked_batch,
        p50_ms=fig.p50_ms if fig else None,
        stable=fig.stable if fig else True,
        speedup=fig.speedup if fig else None,
        top1=row.top1 if row else None,
        cost=cost,
        note="; ".join(notes) or None,
        unstable=sum(not f.stable for r in section.rows for f in r.latency),
        latency_limit=section.latency_limit,
    )


def _labels(run_dirs: list[Path]) -> list[str]:
    names = [d.resolve().name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def _unbenchmarked(run: RunDir, benchmarked: set[str], budget: BudgetConfig, label: str) -> list[str]:
    """A line for each device with a latency budget that this run has no bench file of (nothing judged there)."""
    lines = []
    for device in sorted(set(budget.latency_ms) - benchmarked):
        lines.append(
            f"{label + '/' if label else ''}{device}: latency budget {latency_limit(budget, device)}, but "
            f"{run.relative(run.bench_file(device))} is missing: {device} was not benchmarked in {run.root}"
        )
    return lines


def build_report(run_dirs: list[Path], budget: BudgetConfig, omit_stage: str | None = None) -> Report:
    """The report model of one or several runs (every bench/<device>.json of each).

    `omit_stage`: a stage left out of the stage tables (the report stage, which is running while it renders).
    """
    run_dirs = [Path(d) for d in run_dirs]
    for d in run_dirs:
        if not d.is_dir():
            raise EdgekdError(f"{d}: run directory not found")
    labels = _labels(run_dirs)
    many = len(run_dirs) > 1
    runs, devices, skipped, unmet, latency_unmet, unbenchmarked, unstable = [], [], [], [], [], [], []
    for run_dir, label in zip(run_dirs, labels):
        manifest = read_manifest(run_dir)
        benches = load_benches(run_dir)
        run = run_section(RunDir(run_dir), label, manifest, omit_stage)
        run.scout_check = scout_check(run.scout, benches) if run.scout else None
        run.prune_check = prune_check(run.pruning, run.prune_target_ms, benches)
        runs.append(run)
        prefix = f"{label}: " if many else ""
        for stage in run.stages:
            if stage.status in ("skipped", "failed"):
                skipped.append(f"{prefix}{stage.name} {stage.status}: {stage.note}")
        if not benches:
            unmet.append(f"{label}: no bench/*.json in {run_dir}")
        for b in benches:
            unstable += [f"{label}/{u}" if many else u for u in b.unstable]
            section = device_section(b, benches, label, budget)
            section.key = f"{label}/{b.device}" if many else b.device
            devices.append(section)
        unbenchmarked += _unbenchmarked(RunDir(run_dir), {b.device for b in benches}, budget, label if many else "")
    failed, over = [], []
    for d in devices:
        for r in d.rows:
            if r.status == "failed":
                failed.append(f"{d.key}: {r.id} failed: {r.reason}")
            if r.budget == "over":
                over.append(f"{d.key}: {r.id} over budget: {r.budget_note}")
            if r.latency_budget == "over":
                over.append(f"{d.key}: {r.id} over the latency budget: {r.latency_budget_note}")
        if d.teacher_top1 is None:
            unmet.append(f"{d.key}: no teacher accuracy to check the budget against")
        elif not any(r.budget == "within" and r.model == "student" for r in d.rows):
            unmet.append(f"{d.key}: no student artifact within the accuracy budget")
        if d.latency_limit and not any(r.budget == r.latency_budget == "within" for r in d.rows):
            latency_unmet.append(
                f"{d.key}: no deployable artifact meets both budgets: {unmet_latency(d.rows, d.latency_limit)}"
            )
    ref = catalog.get(catalog.REFERENCE)
    return Report(
        title="edgekd report: " + ", ".join(labels),
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        reference=ref.id,
        reference_label=ref.label,
        budget=budget.model_dump(),
        runs=runs,
        devices=devices,
        summary=[_summary_row(d, d.key) for d in devices],
        skipped=skipped,
        failed=failed,
        over_budget=over,
        unmet=unmet,
        latency_unmet=latency_unmet + unbenchmarked,
        unstable=unstable,
    )
