"""A benchmarked run directory shared by the bench tests: real manifest, real runtimes."""

import numpy as np
import pytest

from edgekd.ondevice.measure import Settings

FAST = Settings(batch_sizes=(1, 4), warmup=1, min_runs=3, min_seconds=0.0, repeats=2, threads=1)


def record_stage(manifest, stage: str, status: str, artifacts: dict, reason: str | None = None) -> None:
    """Write a stage record the way the runner does (artifact id -> path, sha256, bytes)."""
    from edgekd.manifest import ArtifactEntry, StageRecord
    from edgekd.ondevice.files import sha256_file

    arts = {
        art_id: ArtifactEntry(path.relative_to(manifest.run_dir).as_posix(), sha256_file(path), path.stat().st_size)
        for art_id, path in artifacts.items()
    }
    manifest.record(stage, StageRecord(status, artifacts=arts, reason=reason))


@pytest.fixture
def fast() -> Settings:
    """Quick timing settings for tests."""
    return FAST


@pytest.fixture
def stage_recorder():
    """record_stage(manifest, stage, status, {artifact id: path}, reason=None)."""
    return record_stage


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory, build_tiny_onnx):
    """A run dir with an eager teacher, ONNX and TorchScript students, a broken Q/DQ file, a skipped stage, benchmarked
    through the manifest. Returns (run_dir, BenchDoc, teacher_logits)."""
    import warnings

    import torch
    from torch import nn

    from edgekd.bench.benchmark import benchmark_artifacts, plan_host
    from edgekd.manifest import Manifest
    from edgekd.models import ModelSpec, build_model, save_model

    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    spec = ModelSpec("resnet8", 10, 1, 8)
    teacher = build_model(spec.name, spec.num_classes, spec.in_channels).eval()
    save_model(run_dir / "teacher" / "model.pt", teacher, spec)
    (run_dir / "export").mkdir()
    build_tiny_onnx(run_dir / "export" / "student.onnx")
    student = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
    ).eval()
    images = np.random.default_rng(2).normal(size=(12, 1, 8, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(
            torch.jit.trace(student, torch.from_numpy(images[:1])), str(run_dir / "export" / "student.ts.pt")
        )
    (run_dir / "qat").mkdir()
    (run_dir / "qat" / "student_int8_qdq.onnx").write_bytes(b"truncated")
    with torch.no_grad():
        teacher_logits = teacher(torch.from_numpy(images)).numpy()
    labels = teacher_logits.argmax(1)
    labels[:3] = (labels[:3] + 1) % 10  # teacher right on 9 of 12

    manifest = Manifest(run_dir, "test")
    record_stage(manifest, "teacher", "done", {"teacher": run_dir / "teacher" / "model.pt"})
    record_stage(
        manifest,
        "export",
        "done",
        {"student_onnx": run_dir / "export" / "student.onnx", "student_ts": run_dir / "export" / "student.ts.pt"},
    )
    record_stage(manifest, "qat", "done", {"student_qat_onnx": run_dir / "qat" / "student_int8_qdq.onnx"})
    record_stage(manifest, "tensorrt", "skipped", {}, reason="TensorRT is not installed on this host")
    record_stage(manifest, "dynamic_quant", "skipped", {}, reason="dynamic_quant.enabled is false")
    doc = benchmark_artifacts(
        plan_host(run_dir, manifest, "local"), images, labels, teacher_logits, FAST, "local", run_dir
    )
    return run_dir, doc, teacher_logits
