"""A benchmarked run directory shared by the bench and report tests."""

import numpy as np
import pytest

FAST = dict(batch_sizes=(1, 4), warmup=1, min_runs=3, min_seconds=0.0, repeats=2, threads=1)


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory, build_tiny_onnx):
    """A run dir with a real eager teacher, ONNX and TorchScript students, a skipped and a broken artifact, benchmarked.

    Returns (run_dir, bench document, teacher_logits).
    """
    import warnings

    import torch
    from torch import nn

    from edgekd.bench.benchmark import ArtifactEntry, benchmark_artifacts
    from edgekd.bench.latency import LatencySettings
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

    artifacts = [
        ArtifactEntry("student_onnx_fp32", "student", "onnx", "fp32", "export", "export/student.onnx"),
        ArtifactEntry("teacher_pytorch_fp32", "teacher", "pytorch", "fp32", "teacher", "teacher/model.pt"),
        ArtifactEntry("student_torchscript_fp32", "student", "torchscript", "fp32", "export", "export/student.ts.pt"),
        ArtifactEntry(
            "student_tensorrt_fp16",
            "student",
            "tensorrt",
            "fp16",
            "tensorrt",
            "tensorrt/local/student_fp16.engine",
            status="skipped",
            reason="TensorRT is not installed on this host",
        ),
        ArtifactEntry("student_onnx_int8", "student", "onnx", "int8", "qat", "qat/student_int8_qdq.onnx"),
    ]
    doc = benchmark_artifacts(artifacts, images, labels, teacher_logits, LatencySettings(**FAST), "local", run_dir)
    return run_dir, doc, teacher_logits
