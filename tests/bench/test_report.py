import json
import shutil
from pathlib import Path

import pytest

from edgekd.bench.plots import pareto_front
from edgekd.bench.report import build_report, load_bench, meets_budget
from edgekd.config import BudgetConfig
from edgekd.errors import EdgekdError
from edgekd.ondevice.measure import BENCH_SCHEMA, summarize, write_json_atomic


def artifact(
    name: str,
    model: str,
    fmt: str,
    precision: str,
    top1: float | None,
    p50: float | None,
    status: str = "done",
    reason: str | None = None,
) -> dict:
    return {
        "name": name,
        "model": model,
        "format": fmt,
        "precision": precision,
        "source_stage": "x",
        "path": f"{name}.bin",
        "sha256": None,
        "status": status,
        "reason": reason,
        "runtime": None,
        "size_bytes": 1000,
        "params": None,
        "macs": None,
        "latency": [summarize([p50 * k for k in (0.9, 1.0, 1.1)], bs) for bs in (1, 8)] if p50 else [],
        "accuracy": {"n": 100, "top1": top1, "top5": 100.0} if top1 is not None else None,
    }


def write_bench(run_dir: Path, device: str, artifacts: list[dict]) -> None:
    doc = {
        "schema": BENCH_SCHEMA,
        "created": "2026-11-23T18:30:00Z",
        "device": {
            "name": device,
            "kind": "host",
            "cpu": "cpu",
            "cores": 2,
            "memory_gb": 8.0,
            "os": "Linux",
            "python": "3.11",
            "gpu": None,
            "power_mode": None,
            "libraries": {},
        },
        "settings": {"batch_sizes": [1, 8], "warmup": 1, "min_runs": 3, "min_seconds": 0.0, "repeats": 1, "threads": 2},
        "artifacts": artifacts,
    }
    write_json_atomic(str(run_dir / "bench" / f"{device}.json"), doc)


def report_json(summary) -> dict:
    return json.loads(summary.json.read_text())


def rows_of(summary) -> dict:
    return {r["name"]: r for r in report_json(summary)["sections"][0]["rows"]}


def test_report_from_a_real_benchmark(bench_run, tmp_path: Path) -> None:
    run_dir, doc, _ = bench_run
    run = tmp_path / "quickstart"
    shutil.copytree(run_dir / "bench", run / "bench")
    (run / "distill").mkdir()
    (run / "distill" / "metrics.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "epoch": e,
                    "train_loss": 1.0 / (e + 1),
                    "val_top1": 50 + 10 * e,
                    "val_top5": 90,
                    "val_kl": 1.0 / (e + 1),
                    "temperature": 4,
                    "soft_weight": 0.9,
                    "hard_weight": 0.1,
                }
            )
            + "\n"
            for e in range(3)
        )
    )
    (run / "manifest.json").write_text(
        json.dumps(
            {
                "pipeline": "quickstart",
                "stages": {
                    "distill": {"status": "done", "seconds": 3.2, "reason": None, "error": None},
                    "tensorrt": {
                        "status": "skipped",
                        "seconds": 0.0,
                        "reason": "no CUDA GPU on this host",
                        "error": None,
                    },
                },
            }
        )
    )
    summary = build_report([run], run / "report", BudgetConfig())
    md = summary.markdown.read_text()
    page = summary.html.read_text()
    assert summary.markdown.parent == run / "report" and summary.json.is_file()
    assert page.count("data:image/png;base64,") == 2  # scatter + distillation curves
    assert (run / "report" / "distillation-curves.png").is_file()
    for a in doc["artifacts"]:
        assert f"| {a['name']}" in md and a["name"] in page
    assert (
        "teacher_pytorch_fp32 (reference)"
        in md.splitlines()[[i for i, line in enumerate(md.splitlines()) if line.startswith("|---")][0] + 1]
    )
    assert "SKIPPED: TensorRT is not installed on this host" in md
    assert "no CUDA GPU on this host" in md and "no CUDA GPU on this host" in page
    assert "FAILED:" in md and "student_int8_qdq.onnx" in md
    assert any("student_onnx_int8 failed" in f for f in summary.failed)
    assert not meets_budget(summary)
    rows = rows_of(summary)
    assert rows["teacher_pytorch_fp32"]["latency"]["1"]["speedup"] == pytest.approx(1.0)
    assert rows["teacher_pytorch_fp32"]["top1_delta"] == 0.0


def test_budget_marks_and_recommendation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_bench(
        run,
        "local",
        [
            artifact("student_onnx_int8", "student", "onnx", "int8", 88.5, 1.0),  # 1.5 below fp32 student: over (max 1)
            artifact("student_trt_int8", "student", "tensorrt", "int8", 89.5, 2.0),  # within both
            artifact("student_onnx_fp32", "student", "onnx", "fp32", 90.0, 4.0),
            artifact("teacher_pytorch_fp32", "teacher", "pytorch", "fp32", 92.0, 20.0),
            artifact("baseline_onnx_fp32", "student", "onnx", "fp32", 88.0, 0.5),  # 4 below teacher: over (max 3)
        ],
    )
    summary = build_report([run], run / "report", BudgetConfig(max_drop_vs_teacher=3, max_drop_vs_student=1))
    rows = rows_of(summary)
    assert {n: r["budget"] for n, r in rows.items()} == {
        "teacher_pytorch_fp32": "within",
        "student_onnx_int8": "over",
        "student_trt_int8": "within",
        "student_onnx_fp32": "within",
        "baseline_onnx_fp32": "over",
    }
    assert "below fp32 student" in rows["student_onnx_int8"]["budget_note"]
    assert "below teacher" in rows["baseline_onnx_fp32"]["budget_note"]
    assert rows["student_trt_int8"]["latency"]["8"]["speedup"] == pytest.approx(10.0)
    assert rows["student_trt_int8"]["top1_delta"] == pytest.approx(-2.5)
    assert summary.recommendations == {"run/local": "student_trt_int8"}
    assert "**Recommendation on local:** `student_trt_int8`" in summary.markdown.read_text()
    assert len(summary.over_budget) == 2 and meets_budget(summary)
    assert list(rows)[0] == "teacher_pytorch_fp32"


def test_no_student_within_budget_fails_the_budget(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_bench(
        run,
        "local",
        [
            artifact("teacher_pytorch_fp32", "teacher", "pytorch", "fp32", 92.0, 20.0),
            artifact("student_onnx_fp32", "student", "onnx", "fp32", 80.0, 4.0),
        ],
    )
    summary = build_report([run], run / "report", BudgetConfig())
    assert summary.recommendations == {"run/local": "teacher_pytorch_fp32"}
    assert not meets_budget(summary) and "no student artifact within" in summary.unmet[0]
    assert report_json(summary)["meets_budget"] is False


def test_several_runs_side_by_side_and_device_without_teacher(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_bench(
        a,
        "local",
        [
            artifact("teacher_pytorch_fp32", "teacher", "pytorch", "fp32", 92.0, 20.0),
            artifact("student_onnx_fp32", "student", "onnx", "fp32", 91.0, 4.0),
        ],
    )
    write_bench(a, "xavier", [artifact("student_trt_fp16", "student", "tensorrt", "fp16", 90.5, 0.8)])
    write_bench(
        b,
        "local",
        [
            artifact("teacher_pytorch_fp32", "teacher", "pytorch", "fp32", 92.0, 20.0),
            artifact("student_onnx_fp32", "student", "onnx", "fp32", 85.0, 3.0),
        ],
    )
    summary = build_report([a, b], tmp_path / "cmp", BudgetConfig())
    assert summary.recommendations == {
        "a/local": "student_onnx_fp32",
        "a/xavier": "student_trt_fp16",
        "b/local": "teacher_pytorch_fp32",
    }
    md = summary.markdown.read_text()
    assert "## Side by side" in md and "| b | local |" in md
    xavier = report_json(summary)["sections"][1]
    assert xavier["teacher_top1"] == 92.0 and xavier["rows"][0]["latency"]["1"]["speedup"] is None
    assert not meets_budget(summary)


def test_wrong_schema_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"schema": "other/2"}))
    with pytest.raises(EdgekdError, match=r"x\.json: bench file schema is 'other/2'; expected 'edgekd.bench/1'"):
        load_bench(tmp_path / "x.json")


def test_pareto_front() -> None:
    #            fast+bad  mid+good  slow+best  slow+bad (dominated)  mid+worse (dominated)
    latencies = [1.0, 2.0, 5.0, 6.0, 2.5]
    accuracies = [80.0, 90.0, 95.0, 85.0, 89.0]
    assert pareto_front(latencies, accuracies) == [True, True, True, False, False]
    assert pareto_front([1.0, 1.0], [90.0, 90.0]) == [True, True]
