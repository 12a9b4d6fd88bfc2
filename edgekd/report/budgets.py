"""The budgets a report judges artifacts by, and the recommendation they allow on each device.

Accuracy (`max_drop_vs_teacher`, `max_drop_vs_student`): every artifact with a top-1. Latency
(`latency_ms[device]` at `latency_batch`, by the p50): only the device's deployable artifacts, the student
artifacts that ship there: its TensorRT engines where any ran, else the ONNX Runtime files of the bundle.

The recommendation is the fastest artifact within both budgets, except that latencies the rounds cannot tell
apart are not ranked: every candidate whose p50 is within the round spread of the fastest's ties with it, and of
the tied ones the more accurate wins, then the simpler (SIMPLER).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgekd.config import BudgetConfig
from edgekd.ondevice import catalog
from edgekd.report.model import Figure, LatencyLimit, Row

SIMPLER = (
    ("onnxruntime", "fp32"),  # the exported graph as it is: any ONNX runtime reads it, nothing approximated
    ("onnxruntime", "fp16"),  # half-precision weights and activations
    ("onnxruntime", "int8-dynamic"),  # int8 weights, activation scales computed at run time: no calibration
    ("onnxruntime", "int8"),  # Q/DQ: static activation scales from QAT or calibration images
    ("tensorrt", "fp32"),  # engines: built for one device kind and TensorRT version, rebuilt for any other
    ("tensorrt", "fp16"),
    ("tensorrt", "int8"),
)
"""What "simpler" means when tied candidates are as accurate: (runtime, precision), simplest first; artifacts that
do not ship (PyTorch, TorchScript) come after these, and equals go by catalogue order."""


def simplicity(row: Row) -> tuple[int, int]:
    """The sort key of SIMPLER: lower is simpler."""
    art = catalog.get(row.id)
    kind = (art.runtime, art.precision)
    return (SIMPLER.index(kind) if kind in SIMPLER else len(SIMPLER), list(catalog.BY_ID).index(row.id))


def judge_accuracy(row: Row, teacher_top1: float | None, student_top1: float | None, budget: BudgetConfig) -> None:
    """Mark `row.budget` within/over the accuracy budget (n/a without a teacher top-1; untouched without a top-1)."""
    if row.top1 is None:
        return
    if teacher_top1 is None:
        row.budget, row.budget_note = "n/a", "no teacher accuracy to compare with"
        return
    notes = []
    drop = teacher_top1 - row.top1
    if drop > budget.max_drop_vs_teacher + 1e-9:
        notes.append(f"{drop:.2f} pts below teacher (max {budget.max_drop_vs_teacher:g})")
    if row.model == "student" and row.precision != "fp32" and student_top1 is not None:
        drop_s = student_top1 - row.top1
        if drop_s > budget.max_drop_vs_student + 1e-9:
            notes.append(f"{drop_s:.2f} pts below fp32 student (max {budget.max_drop_vs_student:g})")
    row.budget, row.budget_note = ("over" if notes else "within"), "; ".join(notes)


def latency_limit(budget: BudgetConfig, device: str) -> LatencyLimit | None:
    """The latency budget of `device`, or None when the config sets none for it."""
    ms = budget.latency_ms.get(device)
    return LatencyLimit(ms, budget.latency_batch) if ms is not None else None


def deployable(rows: list[Row]) -> list[Row]:
    """The student artifacts that ship to the device of `rows`: its student engines when any ran there, else the
    student ONNX Runtime files of the bundle (catalogue `ships`)."""
    done = [r for r in rows if r.status == "done" and r.model == "student"]
    engines = [r for r in done if catalog.get(r.id).runtime == "tensorrt"]
    return engines or [r for r in done if catalog.get(r.id).ships]


def judge_latency(rows: list[Row], limit: LatencyLimit) -> None:
    """Mark every deployable row within/over `limit` by its p50 at the limit's batch (n/a when not timed there)."""
    for row in deployable(rows):
        row.deployable = True
        fig = row.at(limit.batch_size)
        if fig is None:
            row.latency_budget, row.latency_budget_note = "n/a", f"not timed at batch {limit.batch_size}"
        elif fig.p50_ms <= limit.ms:
            row.latency_budget = "within"
        else:
            row.latency_budget = "over"
            row.latency_budget_note = f"p50 {fig.p50_ms:.3g} ms at batch {limit.batch_size} > {limit.ms:g} ms"


def tie(a: Figure, b: Figure) -> bool:
    """Whether two p50 differ by no more than the larger round spread of the two (in ms): the rounds cannot order them."""
    return abs(a.p50_ms - b.p50_ms) <= max(a.spread * a.p50_ms, b.spread * b.p50_ms)


@dataclass
class Recommendation:
    """The artifact recommended on a device (None: nothing meets the budgets) and what a reader must know about it."""

    row: Row | None
    note: str | None
    tied: list[str] = field(default_factory=list)  # the other candidates within the round spread of the fastest


def recommend(rows: list[Row], limit: LatencyLimit | None, batch: int) -> Recommendation:
    """The fastest artifact at `batch` within the accuracy budget and `limit`, students before teachers; candidates
    tied with the fastest within their round spread go to the more accurate, then the simpler (SIMPLER)."""
    eligible = [
        r
        for r in rows
        if r.top1 is not None
        and r.at(batch) is not None
        and r.budget == "within"
        and (limit is None or r.latency_budget == "within")
    ]
    if not eligible:
        return Recommendation(None, _nothing(rows, limit))
    students = [r for r in eligible if r.model == "student"]
    candidates = students or eligible
    fastest = min(candidates, key=lambda r: r.at(batch).p50_ms)
    tied = [r for r in candidates if tie(r.at(batch), fastest.at(batch))]
    best = min(tied, key=lambda r: (-r.top1, simplicity(r), r.at(batch).p50_ms))
    notes = [] if students else ["no student artifact is within the budget, so this keeps a teacher model"]
    if len(tied) > 1:
        notes.append(_tie_note(best, tied, batch))
    return Recommendation(best, "; ".join(notes) or None, [r.id for r in tied if r is not best])


def _tie_note(best: Row, tied: list[Row], batch: int) -> str:
    others = [r for r in tied if r is not best]
    figures = ", ".join(f"{r.id} {r.at(batch).p50_ms:.3g} ms" for r in [best, *others])
    spread = max(r.at(batch).spread for r in tied)
    if all(best.top1 > r.top1 for r in others):
        why = "the most accurate of them"
    else:
        same = ", ".join(r.id for r in others if r.top1 == best.top1)
        why = f"accurate as {same} and simpler (fp32 ONNX, then fp16, dynamic int8, Q/DQ int8, then engines)"
    return (
        f"{figures} tie at batch {batch}: their p50 differ by no more than their round spread (up to {spread:.0%}), "
        f"so {best.id} is recommended as {why}"
    )


def _nothing(rows: list[Row], limit: LatencyLimit | None) -> str:
    if limit is None or not any(r.budget == "within" for r in rows):
        return "no artifact is within the accuracy budget"
    return "no deployable artifact meets both budgets: " + unmet_latency(rows, limit)


def unmet_latency(rows: list[Row], limit: LatencyLimit) -> str:
    """Why no deployable artifact meets `limit` and the accuracy budget: the budget and the p50 of the fastest
    deployable artifact within the accuracy budget (of the fastest deployable one when none is)."""
    timed = [r for r in rows if r.deployable and r.at(limit.batch_size) is not None]
    if not timed:
        what = "no deployable artifact (a student ONNX Runtime file that ships, or an engine) was timed"
        return f"latency budget {limit}, but {what} at batch {limit.batch_size}"
    accurate = [r for r in timed if r.budget == "within"]
    fastest = min(accurate or timed, key=lambda r: r.at(limit.batch_size).p50_ms)
    which = "within the accuracy budget" if accurate else "(none is within the accuracy budget)"
    return (
        f"latency budget {limit}; the fastest deployable artifact {which}, {fastest.id}, has p50 "
        f"{fastest.at(limit.batch_size).p50_ms:.3g} ms"
    )
