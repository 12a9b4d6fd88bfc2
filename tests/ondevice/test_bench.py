"""bench.py on this machine with the onnxruntime backend: the bench file, failures per artifact, all-or-nothing results."""

import json
import os
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.ondevice import bench
from edgekd.ondevice.job import JOB_SCHEMA
from edgekd.ondevice.measure import BENCH_SCHEMA
from edgekd.ondevice.records import BenchDoc


def linear_onnx(path, weight):
    """logits = Flatten(images) @ weight.T on 1x4x4 images."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", weight.shape[0]])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


@pytest.fixture
def job(tmp_path):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((5, 16))
    images = rng.standard_normal((13, 1, 4, 4)).astype(np.float32)
    logits = images.reshape(13, 16) @ weight.T
    linear_onnx(tmp_path / "export" / "student.onnx", weight)
    (tmp_path / "export" / "broken.onnx").write_bytes(b"not an onnx file")
    (tmp_path / "bench").mkdir()
    np.savez(
        tmp_path / "bench" / "val.npz", images=images, labels=logits.argmax(1), teacher_logits=logits.astype(np.float32)
    )
    doc = {
        "schema": JOB_SCHEMA,
        "device": {"name": "dev", "kind": "test-host", "record_power_mode": False},
        "val": "bench/val.npz",
        "settings": {"batch_sizes": [1, 4], "warmup": 1, "min_runs": 3, "min_seconds": 0.0, "repeats": 2, "threads": 1},
        "ort_providers": ["CPUExecutionProvider"],
        "tensorrt": {},
        "onnx": [
            {"id": "student_onnx", "path": "export/student.onnx"},
            {"id": "teacher_onnx", "path": "export/broken.onnx"},
        ],
        "engines": [],
    }
    (tmp_path / "job.json").write_text(json.dumps(doc))
    return tmp_path / "job.json"


def test_bench_writes_the_bench_file_and_keeps_going_after_a_failure(job, tmp_path):
    out = tmp_path / "results"
    assert bench.main([str(job), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    doc = BenchDoc.from_dict(json.loads((out / "bench" / "dev.json").read_text()))
    assert doc.schema == BENCH_SCHEMA and doc.kind == "test-host" and doc.reference == "teacher_onnx"
    assert doc.settings["batch_sizes"] == [1, 4] and doc.settings["threads"] == 1
    good, broken = doc.artifacts
    assert good.id == "student_onnx" and good.status == "done" and good.path == "export/student.onnx"
    assert good.runtime.provider == "CPUExecutionProvider" and good.runtime.threads == 1
    assert good.sha256 and good.size_bytes == (tmp_path / "export" / "student.onnx").stat().st_size
    assert [lat.batch_size for lat in good.latency] == [1, 4]
    assert all(lat.runs >= 6 and len(lat.round_p50_ms) == 2 for lat in good.latency)
    assert all(lat.power_w is None and lat.energy_mj is None for lat in good.latency)  # no rails here: n/a
    # labels are this very model's argmax: exact agreement, zero divergence
    assert good.accuracy.top1 == 100.0 and good.accuracy.n == 13 and good.accuracy.kl == pytest.approx(0.0, abs=1e-6)
    assert broken.status == "failed" and broken.reason and broken.latency == []
    jetson = doc.conditions["jetson"]
    assert set(jetson) == {"before", "during", "after", "lock_clocks"} and jetson["lock_clocks"]["requested"] is False
    assert set(jetson["before"]) >= {"power_mode", "clocks", "clocks_locked", "temps_c", "throttling"}
    assert doc.conditions["power"] is None and "loadavg" in doc.conditions["before"]
    assert "teacher_onnx: failed" in (out / "tensorrt" / "dev" / "bench.log").read_text()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_given_files_are_timed_under_their_names_without_labels(job, tmp_path):
    """Two ONNX files given to `edgekd bench` share one job: the same catalogue rows, told apart by name; their
    inputs carry no labels, so nothing is scored, and the bench file names the job's reference."""
    doc = json.loads(job.read_text())
    doc["onnx"] = [{"id": "onnx_file", "path": "export/student.onnx", "name": n} for n in ("a", "b")]
    doc["reference"] = "onnx_file"
    job.write_text(json.dumps(doc))
    with np.load(tmp_path / "bench" / "val.npz") as val:
        np.savez(tmp_path / "bench" / "val.npz", images=val["images"])
    out = tmp_path / "results"
    assert bench.main([str(job), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    result = BenchDoc.from_dict(json.loads((out / "bench" / "dev.json").read_text()))
    assert result.reference == "onnx_file" and [a.key for a in result.artifacts] == ["a/onnx_file", "b/onnx_file"]
    assert all(a.status == "done" and a.accuracy is None and len(a.latency) == 2 for a in result.artifacts)
    assert result.get("onnx_file", "b") is result.artifacts[1] and result.get("onnx_file") is None


@pytest.mark.skipif(shutil.which("jetson_clocks") is not None, reason="a real jetson_clocks is installed")
def test_lock_clocks_without_jetson_clocks_is_noted_not_fatal(job, tmp_path):
    doc = json.loads(job.read_text())
    doc["device"]["lock_clocks"] = True
    job.write_text(json.dumps(doc))
    out = tmp_path / "results"
    assert bench.main([str(job), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    lock = json.loads((out / "bench" / "dev.json").read_text())["conditions"]["jetson"]["lock_clocks"]
    assert lock == {"requested": True, "locked_by_bench": False, "error": "jetson_clocks not found"}


def test_missing_validation_data_fails_the_job_and_leaves_no_results(job, tmp_path, capsys):
    os.unlink(tmp_path / "bench" / "val.npz")
    out = tmp_path / "results"
    assert bench.main([str(job), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "val.npz: validation data not found" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_complete_results_are_not_redone_and_dead_runs_are_cleared(job, tmp_path, capsys):
    out = tmp_path / "results"
    (out / "bench").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"results.tmp-{dead.pid}").mkdir()  # left by a run that was killed
    (tmp_path / f"results.tmp-{os.getpid()}").mkdir()  # a run still going
    assert bench.main([str(job), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "results already complete" in capsys.readouterr().out
    assert not (out / "bench" / "dev.json").exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == [f"results.tmp-{os.getpid()}"]


ENGINE = {
    "id": "student_trt_fp16",
    "precision": "fp16",
    "onnx": "export/student.onnx",
    "onnx_sha256": "a" * 64,
    "prebuilt": None,
}
QDQ = {**ENGINE, "id": "student_qat_trt_int8", "precision": "int8", "onnx": "qat/student_int8_qdq.onnx"}
FALLBACK = {"fallback": "student_trt_int8", "fallback_onnx": "export/student.onnx", "fallback_onnx_sha256": "b" * 64}


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.update(val="../../etc/passwd"), "val"),
        (lambda d: d.update(val="/etc/passwd"), "val"),
        (lambda d: d["onnx"][0].update(path="/etc/passwd"), "onnx[0].path"),
        (lambda d: d["onnx"][0].update(path="export/../../x.onnx"), "onnx[0].path"),
        (lambda d: d["onnx"][0].update(path="export/link.onnx"), "onnx[0].path"),  # a symlink out of the bundle
        (lambda d: d["onnx"][1].update(id="../../evil"), "onnx[1].id"),
        (lambda d: d["onnx"][1].update(id="student_trt_fp16"), "onnx[1].id"),  # an engine id in the ONNX list
        (lambda d: d["device"].update(name=".."), "device.name"),
        (lambda d: d["device"].update(name="a/b"), "device.name"),
        (lambda d: d["device"].update(kind="../x"), "device.kind"),
        (lambda d: d.update(engines=[{**ENGINE, "onnx_sha256": "/tmp/x/y"}]), "engines[0].onnx_sha256"),
        (lambda d: d.update(engines=[{**ENGINE, "precision": "/../../p"}]), "engines[0].precision"),
        (lambda d: d.update(engines=[{**ENGINE, "prebuilt": "../engines/x.engine"}]), "engines[0].prebuilt"),
        (lambda d: d.update(engines=[{**ENGINE, "id": "."}]), "engines[0].id"),
        (lambda d: d.update(tensorrt={"workspace_mb": "1/../../x"}), "tensorrt.workspace_mb"),
        (lambda d: d.update(tensorrt={"evil": 1}), "tensorrt.evil"),
        (lambda d: d.update(calibration="../calib.npz"), "calibration"),
        (lambda d: d.update(calibration="/etc/passwd"), "calibration"),
        (
            lambda d: d.update(engines=[{**ENGINE, "fp16_onnx": "../x.onnx", "fp16_onnx_sha256": "a" * 64}]),
            "engines[0].fp16_onnx",
        ),
        (lambda d: d.update(engines=[{**ENGINE, "fp16_onnx": "export/student.onnx"}]), "engines[0].fp16_onnx_sha256"),
    ],
)
def test_a_job_naming_paths_outside_the_bundle_is_refused(job, tmp_path, capsys, change, field):
    """job.json crosses a boundary: names and paths from it are checked before any becomes a path."""
    os.symlink("/etc/hostname", tmp_path / "export" / "link.onnx")
    doc = json.loads(job.read_text())
    change(doc)
    job.write_text(json.dumps(doc))
    out = tmp_path / "results"
    assert bench.main([str(job), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert f"job.json: {field} is " in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "cache").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize(
    "change, field",
    [
        # a TypeError in check_job (issue 22)
        pytest.param(lambda d: d["onnx"][0].update(id=["student_onnx"]), "onnx[0].id", id="id-list"),
        pytest.param(lambda d: d["onnx"][0].update(id={"a": 1}), "onnx[0].id", id="id-object"),
        pytest.param(
            lambda d: d.update(engines=[{**ENGINE, "id": ["student_trt_fp16"]}]), "engines[0].id", id="engine-id-list"
        ),
        pytest.param(lambda d: d.update(device="dev"), "device", id="device-string"),
        pytest.param(lambda d: d.update(device=None), "device", id="device-null"),
        pytest.param(lambda d: d["device"].pop("kind"), "device.kind", id="device-no-kind"),
        # re.match(...$) took a trailing newline
        pytest.param(lambda d: d["device"].update(name="dev\n"), "device.name", id="name-newline"),
        # truthy: would lock the clocks
        pytest.param(lambda d: d["device"].update(lock_clocks="no"), "device.lock_clocks", id="lock-clocks-string"),
        pytest.param(
            lambda d: d["device"].update(record_power_mode=1), "device.record_power_mode", id="power-mode-int"
        ),
        pytest.param(lambda d: d.update(settings="fast"), "settings", id="settings-string"),
        pytest.param(lambda d: d["settings"].update(batch_sizes=["8"]), "settings.batch_sizes[0]", id="batch-string"),
        pytest.param(lambda d: d["settings"].update(batch_sizes=[0]), "settings.batch_sizes[0]", id="batch-zero"),
        pytest.param(lambda d: d["settings"].update(batch_sizes=[]), "settings.batch_sizes", id="batch-empty"),
        pytest.param(lambda d: d["settings"].update(batch_sizes=4), "settings.batch_sizes", id="batch-int"),
        pytest.param(lambda d: d["settings"].update(min_seconds="1"), "settings.min_seconds", id="min-seconds-string"),
        pytest.param(lambda d: d["settings"].update(repeats=True), "settings.repeats", id="repeats-bool"),
        pytest.param(lambda d: d["settings"].update(threads=0), "settings.threads", id="threads-zero"),
        pytest.param(lambda d: d["settings"].update(speed="max"), "settings.speed", id="settings-unknown"),
        pytest.param(lambda d: d.update(ort_providers="CPUExecutionProvider"), "ort_providers", id="providers-string"),
        pytest.param(
            lambda d: d.update(ort_providers=[["CPUExecutionProvider"]]), "ort_providers[0]", id="provider-list"
        ),
        pytest.param(lambda d: d.update(onnx={"student_onnx": "export/student.onnx"}), "onnx", id="onnx-object"),
        pytest.param(lambda d: d.update(onnx=["export/student.onnx"]), "onnx[0]", id="onnx-string"),
        # the same artifact twice
        pytest.param(lambda d: d["onnx"][1].update(id="student_onnx"), "onnx[1].id", id="onnx-twice"),
        pytest.param(lambda d: d["onnx"][0].pop("path"), "onnx[0].path", id="onnx-no-path"),
        pytest.param(
            lambda d: d.update(engines=[{**ENGINE, "precision": ["fp16"]}]), "engines[0].precision", id="precision-list"
        ),
        pytest.param(
            lambda d: d.update(engines=[{**ENGINE, "onnx_sha256": 7}]), "engines[0].onnx_sha256", id="sha-int"
        ),
        pytest.param(
            lambda d: d.update(engines=[{**ENGINE, "onnx_sha256": "a" * 64 + "\n"}]),
            "engines[0].onnx_sha256",
            id="sha-newline",
        ),
        pytest.param(
            lambda d: d.update(engines=[ENGINE], tensorrt={"workspace_mb": 10**300}),
            "tensorrt.workspace_mb",
            id="workspace-huge",
        ),
        pytest.param(
            lambda d: d.update(engines=[ENGINE], tensorrt={"dla_core": "0"}), "tensorrt.dla_core", id="dla-core-string"
        ),
        pytest.param(
            lambda d: d.update(engines=[ENGINE], tensorrt={"min_batch": 8, "max_batch": 1}),
            "tensorrt",
            id="batch-profile",
        ),
        pytest.param(lambda d: d.update(tensorrt=[]), "tensorrt", id="tensorrt-list"),
        # a calibrated fallback: only of an int8 engine, only a calibrated int8 engine, its ONNX inside the bundle
        pytest.param(
            lambda d: d.update(engines=[{**ENGINE, **FALLBACK}]), "engines[0].fallback", id="fallback-of-fp16"
        ),
        pytest.param(
            lambda d: d.update(engines=[{**QDQ, **FALLBACK, "fallback": "student_qat_trt_int8"}]),
            "engines[0].fallback",
            id="fallback-qdq",
        ),
        pytest.param(
            lambda d: d.update(engines=[{**QDQ, **FALLBACK, "fallback_onnx": "../student.onnx"}]),
            "engines[0].fallback_onnx",
            id="fallback-outside",
        ),
        pytest.param(
            lambda d: d.update(engines=[{**QDQ, **FALLBACK}, {**QDQ, "id": "student_trt_int8"}]),
            "engines[0].fallback",
            id="fallback-built-itself",
        ),
        pytest.param(lambda d: d.update(calibration=["bench/calib.npz"]), "calibration", id="calibration-list"),
        # the rows of a given ONNX file name it (a plain name); a run's rows name none
        pytest.param(
            lambda d: d.update(onnx=[{"id": "onnx_file", "path": "export/student.onnx"}]),
            "onnx[0].name",
            id="file-no-name",
        ),
        pytest.param(
            lambda d: d.update(onnx=[{"id": "onnx_file", "path": "export/student.onnx", "name": "../x"}]),
            "onnx[0].name",
            id="file-name-path",
        ),
        pytest.param(lambda d: d["onnx"][0].update(name="student"), "onnx[0].name", id="run-row-named"),
        pytest.param(lambda d: d.update(reference="resnet"), "reference", id="reference-not-an-id"),
        # a field this version does not know is refused, not ignored
        pytest.param(lambda d: d.update(evil=1), "evil", id="unknown-field"),
        pytest.param(lambda d: d.update(schema="edgekd.job/0"), "schema", id="schema"),
        pytest.param(lambda d: d.pop("val"), "val", id="no-val"),
    ],
)
def test_a_malformed_job_is_one_line_naming_the_field(job, tmp_path, capsys, change, field):
    """job.json is untrusted: a field of the wrong type or shape is a one-line JobError (exit 2) naming the field,
    never a traceback, and nothing is written."""
    doc = json.loads(job.read_text())
    change(doc)
    job.write_text(json.dumps(doc))
    out = tmp_path / "results"
    assert bench.main([str(job), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edgekd-device: error: job.json: {field} ") or err.startswith(
        f"edgekd-device: error: job.json: {field}:"
    ), err
    assert len(err.strip().splitlines()) == 1 and len(err) < 400, err
    assert not out.exists() and not (tmp_path / "cache").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize(
    "content, says",
    [
        (b"[1, 2]", "job.json: the job is [1, 2]; expected an object"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b" " * (5 << 20) + b"{}", "larger than"),
    ],
    ids=["a-list", "not-json", "not-utf8", "deep", "huge"],
)
def test_a_job_file_that_is_not_a_job_is_one_line(job, tmp_path, capsys, content, says):
    job.write_bytes(content)
    assert bench.main([str(job), "--out", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err[:500]
