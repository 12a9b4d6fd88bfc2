"""Where each engine is built from: the calibration set ships to DLA int8 devices only, fp16 jobs name the fp16 ONNX,
and the host's engine cache keys calibrated and strongly typed engines as the device does, so --engines-only finds them."""

import json
import shutil

import numpy as np
import pytest
from fleet_helpers import vouch

from edgekd.config import DeviceConfig
from edgekd.fleet import engine_cache
from edgekd.fleet.bundle import CALIBRATION_PATH, make_bundle
from edgekd.fleet.ship import _prebuilt_engines
from edgekd.ondevice import trt_options
from edgekd.ondevice.calibrate import write_calibration_set
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.job import EngineEntry, Job
from edgekd.ondevice.trt_options import BuildOptions

KIND = "jetson-agx-xavier"
DLA = {"dla_core": 0, "static_shapes": True}


def device(backends=("tensorrt",), **tensorrt) -> DeviceConfig:
    d = DeviceConfig(host="jetson", kind=KIND, backends=list(backends), tensorrt=tensorrt)
    d.name = "xav"
    return d


@pytest.fixture
def run(run_dir_template, tmp_path):
    """The shared run plus a Q/DQ stand-in, an fp16 student ONNX stand-in and bench/calib.npz, all vouched for."""
    run = tmp_path / "run"
    shutil.copytree(run_dir_template, run)
    (run / "qat").mkdir()
    shutil.copyfile(run / "export" / "student.onnx", run / "qat" / "student_int8_qdq.onnx")
    (run / "export" / "student_fp16.onnx").write_bytes(b"fp16 stand-in")
    write_calibration_set(str(run / CALIBRATION_PATH), np.ones((4, 1, 8, 8)), seed=0)
    vouch(run, "qat", {"student_qat_onnx": "qat/student_int8_qdq.onnx"})
    vouch(
        run,
        "export",
        {
            "student_onnx": "export/student.onnx",
            "teacher_onnx": "export/teacher.onnx",
            "student_onnx_fp16": "export/student_fp16.onnx",
        },
    )
    vouch(run, "benchmark", {"val_set": "bench/val.npz", "calib_set": CALIBRATION_PATH})
    return run


def job_of(run, dev):
    bundle, warnings = make_bundle(run, dev)
    return bundle, json.loads(bundle.job), warnings


def test_dla_int8_devices_get_the_calibration_set_and_a_calibrated_engine_from_the_fp32_onnx(run):
    bundle, job, warnings = job_of(run, device(precisions=["fp16", "int8"], **DLA))
    assert warnings == [] and job["calibration"] == CALIBRATION_PATH == "export/calib.npz"
    assert bundle.digests[CALIBRATION_PATH] == sha256_file(str(run / CALIBRATION_PATH))
    int8 = [(e["id"], e["onnx"]) for e in job["engines"] if e["precision"] == "int8"]
    assert int8 == [("student_trt_int8", "export/student.onnx")]  # the DLA takes no Q/DQ: never the QAT file


@pytest.mark.parametrize(
    "settings",
    [
        {"precisions": ["fp16", "fp32"]},
        {"precisions": ["fp16"], **DLA},
        {"precisions": ["int8"], **DLA, "backends": ["onnxruntime"]},
    ],
)
def test_devices_without_int8_engines_get_no_calibration_set(run, settings):
    bundle, job, _ = job_of(run, device(**settings))
    assert job["calibration"] is None and CALIBRATION_PATH not in bundle.digests


def test_gpu_int8_jobs_name_the_calibrated_fallback_and_ship_the_calibration_set(run):
    """A Q/DQ int8 engine stays the GPU's int8 engine; its job names the calibrated engine of the same model's fp32
    ONNX, built only when the Q/DQ build fails on the device (TensorRT 8.5 on a Xavier: NVIDIA/TensorRT #4527)."""
    bundle, job, warnings = job_of(run, device(precisions=["fp16", "int8"]))
    int8 = [EngineEntry.from_dict(e, "e") for e in job["engines"] if e["precision"] == "int8"]
    assert [e.id for e in int8] == ["student_qat_trt_int8"] and warnings == []
    (qat,) = int8
    assert (qat.fallback, qat.fallback_onnx) == ("student_trt_int8", "export/student.onnx")
    assert qat.fallback_onnx_sha256 == sha256_file(str(run / "export" / "student.onnx"))
    assert job["calibration"] == CALIBRATION_PATH and CALIBRATION_PATH in bundle.digests
    calibrated = BuildOptions("int8", calibrated=True)
    assert qat.build_source(calibrated, "8.5.2", "c" * 64)[0] == "export/student.onnx"
    assert qat.build_source(BuildOptions("int8"), "8.5.2", "c" * 64) == ("qat/student_int8_qdq.onnx", qat.onnx_sha256)


def test_without_a_calibration_set_a_gpu_int8_job_names_no_fallback_and_says_so(run):
    vouch(run, "benchmark", {"val_set": "bench/val.npz"})
    bundle, job, warnings = job_of(run, device(precisions=["int8"]))
    assert [e.get("fallback") for e in job["engines"]] == [None] and job["calibration"] is None
    assert warnings == [
        f"{run / CALIBRATION_PATH}: no calibration set the manifest vouches for (export stage): a Q/DQ int8 build "
        "that fails on the device has no calibrated fallback"
    ]


def test_a_dla_int8_device_without_a_vouched_calibration_set_is_warned(run):
    vouch(run, "benchmark", {"val_set": "bench/val.npz"})
    _, job, warnings = job_of(run, device(precisions=["int8"], **DLA))
    assert job["calibration"] is None
    assert warnings == [
        f"{run / CALIBRATION_PATH}: no calibration set the manifest vouches for (export stage): "
        "int8 on the DLA cannot be calibrated"
    ]


def test_fp16_jobs_name_the_fp16_onnx_and_the_device_picks_by_its_tensorrt(run):
    bundle, job, _ = job_of(run, device(precisions=["fp16"]))
    entries = {e["id"]: EngineEntry(**e) for e in job["engines"]}
    student, teacher = entries["student_trt_fp16"], entries["teacher_trt_fp16"]
    assert student.fp16_onnx == "export/student_fp16.onnx" and "export/student_fp16.onnx" in bundle.digests
    assert teacher.fp16_onnx is None  # no teacher fp16 ONNX vouched for: TensorRT >= 10 will say it needs one
    fp16_sha = sha256_file(str(run / "export" / "student_fp16.onnx"))
    assert student.fp16_onnx_sha256 == fp16_sha
    opts = BuildOptions("fp16")
    assert student.build_source(opts, "8.5.2.2") == ("export/student.onnx", student.onnx_sha256)
    assert student.build_source(opts, "10.16.0") == ("export/student_fp16.onnx", fp16_sha)
    assert student.build_source(opts, "11.1.0") == ("export/student_fp16.onnx", fp16_sha)
    assert teacher.build_source(opts, "10.16.0") == ("export/teacher.onnx", teacher.onnx_sha256)


def test_calibration_changes_the_key_of_calibrated_builds_only():
    entry = EngineEntry("student_trt_int8", "int8", "export/student.onnx", "a" * 64)
    dla = BuildOptions("int8", dla_core=0, static_shapes=True)
    _, calibrated = entry.build_source(dla, "8.5.2.2", "c" * 64)
    assert calibrated == trt_options.calibrated_source("a" * 64, "c" * 64) != "a" * 64
    assert entry.build_source(dla, "8.5.2.2", "d" * 64)[1] != calibrated  # another calibration set, another engine
    assert entry.build_source(BuildOptions("int8"), "8.5.2.2", "c" * 64)[1] == "a" * 64  # GPU int8: Q/DQ, no calibrator


def cached(tmp_path, name, source_sha, opts, trt="8.5.2.2", calibration=None):
    """An engine with the sidecar a device writes, stored in the host's engine cache."""
    engine = tmp_path / f"{name}.engine"
    engine.write_bytes(name.encode())
    sidecar = trt_options.make_sidecar(
        opts, trt, "Xavier", "7.2", KIND, "student.onnx", source_sha, sha256_file(str(engine)),
        inputs=[], outputs=[], dla=None, build_seconds=0.0, created="", calibration=calibration,
    )  # fmt: skip
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    return engine_cache.store(engine, KIND)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))


def test_engines_only_finds_a_calibrated_dla_engine_by_its_calibration_set(run, tmp_path, cache):
    dev = device(precisions=["int8"], **DLA)
    opts = BuildOptions("int8", dla_core=0, static_shapes=True)
    onnx_sha = sha256_file(str(run / "export" / "student.onnx"))
    calib_sha = sha256_file(str(run / CALIBRATION_PATH))
    stored = cached(tmp_path, "student_trt_int8", onnx_sha, opts, calibration={"images": calib_sha, "batches": 1})
    assert engine_cache.lookup(onnx_sha, opts, KIND, "8.5.2.2") is None  # not under the bare ONNX's key
    assert _prebuilt_engines(run, dev, "8.5.2.2") == {"student_trt_int8": stored}

    write_calibration_set(str(run / CALIBRATION_PATH), np.zeros((4, 1, 8, 8)), seed=1)  # a new calibration set
    vouch(run, "benchmark", {"val_set": "bench/val.npz", "calib_set": CALIBRATION_PATH})
    with pytest.raises(Exception, match="no cached int8 engine of export/student.onnx"):
        _prebuilt_engines(run, dev, "8.5.2.2")


def test_engines_only_finds_a_tensorrt_10_fp16_engine_by_its_fp16_onnx(run, tmp_path, cache):
    dev = device(precisions=["fp16"])
    fp16_sha = sha256_file(str(run / "export" / "student_fp16.onnx"))
    teacher_sha = sha256_file(str(run / "export" / "teacher.onnx"))
    student = cached(tmp_path, "student_trt_fp16", fp16_sha, BuildOptions("fp16"), trt="10.16.0")
    teacher = cached(tmp_path, "teacher_trt_fp16", teacher_sha, BuildOptions("fp16"), trt="10.16.0")
    assert _prebuilt_engines(run, dev, "10.16.0") == {"student_trt_fp16": student, "teacher_trt_fp16": teacher}
    with pytest.raises(Exception, match=r"no cached fp16 engine of export/(student|teacher)\.onnx .* TensorRT 8.5.2.2"):
        _prebuilt_engines(run, dev, "8.5.2.2")  # 8.5 builds fp16 from the fp32 ONNX: another key


def test_a_sidecar_whose_calibration_is_not_a_hash_is_refused(tmp_path, cache):
    opts = BuildOptions("int8", dla_core=0, static_shapes=True)
    with pytest.raises(Exception, match=r"calibration: images is '\.\./x'; expected 64 lowercase hex digits"):
        cached(tmp_path, "e", "a" * 64, opts, calibration={"images": "../x"})
    with pytest.raises(Exception, match="calibration is 'yes'; expected an object or null"):
        cached(tmp_path, "e", "a" * 64, opts, calibration="yes")


def test_engines_only_deploys_the_cached_fallback_of_a_qdq_engine_that_never_built(run, tmp_path, cache):
    """On a kind whose TensorRT failed the Q/DQ build, the cache holds only the calibrated fallback (keyed by the fp32
    ONNX and the calibration set): --engines-only deploys it under its own id, with its sidecar, never as the Q/DQ."""
    dev = device(precisions=["int8"])
    opts = BuildOptions("int8", calibrated=True)
    onnx_sha = sha256_file(str(run / "export" / "student.onnx"))
    calibration = {"images": sha256_file(str(run / CALIBRATION_PATH)), "batches": 1}
    stored = cached(tmp_path, "student_trt_int8", onnx_sha, opts, calibration=calibration)
    assert _prebuilt_engines(run, dev, "8.5.2.2") == {"student_trt_int8": stored}
    bundle, warnings = make_bundle(run, dev, _prebuilt_engines(run, dev, "8.5.2.2"))
    job = Job.from_dict(json.loads(bundle.job), None)
    assert [(e.id, e.onnx, e.prebuilt, e.fallback) for e in job.engines] == [
        ("student_trt_int8", "export/student.onnx", "engines/student_trt_int8.engine", None)
    ]
    assert "engines/student_trt_int8.json" in bundle.digests and "qat/student_int8_qdq.onnx" not in bundle.digests
    with pytest.raises(Exception, match="no cached int8 engine of qat/student_int8_qdq.onnx"):
        _prebuilt_engines(run, dev, "10.3.0")  # another TensorRT: nothing cached, no fallback either
