"""The quickstart pipeline end to end, exactly as the README runs it, then once more (all cached)."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from edgekd.quant import inspect_qdq

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_end_to_end(tmp_path):
    run_dir = tmp_path / "quickstart"
    cmd = [
        sys.executable,
        "-m",
        "edgekd.cli",
        "run",
        str(ROOT / "pipelines" / "quickstart.yaml"),
        "--run-dir",
        str(run_dir),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stderr[-4000:]
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    status = {name: s["status"] for name, s in stages.items()}
    assert status == {
        "teacher": "done",
        "scout": "skipped",  # student.model is not auto
        "prune": "skipped",  # student.model is set
        "distill": "done",
        "baseline": "done",
        "qat": "done",
        "dynamic_quant": "done",
        "export": "done",
        "tensorrt": "skipped",
        "benchmark": "done",
        "report": "done",
    }, status
    assert "TensorRT" in stages["tensorrt"]["reason"]

    student = stages["distill"]["metrics"]["val_top1"]
    assert student >= 90.0 and stages["teacher"]["metrics"]["val_top1"] >= 90.0
    assert stages["distill"]["metrics"]["params"] * 3 < stages["teacher"]["metrics"]["params"]

    for rel in (
        "export/student.ts.pt",
        "export/student.onnx",
        "export/teacher.onnx",
        "qat/student_int8_qdq.onnx",
        "qat/student_ptq_int8_qdq.onnx",
        "dynamic_quant/student_dynamic_int8.ts.pt",
        "dynamic_quant/student_dynamic_int8.onnx",
        "export/student_fp16.onnx",
        "bench/local.json",
        "bench/val.npz",
        "export/calib.npz",
        "report/report.md",
        "report/report.html",
        "report/report.json",
    ):
        assert (run_dir / rel).is_file(), rel

    # the QAT model: Q/DQ on the inputs and weights of every Conv/Gemm and on each residual input; within
    # 0.5 point of the fp32 student and picking its class on >= 98% of validation images
    graph = onnx.load(run_dir / "qat" / "student_int8_qdq.onnx").graph
    producers = {o: n for n in graph.node for o in n.output}
    compute = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    assert compute
    for node in compute:
        for inp in node.input[:2]:
            assert producers[inp].op_type == "DequantizeLinear", (node.name, inp)
    layout = inspect_qdq(run_dir / "qat" / "student_int8_qdq.onnx")
    assert layout.residual_adds == 3 and layout.float_layers == 0
    qat = stages["qat"]["metrics"]["artifacts"]["student_qat_onnx"]
    assert abs(qat["val_top1"] - student) <= 0.5, (qat["val_top1"], student)
    assert qat["agreement_vs_fp32"] >= 98.0, qat
    for stage in ("export", "qat", "dynamic_quant"):
        for name, art in stages[stage]["metrics"]["artifacts"].items():
            assert "parity" in art and art["val_top1"] is not None, (stage, name)

    bench = json.loads((run_dir / "bench" / "local.json").read_text())
    assert bench["reference"] == "teacher_onnx"
    rows = {a["id"]: a for a in bench["artifacts"]}
    assert len(rows) == len(bench["artifacts"])  # one record per catalogue id
    for art_id in (
        "teacher",
        "teacher_onnx",
        "student",
        "student_onnx",
        "student_qat_onnx",
        "student_dynamic_int8_onnx",
    ):
        assert rows[art_id]["status"] == "done", (art_id, rows[art_id]["reason"])
    done = [r for r in rows.values() if r["status"] == "done"]
    assert all(r["latency"][0]["p50_ms"] > 0 and isinstance(r["runtime"]["threads"], int) for r in done)
    assert rows["student_trt_fp16"]["status"] == "skipped" and "TensorRT" in rows["student_trt_fp16"]["reason"]
    assert "scout_onnx" not in rows  # the scout was skipped: its file is no product of this run
    report = (run_dir / "report" / "report.md").read_text()
    assert "student_qat_onnx" in report and "Skipped stages" in report and "Speed-up vs teacher_onnx" in report
    kd = json.loads((run_dir / "report" / "report.json").read_text())["runs"][0]["kd"]
    val_images = stages["distill"]["metrics"]["val_correct"]["images"]
    assert kd["images"] == val_images == stages["baseline"]["metrics"]["val_correct"]["images"] >= 350
    assert abs(kd["gained"] - kd["lost"]) == round(abs(kd["distilled_top1"] - kd["baseline_top1"]) * val_images / 100)
    assert "(exact McNemar test, p = " in report
    said = [line for line in first.stdout.splitlines() if line.startswith("distillation: ")]  # the terminal, too
    assert len(said) == 1 and f"of {val_images} validation images the distilled student alone gets" in said[0]
    assert "data:image/png;base64," in (run_dir / "report" / "report.html").read_text()
    sensitivity = json.loads((run_dir / "report" / "report.json").read_text())["runs"][0]["sensitivity"]
    assert sensitivity["images"] == 512 and len(sensitivity["layers"]) == layout.quantized_layers

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert all(s["status"] in ("cached", "skipped") for s in again.values()), {k: s["status"] for k, s in again.items()}
    assert "epoch" not in second.stderr
