import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.bench.benchmark import load_val_set, save_val_set
from edgekd.errors import EdgekdError
from edgekd.ondevice.measure import BENCH_SCHEMA

KEYS = [
    "name",
    "model",
    "format",
    "precision",
    "source_stage",
    "path",
    "sha256",
    "status",
    "reason",
    "runtime",
    "size_bytes",
    "params",
    "macs",
    "latency",
    "accuracy",
]


def by_name(doc: dict) -> dict:
    return {a["name"]: a for a in doc["artifacts"]}


def test_document_follows_the_schema(bench_run) -> None:
    run_dir, doc, _ = bench_run
    assert json.loads((run_dir / "bench" / "local.json").read_text()) == doc
    assert doc["schema"] == BENCH_SCHEMA and doc["created"].endswith("Z")
    assert doc["device"]["name"] == "local" and doc["device"]["kind"] == "host" and doc["device"]["cores"] >= 1
    assert doc["device"]["libraries"]["onnxruntime"] and doc["device"]["libraries"]["numpy"]
    assert doc["settings"] == {
        "batch_sizes": [1, 4],
        "warmup": 1,
        "min_runs": 3,
        "min_seconds": 0.0,
        "repeats": 2,
        "threads": 1,
    }
    assert [a["name"] for a in doc["artifacts"]][:3] == [
        "student_onnx_fp32",
        "teacher_pytorch_fp32",
        "student_torchscript_fp32",
    ]
    for a in doc["artifacts"]:
        assert list(a) == KEYS


def test_measured_artifacts(bench_run) -> None:
    run_dir, doc, _ = bench_run
    arts = by_name(doc)
    for name in ("student_onnx_fp32", "teacher_pytorch_fp32", "student_torchscript_fp32"):
        a = arts[name]
        assert a["status"] == "done" and a["reason"] is None, a["reason"]
        assert a["size_bytes"] == (run_dir / a["path"]).stat().st_size and len(a["sha256"]) == 64
        assert [r["batch_size"] for r in a["latency"]] == [1, 4]
        assert all(r["runs"] >= 6 and r["p50_ms"] > 0 for r in a["latency"])
        assert a["accuracy"]["n"] == 12 and a["runtime"]["threads"] == 1
    assert arts["student_onnx_fp32"]["runtime"]["provider"] == "CPUExecutionProvider"
    assert arts["student_torchscript_fp32"]["runtime"]["name"] == "torchscript"


def test_teacher_reference_accuracy(bench_run) -> None:
    _, doc, _ = bench_run
    t = by_name(doc)["teacher_pytorch_fp32"]
    assert t["accuracy"]["top1"] == pytest.approx(75.0) and t["accuracy"]["agreement"] == 100.0
    assert t["accuracy"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert t["params"] > 0 and t["macs"] > 0


def test_skipped_artifact_keeps_its_reason(bench_run) -> None:
    _, doc, _ = bench_run
    a = by_name(doc)["student_tensorrt_fp16"]
    assert a["status"] == "skipped" and a["reason"] == "TensorRT is not installed on this host"
    assert a["latency"] == [] and a["accuracy"] is None


def test_broken_artifact_is_recorded_as_failed(bench_run) -> None:
    _, doc, _ = bench_run
    a = by_name(doc)["student_onnx_int8"]
    assert a["status"] == "failed" and a["latency"] == [] and a["size_bytes"] == len(b"truncated")
    assert "student_int8_qdq.onnx" in a["reason"] and "onnxruntime" in a["reason"] and "\n" not in a["reason"]


def test_val_set_round_trip(tmp_path: Path) -> None:
    images = np.ones((3, 1, 4, 4), np.float64)
    save_val_set(tmp_path / "bench" / "val.npz", images, [0, 1, 2], np.zeros((3, 5)))
    got_images, labels, logits = load_val_set(tmp_path / "bench" / "val.npz")
    assert got_images.dtype == np.float32 and labels.dtype == np.int64 and logits.shape == (3, 5)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(EdgekdError, match="bad.npz"):
        load_val_set(tmp_path / "bad.npz")


def test_run_artifacts_from_files_and_manifest(tmp_path: Path) -> None:
    for rel in ("teacher/model.pt", "distill/student.pt", "export/student.onnx", "tensorrt/xavier/student_int8.engine"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    manifest = {
        "stages": {
            "export": {"status": "done"},
            "qat": {"status": "skipped", "reason": "qat.enabled is false"},
            "dynamic_quant": {"status": "failed", "error": "boom"},
        }
    }
    from edgekd.bench.benchmark import run_artifacts

    local = {e.name: e for e in run_artifacts(tmp_path, manifest, "local")}
    assert local["teacher_pytorch_fp32"].status == "done" and local["student_onnx_fp32"].path == "export/student.onnx"
    assert "teacher_onnx_fp32" not in local  # export finished without it (export.teacher off)
    assert (
        local["student_onnx_int8_qat"].status == "skipped"
        and "qat.enabled is false" in local["student_onnx_int8_qat"].reason
    )
    assert local["student_onnx_int8-dynamic"].reason == "stage dynamic_quant failed: boom"
    assert not any(e.format == "tensorrt" for e in local.values())
    xavier = {e.name: e for e in run_artifacts(tmp_path, manifest, "xavier")}
    engine = xavier["student_int8_tensorrt"]
    assert (engine.precision, engine.format, engine.path) == ("int8", "tensorrt", "tensorrt/xavier/student_int8.engine")
    skipped = run_artifacts(tmp_path, {"stages": {"tensorrt": {"status": "skipped", "reason": "no TensorRT"}}}, "local")
    assert [e.name for e in skipped if e.format == "tensorrt"] == ["student_tensorrt_fp16", "student_tensorrt_int8"]
