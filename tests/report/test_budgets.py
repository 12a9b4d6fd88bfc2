"""Latency budgets per device and the recommendation they allow (edgekd/report/budgets.py), on bench records made
the way the harness makes them (measure.summarize over timed rounds) and read back through the one reader."""

import io
import json
import statistics
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from rich.console import Console

from edgekd.config import BudgetConfig, load_pipeline
from edgekd.ondevice import catalog
from edgekd.ondevice.files import write_json_atomic
from edgekd.ondevice.measure import summarize, time_runs
from edgekd.ondevice.records import Accuracy, ArtifactRecord, BenchDoc, Latency, RuntimeInfo
from edgekd.report import write_report
from edgekd.report.budgets import simplicity
from edgekd.report.model import DeviceSection, Row
from edgekd.report.terminal import strict_failures, summary_table

Rounds = list[list[float]]


def steady(ms: float) -> Rounds:
    """Two rounds of five calls that all took `ms`: spread 0."""
    return [[ms] * 5, [ms] * 5]


def noisy(ms: float, spread: float) -> Rounds:
    """Two rounds whose medians lie `spread` (a share of `ms`) apart around `ms`: p50 `ms`, spread `spread`."""
    return [[ms * (1 - spread / 2)] * 5, [ms * (1 + spread / 2)] * 5]


def figure(batch: int, rounds: Rounds) -> Latency:
    samples = [s for r in rounds for s in r]
    return Latency.from_dict(summarize(samples, batch, [statistics.median(r) for r in rounds]), "test")


def record(art_id: str, top1: float, by_batch: dict[int, Rounds], device: str = "local") -> ArtifactRecord:
    engine = catalog.get(art_id).runtime == "tensorrt"
    runtime = (
        RuntimeInfo("tensorrt", "10.3.0", "GPU Orin", 1)
        if engine
        else RuntimeInfo("onnxruntime", ort.__version__, "CPUExecutionProvider", 1)
    )
    return ArtifactRecord(
        art_id,
        "done",
        catalog.path_of(art_id, device),
        runtime=runtime,
        latency=[figure(bs, rounds) for bs, rounds in by_batch.items()],
        accuracy=Accuracy(100, top1, 100),
    )


def write_bench(run: Path, device: str, kind: str, records: list[ArtifactRecord]) -> None:
    """bench/<device>.json through BenchDoc.from_dict, as the report reads it."""
    batches = sorted({lat.batch_size for r in records for lat in r.latency})
    doc = BenchDoc(
        device=device,
        kind=kind,
        created="2026-12-07T10:00:00Z",
        reference=catalog.REFERENCE,
        system={"cpu": "test cpu", "cores": 2},
        settings={"batch_sizes": batches, "warmup": 1, "min_runs": 5, "repeats": 2, "threads": 1},
        artifacts=records,
    )
    doc = BenchDoc.from_dict(json.loads(json.dumps(doc.to_dict())))
    write_json_atomic(run / "bench" / f"{device}.json", doc.to_dict())


def host(run: Path, specs: dict[str, tuple[float, Rounds]]) -> None:
    """A host bench file: (top-1, batch-1 rounds) per id, batch 4 taking four times as long."""
    recs = [record(i, top1, {1: r, 4: [[x * 4 for x in rr] for rr in r]}) for i, (top1, r) in specs.items()]
    write_bench(run, "local", "host", recs)


TEACHER = {"teacher_onnx": (92.0, steady(2.0))}


def test_a_tie_within_the_round_spread_goes_to_the_more_accurate_artifact_and_says_so(tmp_path: Path) -> None:
    """The issue's case: dynamic int8 at 0.11 ms 'beat' fp32 at 0.12 ms with round spreads of 10%."""
    run = tmp_path / "run"
    host(
        run,
        {
            **TEACHER,
            "student_onnx": (90.0, noisy(0.12, 0.10)),
            "student_dynamic_int8_onnx": (89.5, noisy(0.11, 0.10)),
        },
    )
    files = write_report([run], run / "report", BudgetConfig())
    local = files.report.devices[0]
    assert local.recommendation == "student_onnx"
    note = local.recommendation_note
    assert note.startswith("student_onnx 0.12 ms, student_dynamic_int8_onnx 0.11 ms tie at batch 1")
    assert "no more than their round spread (up to 10%)" in note and "the most accurate of them" in note
    assert local.tied == ["student_dynamic_int8_onnx"]
    assert "`student_onnx` (student, ONNX fp32), as fast as `student_dynamic_int8_onnx` within budget: p50 0.12 ms" in (
        files.markdown.read_text()
    )
    assert json.loads(files.json.read_text())["recommendations"] == {"local": "student_onnx"}

    # the same p50 measured steadily: the rounds can order them, so the faster one wins and nothing ties
    host(
        run,
        {
            **TEACHER,
            "student_onnx": (90.0, steady(0.12)),
            "student_dynamic_int8_onnx": (89.5, steady(0.11)),
        },
    )
    local = write_report([run], run / "report", BudgetConfig()).report.devices[0]
    assert local.recommendation == "student_dynamic_int8_onnx" and local.recommendation_note is None
    assert local.tied == []

    # accuracy comes before simplicity: a tied Q/DQ int8 file that scores higher wins over the fp32 one
    host(
        run,
        {
            **TEACHER,
            "student_onnx": (90.0, noisy(0.11, 0.10)),
            "student_qat_onnx": (90.5, noisy(0.12, 0.10)),
        },
    )
    local = write_report([run], run / "report", BudgetConfig()).report.devices[0]
    assert local.recommendation == "student_qat_onnx" and "the most accurate of them" in local.recommendation_note


def test_tied_artifacts_of_equal_accuracy_go_to_the_simpler_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    host(
        run,
        {
            **TEACHER,
            "student_onnx": (90.0, noisy(0.12, 0.10)),
            "student_qat_onnx": (90.0, noisy(0.114, 0.10)),
            "student_dynamic_int8_onnx": (90.0, noisy(0.11, 0.10)),
        },
    )
    local = write_report([run], run / "report", BudgetConfig()).report.devices[0]
    assert local.recommendation == "student_onnx"
    assert (
        "is recommended as accurate as student_qat_onnx, student_dynamic_int8_onnx and simpler"
        in local.recommendation_note
    )
    # among engines: fp16 before int8
    engines = {"student_trt_fp16": noisy(1.0, 0.08), "student_qat_trt_int8": noisy(0.95, 0.08)}
    write_bench(run, "orin", "jetson-orin-nano", [record(i, 90.0, {1: r}, "orin") for i, r in engines.items()])
    orin = next(d for d in write_report([run], run / "report", BudgetConfig()).report.devices if d.device == "orin")
    assert orin.recommendation == "student_trt_fp16" and "tie at batch 1" in orin.recommendation_note


def test_simpler_is_the_documented_order() -> None:
    """fp32 ONNX, fp16, dynamic int8, Q/DQ int8, then engines (fp32, fp16, int8); what does not ship comes last."""
    simplest_first = [
        "student_onnx",
        "student_onnx_fp16",
        "student_dynamic_int8_onnx",
        "student_qat_onnx",
        "student_ptq_onnx",
        "student_trt_fp32",
        "student_trt_fp16",
        "student_qat_trt_int8",
        "student_ptq_trt_int8",
        "student_trt_int8",
        "student",
        "student_ts",
    ]
    rows = [Row(i, i, "student", catalog.get(i).precision, "done") for i in reversed(simplest_first)]
    assert [r.id for r in sorted(rows, key=simplicity)] == simplest_first


def terminal(section: DeviceSection) -> str:
    """The CLI summary table of one device, as text."""
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table("t", section))
    return out.getvalue()


def test_the_latency_budget_is_judged_on_what_ships_and_marked_in_every_format(tmp_path: Path) -> None:
    run = tmp_path / "run"
    host(
        run,
        {
            **TEACHER,
            "teacher": (92.0, steady(1.0)),  # PyTorch eager: never ships, so never judged
            "student": (90.0, steady(0.5)),  # the fastest, but it does not ship either
            "student_onnx": (90.0, steady(4.0)),
            "student_qat_onnx": (88.5, steady(1.0)),  # within the latency budget, 1.5 below the fp32 student
            "student_dynamic_int8_onnx": (89.5, steady(2.0)),
        },
    )
    # on a device where TensorRT ran, its engines ship and its ONNX Runtime figures are not judged
    orin = {
        "student_onnx": (90.0, steady(1.0)),
        "student_trt_fp16": (90.0, steady(2.0)),
        "student_qat_trt_int8": (89.6, steady(1.2)),
    }
    write_bench(run, "orin", "jetson-orin-nano", [record(i, t, {1: r}, "orin") for i, (t, r) in orin.items()])
    accuracy = {"max_drop_vs_teacher": 3, "max_drop_vs_student": 1}
    unbudgeted = write_report([run], tmp_path / "plain", BudgetConfig(**accuracy)).report
    assert unbudgeted.recommendations == {"local": "student", "orin": "student_onnx"}

    budget = BudgetConfig(**accuracy, latency_ms={"local": 3.0, "orin": 1.5})
    files = write_report([run], run / "report", budget)
    doc = json.loads(files.json.read_text())
    marks = {d["device"]: {r["id"]: r["latency_budget"] for r in d["rows"]} for d in doc["devices"]}
    assert marks == {
        "local": {
            "teacher_onnx": None,
            "teacher": None,
            "student": None,
            "student_onnx": "over",
            "student_qat_onnx": "within",
            "student_dynamic_int8_onnx": "within",
        },
        "orin": {"student_onnx": None, "student_trt_fp16": "over", "student_qat_trt_int8": "within"},
    }
    assert doc["recommendations"] == {"local": "student_dynamic_int8_onnx", "orin": "student_qat_trt_int8"}
    assert doc["meets_budget"] and doc["latency_unmet"] == []
    assert doc["devices"][0]["latency_limit"] == {"ms": 3.0, "batch_size": 1}
    assert "local: student_onnx over the latency budget: p50 4 ms at batch 1 > 3 ms" in doc["over_budget"]

    md = files.markdown.read_text()
    acc = [line for line in md.splitlines() if line.startswith("| student_qat_onnx | int8 |")]
    assert acc[0].endswith("| over | within |")  # accuracy over, latency within: not recommended
    assert "| Budget | Latency ≤ 3 ms (b1) |" in md and "| Budget | Latency ≤ 1.5 ms (b1) |" in md
    assert "judged on the artifacts that ship there (`student_trt_fp16`, `student_qat_trt_int8`)" in md
    assert "p50 at batch 1 at most 3 ms on local, 1.5 ms on orin" in md
    assert "| local | student_dynamic_int8_onnx | 2.00 (budget 3) |" in md
    assert "**This report meets the accuracy and latency budgets.**" in md
    page = files.html.read_text()
    assert "<th>Latency ≤ 3 ms (b1)</th>" in page and page.count("<span class='mark over'>") == 3  # 2 latency, 1 acc

    lines = {line.split("│")[1].strip(): line for line in terminal(files.report.devices[0]).splitlines() if "│" in line}
    assert "over latency" in lines["student_onnx"] and "over accuracy" in lines["student_qat_onnx"]
    assert "within, recommended" in lines["student_dynamic_int8_onnx"]


def test_the_budget_is_judged_at_latency_batch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_bench(
        run,
        "local",
        "host",
        [
            record("teacher_onnx", 92.0, {1: steady(2.0), 4: steady(8.0)}),
            record("student_onnx", 90.0, {1: steady(1.0), 4: steady(2.5)}),  # batches well
            record("student_dynamic_int8_onnx", 90.0, {1: steady(0.5), 4: steady(3.5)}),
        ],
    )
    write_bench(run, "nano", "jetson-nano", [record("student_onnx", 90.0, {1: steady(1.0)}, "nano")])
    files = write_report([run], run / "report", BudgetConfig(latency_ms={"local": 3.0, "nano": 3.0}, latency_batch=4))
    local, nano = files.report.devices
    assert local.recommendation == "student_onnx" and local.row("student_dynamic_int8_onnx").latency_budget == "over"
    assert files.report.summary[0].batch_size == 4 and files.report.summary[0].p50_ms == pytest.approx(2.5)
    # a device not timed at the budget's batch: nothing is judged within, and the reason says so
    assert nano.row("student_onnx").latency_budget == "n/a" and nano.recommendation is None
    assert files.report.latency_unmet == [
        "nano: no deployable artifact meets both budgets: latency budget p50 ≤ 3 ms at batch 4, but no deployable "
        "artifact (a student ONNX Runtime file that ships, or an engine) was timed at batch 4"
    ]


def tiny_onnx_record(path: Path, art_id: str, top1: float) -> ArtifactRecord:
    """A real ONNX Runtime session timed by the harness (measure.time_runs) at batch 1."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.zeros((1, 1, 8, 8), np.float32)
    timed = time_runs(lambda: sess.run(None, {"input": batch}), 1, warmup=2, min_runs=20, min_seconds=0, repeats=2)
    return ArtifactRecord(
        art_id,
        "done",
        catalog.path_of(art_id),
        runtime=RuntimeInfo("onnxruntime", ort.__version__, "CPUExecutionProvider", 1),
        latency=[Latency.from_dict(timed, "test")],
        accuracy=Accuracy(100, top1, 100),
    )


def with_budget(pipeline: Path, latency_ms: str) -> Path:
    text = pipeline.read_text().replace("  repeats: 1\n", f"  repeats: 1\n  budget:\n    latency_ms: {latency_ms}\n")
    pipeline.write_text(text)
    return pipeline


def report_metrics(run: Path, pipeline: Path) -> dict:
    """What the report stage records in the manifest (what `edgekd run --strict` reads)."""
    from edgekd.manifest import Manifest
    from edgekd.pipeline import RunContext
    from edgekd.progress import Reporter
    from edgekd.rundir import RunDir
    from edgekd.stages.report import ReportStage

    cfg = load_pipeline(pipeline)
    ctx = RunContext(cfg, RunDir(run), Reporter(Console(quiet=True)), Manifest(run, "test"))
    ctx.stage_name = "report"
    return ReportStage().run(ctx, cfg.benchmark, {}).metrics


def test_strict_fails_on_a_device_whose_latency_budget_nothing_meets(
    tmp_path: Path, tiny_pipeline, build_tiny_onnx
) -> None:
    run = tmp_path / "run"
    teacher = tiny_onnx_record(build_tiny_onnx(tmp_path / "t.onnx", seed=0), "teacher_onnx", 92.0)
    student = tiny_onnx_record(build_tiny_onnx(tmp_path / "s.onnx", seed=1), "student_onnx", 91.0)
    write_bench(run, "local", "host", [teacher, student])
    p50 = student.latency[0].p50_ms

    metrics = report_metrics(run, with_budget(tiny_pipeline(name="tight.yaml"), "{local: 0.001}"))
    assert not metrics["meets_budget"] and metrics["unmet"] == []  # the accuracy budget holds
    assert strict_failures(metrics, run, "local") == [
        "local: no deployable artifact meets both budgets: latency budget p50 ≤ 0.001 ms at batch 1; the fastest "
        f"deployable artifact within the accuracy budget, student_onnx, has p50 {p50:.3g} ms"
    ]
    metrics = report_metrics(run, with_budget(tiny_pipeline(name="loose.yaml"), "{local: 1000}"))
    assert metrics["meets_budget"] and strict_failures(metrics, run, "local") == []


def test_a_budget_on_a_device_without_records_is_not_met(tmp_path: Path) -> None:
    run = tmp_path / "run"
    host(run, {**TEACHER, "student_onnx": (91.0, steady(1.0))})
    files = write_report([run], run / "report", BudgetConfig(latency_ms={"local": 5.0, "xavier": 5.0}))
    report = files.report
    assert report.recommendations == {"local": "student_onnx"}  # the local budget is met
    assert not report.meets_budget and report.latency_unmet == [
        f"xavier: latency budget p50 ≤ 5 ms at batch 1, but bench/xavier.json is missing: xavier was not "
        f"benchmarked in {run.resolve()}"
    ]
    summary = files.markdown.read_text().split("## Device")[0]
    assert f"- {report.latency_unmet[0]}" in summary
    metrics = {"meets_budget": report.meets_budget, "unmet": report.unmet, "latency_unmet": report.latency_unmet}
    assert strict_failures(metrics, run, "local") == report.latency_unmet
