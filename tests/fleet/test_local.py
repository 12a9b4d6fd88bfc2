"""Local TensorRT builds: a skip reason without TensorRT or a GPU, real engines with them."""

import json

import pytest

from edgekd.config import TensorRTConfig
from edgekd.export.fp16 import write_fp16_onnx
from edgekd.fleet.local import build_local_engines, local_gpu


def test_skip_reason_without_tensorrt_or_gpu(run_dir_template):
    gpu, why = local_gpu()
    if gpu is not None:
        pytest.skip(f"this machine can build engines ({gpu})")
    sources = {"student_onnx": run_dir_template / "export" / "student.onnx"}
    out = run_dir_template / "tensorrt" / "local"
    result = build_local_engines(run_dir_template, sources, TensorRTConfig(), "local", lambda i: out / f"{i}.engine")
    assert result.engines == {} and result.failed == {}
    assert result.skipped == why and ("not installed" in why or "no CUDA GPU" in why)
    assert not (run_dir_template / "tensorrt").exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_builds_engines_into_the_run_dir_and_cache(run_dir, tmp_path, monkeypatch):
    gpu, why = local_gpu()
    if gpu is None:
        pytest.skip(why)
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    cfg = TensorRTConfig(precisions=["fp32", "fp16"], max_batch=8, opt_batch=4)
    fp32 = run_dir / "export" / "student.onnx"
    fp16 = write_fp16_onnx(fp32, run_dir / "export" / "student_fp16.onnx")  # TensorRT >= 10 builds fp16 from it
    sources, out = {"student_onnx": fp32, "student_onnx_fp16": fp16}, run_dir / "tensorrt" / "local"
    result = build_local_engines(run_dir, sources, cfg, "local", lambda art_id: out / f"{art_id}.engine")
    assert result.skipped is None and result.failed == {}
    assert set(result.engines) == {"student_trt_fp32", "student_trt_fp16"}
    for engine in result.engines.values():
        assert engine.parent == run_dir / "tensorrt" / "local" and engine.with_suffix(".json").is_file()
        assert "--onnx=export/student" in engine.with_suffix(".trtexec.txt").read_text()
    assert len(list((tmp_path / "cache" / "engines").glob("*.engine"))) == 2


@pytest.mark.tensorrt
def test_a_host_dla_int8_build_is_calibrated_from_the_runs_calibration_set(
    run_dir, tmp_path, monkeypatch, load_standin
):
    """On the TensorRT stand-in (8.5, with DLA cores): the local build passes the calibration set (issue 21 fault 7)."""
    import numpy as np
    from fleet_helpers import vouch

    from edgekd.ondevice.calibrate import write_calibration_set

    load_standin("8.5.2")
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    images = np.load(run_dir / "bench" / "val.npz")["images"]
    write_calibration_set(str(run_dir / "bench" / "calib.npz"), images, seed=0)
    vouch(run_dir, "benchmark", {"val_set": "bench/val.npz", "calib_set": "bench/calib.npz"})
    cfg = TensorRTConfig(precisions=["fp16", "int8"], dla_core=0, static_shapes=True, opt_batch=4, max_batch=4)
    sources = {"student_onnx": run_dir / "export" / "student.onnx"}
    out = run_dir / "tensorrt" / "local"
    result = build_local_engines(run_dir, sources, cfg, "local", lambda art_id: out / f"{art_id}.engine")
    assert result.skipped is None and result.failed == {}
    assert set(result.engines) == {"student_trt_fp16", "student_trt_int8"}
    sidecar = json.loads(result.engines["student_trt_int8"].with_suffix(".json").read_text())
    assert sidecar["calibration"]["batches"] == len(images) // 4 and sidecar["dla_core"] == 0


@pytest.mark.tensorrt
def test_a_host_qdq_build_that_fails_falls_back_to_a_calibrated_engine_that_says_so(
    run_dir, tmp_path, monkeypatch, load_standin
):
    """As on a device (tests/fleet/test_ship_standin.py): the stand-in's test-only fault switch fails the Q/DQ build
    as TensorRT 8.6 fails some ("Could not find any implementation"); the host builds the calibrated int8 engine from
    the fp32 ONNX and the run's calibration set, its sidecar records why, and the host benchmark's record says so."""
    import numpy as np
    from fleet_helpers import write_qdq

    from edgekd.bench.benchmark import Planned, benchmark_artifacts
    from edgekd.ondevice.calibrate import write_calibration_set
    from edgekd.ondevice.measure import Settings

    monkeypatch.setenv("EDGEKD_TRT_STANDIN_FAULT", "qdq-no-impl")
    load_standin("8.5.2")
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    val = np.load(run_dir / "bench" / "val.npz")
    images = val["images"]
    write_qdq(run_dir / "export" / "student.onnx", run_dir / "qat" / "student_int8_qdq.onnx", images)
    write_calibration_set(str(run_dir / "export" / "calib.npz"), images, seed=0)
    sources = {
        "student_onnx": run_dir / "export" / "student.onnx",
        "student_qat_onnx": run_dir / "qat" / "student_int8_qdq.onnx",
        "calib_set": run_dir / "export" / "calib.npz",
    }
    cfg = TensorRTConfig(precisions=["int8"], opt_batch=4, max_batch=8)
    out = run_dir / "tensorrt" / "local"
    result = build_local_engines(run_dir, sources, cfg, "local", lambda art_id: out / f"{art_id}.engine")
    assert set(result.engines) == {"student_trt_int8"} and set(result.failed) == {"student_qat_trt_int8"}
    assert "Could not find any implementation" in result.failed["student_qat_trt_int8"]
    assert result.failed["student_qat_trt_int8"].endswith(
        "fell back to student_trt_int8 (int8 calibrated from export/student.onnx)"
    )
    sidecar = json.loads(result.engines["student_trt_int8"].with_suffix(".json").read_text())
    assert sidecar["options"]["calibrated"] and sidecar["calibration"]["batches"] > 0
    assert [f["replaces"] for f in sidecar["fallback"]] == ["student_qat_trt_int8"]

    settings = Settings(batch_sizes=(4,), warmup=1, min_runs=2, min_seconds=0.0, repeats=1, threads=1)
    planned = [Planned("student_trt_int8", "tensorrt/local/student_trt_int8.engine")]
    doc = benchmark_artifacts(planned, images, val["labels"], None, settings, "local", run_dir, out=tmp_path / "b.json")
    (record,) = doc.artifacts
    assert record.status == "done" and record.accuracy is not None, record.reason
    assert record.note.startswith("calibrated int8 fallback") and "Could not find any implementation" in record.note
