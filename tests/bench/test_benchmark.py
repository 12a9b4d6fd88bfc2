"""The host benchmark: what it times (the manifest's word), the records it writes, and that it closes every runtime."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgekd.bench import benchmark
from edgekd.bench.benchmark import Planned, benchmark_artifacts, load_val_set, plan_host, save_val_set
from edgekd.errors import EdgekdError
from edgekd.manifest import Manifest
from edgekd.ondevice import catalog, measure
from edgekd.ondevice.records import BenchDoc


def test_bench_file_is_a_valid_bench_document(bench_run) -> None:
    run_dir, doc, _ = bench_run
    on_disk = BenchDoc.from_dict(json.loads((run_dir / "bench" / "local.json").read_text()))
    assert on_disk == doc and doc.reference == catalog.REFERENCE and doc.created.endswith("Z")
    assert (
        doc.system["cores"] >= 1
        and doc.settings["threads"] == 1
        and doc.settings["spread_limit"] == measure.SPREAD_LIMIT
    )
    assert set(doc.conditions) >= {"before", "after", "figures"} and "loadavg" in doc.conditions["before"]
    ids = [a.id for a in doc.artifacts]
    assert ids == [a.id for a in catalog.benchmarked("host") if a.id in ids]  # catalogue order, catalogue ids


def test_measured_artifacts(bench_run) -> None:
    run_dir, doc, _ = bench_run
    for art_id in ("teacher", "student_ts", "student_onnx"):
        a = doc.get(art_id)
        assert a.status == "done" and a.reason is None, a.reason
        assert a.size_bytes == (run_dir / a.path).stat().st_size and len(a.sha256) == 64
        assert [lat.batch_size for lat in a.latency] == [1, 4]
        for lat in a.latency:
            assert lat.runs >= 6 and lat.p50_ms > 0 and len(lat.round_p50_ms) == 2 and lat.spread >= 0
            assert lat.power_w is None and lat.energy_mj is None  # no power rails on this host: n/a, not 0
        assert a.accuracy.n == 12 and a.runtime.threads == 1
    assert doc.get("student_onnx").runtime.provider == "CPUExecutionProvider"
    assert doc.get("student_ts").runtime.name == "torchscript"
    teacher = doc.get("teacher")
    assert teacher.accuracy.top1 == pytest.approx(75.0) and teacher.accuracy.agreement == 100.0
    assert teacher.params > 0 and teacher.macs > 0


def test_skipped_stages_give_skipped_records_with_their_reason(bench_run) -> None:
    _, doc, _ = bench_run
    for art_id in ("student_trt_fp16", "teacher_trt_fp32", "student_qat_trt_int8"):
        a = doc.get(art_id)
        assert a.status == "skipped" and a.reason == "stage tensorrt skipped: TensorRT is not installed on this host"
        assert a.path == f"tensorrt/local/{art_id}.engine" and a.latency == [] and a.accuracy is None
    assert doc.get("student_dynamic_int8_onnx").reason == "stage dynamic_quant skipped: dynamic_quant.enabled is false"
    # a row its finished stage did not make (student made by no recorded distill stage, PTQ off) is not listed
    assert doc.get("student_ptq_onnx") is None and doc.get("student") is None


def test_broken_artifact_is_recorded_as_failed(bench_run) -> None:
    _, doc, _ = bench_run
    a = doc.get("student_qat_onnx")
    assert a.status == "failed" and a.latency == [] and a.size_bytes == len(b"truncated")
    assert a.reason.startswith("qat/student_int8_qdq.onnx: onnxruntime cannot load") and "\n" not in a.reason


def test_only_what_the_manifest_vouches_for_is_timed(tmp_path: Path, build_tiny_onnx, stage_recorder) -> None:
    manifest = Manifest(tmp_path, "t")
    (tmp_path / "export").mkdir()
    onnx = build_tiny_onnx(tmp_path / "export" / "student.onnx")
    stage_recorder(manifest, "export", "done", {"student_onnx": onnx})
    build_tiny_onnx(tmp_path / "export" / "teacher.onnx")  # on disk, but no stage vouches for it
    assert plan_host(tmp_path, manifest, "local") == [Planned("student_onnx", "export/student.onnx")]
    build_tiny_onnx(onnx, seed=1)  # changed after the stage recorded it
    (changed,) = plan_host(tmp_path, manifest, "local")
    assert changed.id == "student_onnx" and "changed since stage export made it" in changed.reason


def test_the_scouts_file_is_timed_only_when_the_scout_made_it_and_never_scored(
    tmp_path: Path, build_tiny_onnx, stage_recorder, fast
) -> None:
    manifest = Manifest(tmp_path, "t")
    (tmp_path / "export").mkdir()
    (tmp_path / "scout").mkdir()
    student = build_tiny_onnx(tmp_path / "export" / "student.onnx")
    stage_recorder(manifest, "export", "done", {"student_onnx": student})
    for status in ("skipped", "failed"):  # every run without `student.model: auto`: no row of it at all
        stage_recorder(manifest, "scout", status, {}, reason="student.model is not auto")
        assert [p.id for p in plan_host(tmp_path, manifest, "local")] == ["student_onnx"]
    chosen = build_tiny_onnx(tmp_path / "scout" / "chosen.onnx", seed=1)
    stage_recorder(manifest, "scout", "done", {"scout_onnx": chosen})
    planned = plan_host(tmp_path, manifest, "local")
    assert [p.id for p in planned] == ["student_onnx", "scout_onnx"]
    images = np.random.default_rng(0).normal(size=(6, 1, 8, 8)).astype(np.float32)
    labels = np.arange(6) % 10
    doc = benchmark_artifacts(planned, images, labels, None, fast, "local", tmp_path)
    scout, trained = doc.get("scout_onnx"), doc.get("student_onnx")
    assert trained.accuracy is not None and scout.status == "done" and scout.accuracy is None  # latency alone
    assert [lat.batch_size for lat in scout.latency] == [1, 4] and scout.row.label.endswith("(latency only)")
    assert len(scout.latency[0].round_p50_ms) == len(trained.latency[0].round_p50_ms) == fast.repeats


def test_every_runtime_is_closed_exactly_once(tmp_path: Path, build_tiny_onnx, monkeypatch, bench_run, fast) -> None:
    """Runtimes that load and run, fail to load, and fail to run: each is released once, through open_runtime
    (the path TensorRT engines take too)."""
    run_dir, _, _ = bench_run
    (tmp_path / "export").mkdir()
    for name in ("teacher.pt", "student.ts.pt"):
        (tmp_path / "export" / name).write_bytes(
            (run_dir / ("teacher/model.pt" if name == "teacher.pt" else "export/student.ts.pt")).read_bytes()
        )
    build_tiny_onnx(tmp_path / "export" / "student.onnx")
    (tmp_path / "export" / "teacher.onnx").write_bytes(b"garbage")  # load fails
    build_tiny_onnx(tmp_path / "export" / "int8.onnx", batch=3)  # loads, then no batch size fits: fails after load
    releases: Counter = Counter()
    opened = []
    real_open = benchmark.open_runtime

    def counting_open(path, *args, **kwargs):
        rt = real_open(path, *args, **kwargs)
        release = rt._release

        def counted() -> None:
            releases[Path(path).name] += 1
            release()

        rt._release = counted
        opened.append(rt)
        return rt

    monkeypatch.setattr(benchmark, "open_runtime", counting_open)
    planned = [
        Planned("teacher", "export/teacher.pt"),
        Planned("student_ts", "export/student.ts.pt"),
        Planned("student_onnx", "export/student.onnx"),
        Planned("teacher_onnx", "export/teacher.onnx"),
        Planned("student_qat_onnx", "export/int8.onnx"),
    ]
    images = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
    doc = benchmark_artifacts(planned, images, np.zeros(4, np.int64), None, fast, "local", tmp_path)
    assert [a.status for a in doc.artifacts] == ["done", "done", "done", "failed", "failed"]
    assert "accepts only batch size 3" in doc.get("student_qat_onnx").reason
    assert len(opened) == 5 and all(rt.closed for rt in opened)
    assert releases == Counter({p.path.split("/")[1]: 1 for p in planned})


def test_val_set_round_trip(tmp_path: Path) -> None:
    images = np.ones((3, 1, 4, 4), np.float64)
    save_val_set(tmp_path / "bench" / "val.npz", images, [0, 1, 2], np.zeros((3, 5)))
    got_images, labels, logits = load_val_set(tmp_path / "bench" / "val.npz")
    assert got_images.dtype == np.float32 and labels.dtype == np.int64 and logits.shape == (3, 5)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(EdgekdError, match="bad.npz"):
        load_val_set(tmp_path / "bad.npz")
