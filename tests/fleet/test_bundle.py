"""Bundles: only what the manifest vouches for, by catalogue id; content addressing, engine planning, prebuilt engines."""

import json
import shutil

import numpy as np
import pytest
from fleet_helpers import vouch

from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.fleet.bundle import make_bundle, plan_engines, shippable
from edgekd.ondevice.calibrate import write_calibration_set
from edgekd.ondevice.job import JOB_SCHEMA, Job


def device(**kw) -> DeviceConfig:
    d = DeviceConfig(**{"host": "jetson", "kind": "jetson-agx-xavier", **kw})
    d.name = "xav"
    return d


@pytest.fixture
def small_run(run_dir_template, tmp_path):
    """The shared run dir plus a stand-in Q/DQ ONNX, a dynamic int8 ONNX and the calibration set (export stage),
    recorded in the manifest as their stages would."""
    run = tmp_path / "run"
    shutil.copytree(run_dir_template, run)
    write_calibration_set(str(run / "export" / "calib.npz"), np.load(run / "bench" / "val.npz")["images"], seed=0)
    export = {"student_onnx": "export/student.onnx", "teacher_onnx": "export/teacher.onnx"}
    vouch(run, "export", {**export, "calib_set": "export/calib.npz"})
    (run / "qat").mkdir()
    shutil.copyfile(run / "export" / "student.onnx", run / "qat" / "student_int8_qdq.onnx")
    (run / "dynamic_quant").mkdir()
    shutil.copyfile(run / "export" / "student.onnx", run / "dynamic_quant" / "student_dynamic_int8.onnx")
    vouch(run, "qat", {"student_qat_onnx": "qat/student_int8_qdq.onnx"})
    vouch(run, "dynamic_quant", {"student_dynamic_int8_onnx": "dynamic_quant/student_dynamic_int8.onnx"})
    return run


def test_tensorrt_bundle_holds_package_val_onnx_and_job(small_run):
    bundle, warnings = make_bundle(small_run, device(backends=["tensorrt"]))
    assert warnings == []
    paths = set(bundle.digests)
    assert {
        "edgekd_device/bench.py",
        "edgekd_device/measure.py",
        "edgekd_device/trt_build.py",
        "bench/val.npz",
        "job.json",
    } <= paths
    assert {"export/student.onnx", "export/teacher.onnx", "qat/student_int8_qdq.onnx"} <= paths
    assert "dynamic_quant/student_dynamic_int8.onnx" not in paths  # TensorRT cannot build ORT's dynamic int8 ops
    job = json.loads(bundle.job)
    assert Job.from_dict(job, None).to_json() == bundle.job  # what the device reads is what the host wrote
    assert job["schema"] == JOB_SCHEMA and job["onnx"] == []
    assert sorted((e["id"], e["onnx"]) for e in job["engines"]) == [
        ("student_qat_trt_int8", "qat/student_int8_qdq.onnx"),
        ("student_trt_fp16", "export/student.onnx"),
        ("teacher_trt_fp16", "export/teacher.onnx"),
    ]
    assert job["tensorrt"] == {
        "dla_core": None,
        "static_shapes": False,
        "workspace_mb": 1024,
        "min_batch": 1,
        "opt_batch": 8,
        "max_batch": 32,
    }


def test_onnxruntime_bundle_runs_every_onnx(small_run):
    bundle, _ = make_bundle(small_run, device(backends=["onnxruntime"]))
    job = json.loads(bundle.job)
    assert job["engines"] == []
    assert {(e["id"], e["path"]) for e in job["onnx"]} == {
        ("teacher_onnx", "export/teacher.onnx"),
        ("student_onnx", "export/student.onnx"),
        ("student_qat_onnx", "qat/student_int8_qdq.onnx"),
        ("student_dynamic_int8_onnx", "dynamic_quant/student_dynamic_int8.onnx"),
    }


def test_bundle_id_is_content_addressed(small_run):
    first, _ = make_bundle(small_run, device(backends=["onnxruntime"]))
    again, _ = make_bundle(small_run, device(backends=["onnxruntime"]))
    assert first.id == again.id and first.objects().keys() == again.objects().keys()
    other_settings, _ = make_bundle(small_run, device(backends=["onnxruntime"], benchmark={"batch_sizes": [1]}))
    assert other_settings.id != first.id
    assert set(other_settings.objects()) - set(first.objects()) == {
        other_settings.digests["job.json"]
    }  # only the job differs
    (small_run / "export" / "student.onnx").write_bytes(b"changed")  # not what the export stage recorded
    vouch(small_run, "export", {"student_onnx": "export/student.onnx", "teacher_onnx": "export/teacher.onnx"})
    changed, _ = make_bundle(small_run, device(backends=["onnxruntime"]))
    assert changed.id != first.id and changed.digests["export/student.onnx"] != first.digests["export/student.onnx"]


def test_int8_without_qdq_onnx_is_a_warning(run_dir_template):
    bundle, warnings = make_bundle(
        run_dir_template, device(backends=["tensorrt"], tensorrt={"precisions": ["fp16", "int8"]})
    )
    assert len(warnings) == 1 and "no Q/DQ int8 ONNX" in warnings[0]
    assert all(e["precision"] == "fp16" for e in json.loads(bundle.job)["engines"])


def test_plan_engines_takes_catalogue_rows_of_the_given_sources(small_run):
    jobs = plan_engines(small_run, {"student_onnx": small_run / "export" / "student.onnx"}, ["fp32", "int8"])
    assert [(j.id, j.precision, j.onnx) for j in jobs] == [("student_trt_fp32", "fp32", "export/student.onnx")]
    jobs = plan_engines(small_run, shippable(small_run), ["fp16", "int8"])
    assert sorted(j.id for j in jobs) == ["student_qat_trt_int8", "student_trt_fp16", "teacher_trt_fp16"]


def test_only_what_the_manifest_vouches_for_ships(small_run):
    """A file on disk that no finished stage recorded (a failed check, a stale config) never ships; nor does an
    artifact changed after its stage recorded it, even at the same size."""
    shutil.copyfile(small_run / "export" / "student.onnx", small_run / "qat" / "student_ptq_int8_qdq.onnx")
    onnx = small_run / "qat" / "student_int8_qdq.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    onnx.write_bytes(bytes(data))
    bundle, _ = make_bundle(small_run, device(backends=["onnxruntime"]))
    assert "qat/student_ptq_int8_qdq.onnx" not in bundle.digests
    assert "qat/student_int8_qdq.onnx" not in bundle.digests
    assert "export/student.onnx" in bundle.digests


def test_prebuilt_engines_replace_onnx(small_run, tmp_path):
    prebuilt = {}
    for name in ("teacher_trt_fp16", "student_trt_fp16"):
        (tmp_path / f"{name}.engine").write_bytes(name.encode())
        (tmp_path / f"{name}.json").write_text("{}")
        prebuilt[name] = tmp_path / f"{name}.engine"
    bundle, _ = make_bundle(small_run, device(backends=["tensorrt"], tensorrt={"precisions": ["fp16"]}), prebuilt)
    assert not any(p.endswith(".onnx") for p in bundle.digests)
    assert {"engines/teacher_trt_fp16.engine", "engines/student_trt_fp16.json"} <= set(bundle.digests)
    assert {e["prebuilt"] for e in json.loads(bundle.job)["engines"]} == {
        "engines/teacher_trt_fp16.engine",
        "engines/student_trt_fp16.engine",
    }


def test_missing_val_batch_is_named(small_run):
    (small_run / "bench" / "val.npz").unlink()
    with pytest.raises(EdgekdError, match=r"bench/val.npz: no validation batch the manifest vouches for"):
        make_bundle(small_run, device())


def test_nothing_to_benchmark_is_an_error(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "val.npz").write_bytes(b"x")
    with pytest.raises(EdgekdError, match="no manifest.json; not a run directory"):
        make_bundle(tmp_path, device())
    vouch(tmp_path, "benchmark", {"val_set": "bench/val.npz"})
    with pytest.raises(EdgekdError, match="nothing to benchmark on xav"):
        make_bundle(tmp_path, device())
