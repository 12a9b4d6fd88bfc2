"""Bundles: what is collected from a run dir, content addressing, engine planning, prebuilt engines."""

import json
import shutil

import pytest

from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.fleet.bundle import make_bundle, plan_engines
from edgekd.ondevice.bench import JOB_SCHEMA


def device(**kw) -> DeviceConfig:
    d = DeviceConfig(**{"host": "jetson", "kind": "jetson-agx-xavier", **kw})
    d.name = "xav"
    return d


@pytest.fixture
def small_run(run_dir_template, tmp_path):
    """The shared run dir plus a fake Q/DQ ONNX and a dynamic int8 ONNX (file names are what planning reads)."""
    run = tmp_path / "run"
    shutil.copytree(run_dir_template, run)
    (run / "qat").mkdir()
    shutil.copyfile(run / "export" / "student.onnx", run / "qat" / "student_int8_qdq.onnx")
    (run / "dynamic_quant").mkdir()
    shutil.copyfile(run / "export" / "student.onnx", run / "dynamic_quant" / "student_dynamic_int8.onnx")
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
    assert job["schema"] == JOB_SCHEMA and job["onnx"] == []
    assert sorted((e["name"], e["onnx"]) for e in job["engines"]) == [
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
    assert {(e["name"], e["precision"]) for e in job["onnx"]} == {
        ("teacher_onnx_fp32", "fp32"),
        ("student_onnx_fp32", "fp32"),
        ("student_qat_onnx_int8", "int8"),
        ("student_onnx_int8_dynamic", "int8-dynamic"),
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
    (small_run / "export" / "student.onnx").write_bytes(b"changed")
    changed, _ = make_bundle(small_run, device(backends=["onnxruntime"]))
    assert changed.id != first.id and changed.digests["export/student.onnx"] != first.digests["export/student.onnx"]


def test_int8_without_qdq_onnx_is_a_warning(run_dir_template):
    bundle, warnings = make_bundle(
        run_dir_template, device(backends=["tensorrt"], tensorrt={"precisions": ["fp16", "int8"]})
    )
    assert len(warnings) == 1 and "no Q/DQ int8 ONNX" in warnings[0]
    assert all(e["precision"] == "fp16" for e in json.loads(bundle.job)["engines"])


def test_plan_engines_limits_sources(small_run):
    jobs = plan_engines(small_run, ["fp32", "int8"], only={"export/student.onnx"})
    assert [(j.name, j.precision) for j in jobs] == [("student_trt_fp32", "fp32")]


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
    with pytest.raises(EdgekdError, match=r"bench/val.npz: validation batch not found"):
        make_bundle(small_run, device())


def test_nothing_to_benchmark_is_an_error(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "val.npz").write_bytes(b"x")
    with pytest.raises(EdgekdError, match="nothing to benchmark on xav"):
        make_bundle(tmp_path, device())
