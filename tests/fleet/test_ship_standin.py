"""`edgekd ship` end to end to device-like Pythons: a venv with no torch, no onnxruntime and numpy < 1.24 (made by
.ci/device-venv), with the TensorRT and pycuda stand-ins of tests/standins on its PYTHONPATH, behind a real sshd.

Bundle, device checks, engine builds for every precision each device's plan names (GPU and DLA, TensorRT 8.5 and
10.x families), calibration, the engine cache, sidecars, the latency harness and the report; a second ship
rebuilds nothing. The stand-in proves the flow, never a figure: everything it measured says `tensorrt-standin`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fleet_helpers import device_python, vouch, write_qdq

from edgekd.config import BudgetConfig, TensorRTConfig
from edgekd.fleet.check import check_device
from edgekd.fleet.ship import ship
from edgekd.ondevice.calibrate import write_calibration_set

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.tensorrt, pytest.mark.usefixtures("engine_cache_dir")]


@pytest.fixture
def full_run(run_dir: Path) -> Path:
    """The fleet run dir plus what every engine needs: the fp16 ONNX, a Q/DQ int8 ONNX and a calibration set."""
    from edgekd.export.fp16 import write_fp16_onnx

    images = np.load(run_dir / "bench" / "val.npz")["images"]
    for model in ("student", "teacher"):
        write_fp16_onnx(run_dir / "export" / f"{model}.onnx", run_dir / "export" / f"{model}_fp16.onnx")
    write_qdq(run_dir / "export" / "student.onnx", run_dir / "qat" / "student_int8_qdq.onnx", images)
    write_calibration_set(str(run_dir / "bench" / "calib.npz"), images, seed=0)
    exported = {"student_onnx": "export/student.onnx", "teacher_onnx": "export/teacher.onnx"}
    fp16 = {"student_onnx_fp16": "export/student_fp16.onnx", "teacher_onnx_fp16": "export/teacher_fp16.onnx"}
    vouch(run_dir, "export", {**exported, **fp16})
    vouch(run_dir, "qat", {"student_qat_onnx": "qat/student_int8_qdq.onnx"})
    vouch(run_dir, "benchmark", {"val_set": "bench/val.npz", "calib_set": "bench/calib.npz"})
    return run_dir


DEVICES = {  # name: (TensorRT release the stand-in plays, DLA core, precisions)
    "xavier": ("8.5.2", None, ["fp32", "fp16", "int8"]),
    "xavier-dla": ("8.5.2", 0, ["fp16", "int8"]),
    "orin": ("10.3.0", None, ["fp16", "int8"]),
    "orin-dla": ("10.3.0", 0, ["fp16", "int8"]),
}
EXPECTED = {  # the engines each device's plan names
    "xavier": {"teacher_trt_fp32", "student_trt_fp32", "teacher_trt_fp16", "student_trt_fp16", "student_qat_trt_int8"},
    "xavier-dla": {"teacher_trt_fp16", "student_trt_fp16", "student_trt_int8"},
    "orin": {"teacher_trt_fp16", "student_trt_fp16", "student_qat_trt_int8"},
    "orin-dla": {"teacher_trt_fp16", "student_trt_fp16", "student_trt_int8"},
}


def test_ship_to_tensorrt_only_devices_end_to_end(sshd, device_venv, full_run, tmp_path):
    from edgekd.report.write import write_report

    venv = subprocess.run([device_venv, "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True)
    assert venv.stdout.strip() < "1.24", venv.stdout
    rows: dict[str, dict[str, dict]] = {}
    for name, (release, dla, precisions) in DEVICES.items():
        python = device_python(tmp_path / "py" / name, device_venv, release)
        device = sshd.device(tmp_path / "remote" / name, python, ["tensorrt"], name=name)
        device.tensorrt = TensorRTConfig(
            precisions=precisions, dla_core=dla, static_shapes=dla is not None, opt_batch=4, max_batch=8
        )
        report = check_device(device)
        assert report.ok, report.problems
        assert report.probe["libraries"]["tensorrt"]["version"] == release + "-standin"
        assert report.probe["libraries"]["onnxruntime"]["version"] is None  # no onnxruntime on this device

        first = ship(full_run, device)
        assert first.ran_bench and first.downloaded
        by_id = {a["id"]: a for a in first.artifacts}
        assert set(by_id) == EXPECTED[name]
        engines = full_run / "tensorrt" / name
        log = (engines / "bench.log").read_text()
        for art_id, art in by_id.items():
            assert art["status"] in ("done", "failed")
            if art["status"] == "failed":
                assert art["reason"], art_id
                continue
            assert art["runtime"]["name"] == "tensorrt-standin" and art["runtime"]["version"] == release + "-standin"
            assert all(0 < lat["gpu_compute_ms"] < lat["p50_ms"] for lat in art["latency"])  # host to host, and beside
            assert [lat["batch_size"] for lat in art["latency"]] == ([4] if dla is not None else [1, 4])  # static: opt
            sidecar = json.loads((engines / f"{art_id}.json").read_text())
            assert sidecar["tensorrt"] == release + "-standin" and sidecar["dla_core"] == dla
            assert (engines / f"{art_id}.trtexec.txt").read_text().startswith("trtexec --onnx=")
            assert (engines / f"{art_id}.build.log").is_file() and (engines / f"{art_id}.layers.json").is_file()
            if art_id == "student_trt_int8":  # calibrated on the device from the shipped set
                assert sidecar["calibration"]["batches"] > 0 and (engines / f"{art_id}.calib.cache").is_file()
        assert log.count("building") == len(by_id)
        rows[name] = by_id

        second = ship(full_run, device)  # unchanged run: nothing copied, nothing run
        assert (second.uploaded_files, second.ran_bench, second.downloaded) == (0, False, False)

    again = ship(full_run, _device_for(sshd, tmp_path, device_venv, "xavier"), force=True)  # re-run: cache only
    log = (full_run / "tensorrt" / "xavier" / "bench.log").read_text()
    assert again.ran_bench and "building" not in log
    assert log.count("engine from the cache") == len(EXPECTED["xavier"])

    for name in DEVICES:
        failed = {k: v["reason"] for k, v in rows[name].items() if v["status"] != "done"}
        assert failed == {}, (name, failed)

    files = write_report([full_run], full_run / "report", BudgetConfig())
    md = files.markdown.read_text()
    assert "tensorrt-standin" in md and "b1 GPU compute (ms)" in md
    for name, by_id in rows.items():  # one row per engine, each labelled as the stand-in's
        section = md.split(f"## Device {name} (")[1].split("\n## ")[0]
        for art_id in by_id:
            assert f"| {art_id} | tensorrt-standin (" in section, (name, art_id)
    assert "TensorRT fp16" not in md and "TensorRT fp32" not in md  # never presented as TensorRT's figures


def _device_for(sshd, tmp_path: Path, venv: str, name: str):
    release, dla, precisions = DEVICES[name]
    device = sshd.device(
        tmp_path / "remote" / name, device_python(tmp_path / "py" / name, venv, release), ["tensorrt"], name=name
    )
    device.tensorrt = TensorRTConfig(
        precisions=precisions, dla_core=dla, static_shapes=dla is not None, opt_batch=4, max_batch=8
    )
    return device


def test_a_failed_qdq_build_falls_back_to_a_calibrated_engine_the_report_names(sshd, device_venv, full_run, tmp_path):
    """A Xavier whose TensorRT 8.5 cannot build the QAT Q/DQ model (NVIDIA/TensorRT #4527; the stand-in's test-only
    fault switch plays it on this one device): the device builds the calibrated int8 engine from the fp32 ONNX and
    the shipped calibration set instead; the QAT row fails with TensorRT's reason and names the fallback, the
    fallback row is measured like any engine and says what it is and why, in the bench file, the sidecar and the
    report (never a silent swap)."""
    from edgekd.report.write import write_report

    python = device_python(tmp_path / "py", device_venv, "8.5.2", fault="qdq-assert")
    device = sshd.device(tmp_path / "remote", python, ["tensorrt"], name="xavier-qdq")
    device.tensorrt = TensorRTConfig(precisions=["int8"], opt_batch=4, max_batch=8)
    result = ship(full_run, device)
    by_id = {a["id"]: a for a in result.artifacts}
    assert set(by_id) == {"student_qat_trt_int8", "student_trt_int8"}
    qat, fallback = by_id["student_qat_trt_int8"], by_id["student_trt_int8"]
    assert qat["status"] == "failed" and "Assertion getter(i) != 0 failed" in qat["reason"]
    assert "fell back to student_trt_int8 (int8 calibrated from export/student.onnx)" in qat["reason"]
    assert fallback["status"] == "done", fallback["reason"]
    assert fallback["note"].startswith("calibrated int8 fallback (fp32 ONNX + calibration set) because the Q/DQ")
    assert "student_qat_trt_int8: " in fallback["note"] and "weightConvertors.cpp" in fallback["note"]
    assert fallback["accuracy"]["n"] > 0 and fallback["runtime"]["name"] == "tensorrt-standin"

    engines = full_run / "tensorrt" / "xavier-qdq"
    sidecar = json.loads((engines / "student_trt_int8.json").read_text())
    assert sidecar["options"]["calibrated"] is True and sidecar["calibration"]["batches"] > 0
    assert sidecar["source_onnx"] == "student.onnx" and sidecar["timing_cache"]["sha256"]
    (failure,) = sidecar["fallback"]
    assert (failure["replaces"], failure["source_onnx"]) == ("student_qat_trt_int8", "qat/student_int8_qdq.onnx")
    assert "Error Code 2: Internal Error" in (engines / "student_qat_trt_int8.build.log").read_text()
    assert not (engines / "student_qat_trt_int8.engine").exists()
    assert "--int8" in (engines / "student_trt_int8.trtexec.txt").read_text()  # with --calib=: the same engine

    files = write_report([full_run], full_run / "report", BudgetConfig())
    section = files.markdown.read_text().split("## Device xavier-qdq (")[1].split("\n## ")[0]
    assert "| student_trt_int8 | tensorrt-standin (" in section  # measured: latency and accuracy rows
    assert "NOTE: `student_trt_int8`: calibrated int8 fallback" in section
    assert "FAILED: `student_qat_trt_int8`: " in section and "fell back to student_trt_int8" in section
