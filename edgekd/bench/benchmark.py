"""Benchmark every artifact of a run on this machine and write bench/<device>.json (schema edgekd.bench/1)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import sha256_file, write_bytes_atomic
from edgekd.bench.accuracy import count_macs, evaluate, file_size
from edgekd.bench.latency import LatencySettings, measure_latency
from edgekd.bench.sysinfo import describe_system
from edgekd.config import BenchmarkConfig
from edgekd.errors import EdgekdError
from edgekd.models import count_params
from edgekd.ondevice.measure import BENCH_SCHEMA, write_json_atomic
from edgekd.runtimes.base import Runtime, backend_for, runtime_for
from edgekd.runtimes.onnxruntime import DEFAULT_PROVIDERS
from edgekd.runtimes.torch_eager import TorchRuntime

log = logging.getLogger(__name__)


@dataclass
class ArtifactEntry:
    """One artifact to benchmark, as the pipeline knows it; `path` is relative to the run dir (or absolute)."""

    name: str  # "student_onnx_int8"
    model: str  # "teacher" | "student"
    format: str  # "pytorch" | "torchscript" | "onnx" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8" | "int8-dynamic"
    source_stage: str  # "distill", "export", "qat", "dynamic_quant", "tensorrt", ...
    path: str
    status: str = "done"  # "done" | "skipped" | "failed" upstream
    reason: str | None = None  # why skipped or failed upstream


RUN_ARTIFACTS = (
    # name, model, format, precision, stage, path relative to the run dir
    ("teacher_pytorch_fp32", "teacher", "pytorch", "fp32", "teacher", "teacher/model.pt"),
    ("teacher_torchscript_fp32", "teacher", "torchscript", "fp32", "export", "export/teacher.ts.pt"),
    ("teacher_onnx_fp32", "teacher", "onnx", "fp32", "export", "export/teacher.onnx"),
    ("student_pytorch_fp32", "student", "pytorch", "fp32", "distill", "distill/student.pt"),
    ("student_torchscript_fp32", "student", "torchscript", "fp32", "export", "export/student.ts.pt"),
    ("student_onnx_fp32", "student", "onnx", "fp32", "export", "export/student.onnx"),
    ("student_onnx_int8_qat", "student", "onnx", "int8", "qat", "qat/student_int8_qdq.onnx"),
    ("student_onnx_int8_ptq", "student", "onnx", "int8", "qat", "qat/student_ptq_int8_qdq.onnx"),
    (
        "student_torchscript_int8-dynamic",
        "student",
        "torchscript",
        "int8-dynamic",
        "dynamic_quant",
        "dynamic_quant/student_dynamic_int8.ts.pt",
    ),
    (
        "student_onnx_int8-dynamic",
        "student",
        "onnx",
        "int8-dynamic",
        "dynamic_quant",
        "dynamic_quant/student_dynamic_int8.onnx",
    ),
)
"""The run directory's benchmarkable files (DESIGN.md layout); TensorRT engines are found under tensorrt/<device>/."""


def run_artifacts(
    run_dir: Path, manifest: dict[str, Any], device_name: str, trt_precisions: Sequence[str] = ("fp16", "int8")
) -> list[ArtifactEntry]:
    """The artifacts of a run to benchmark on `device_name`, from its files and manifest.

    A file that exists is `done`; one whose stage was skipped or failed is listed with the
    stage's reason or error; a file its finished stage did not make (an option turned it
    off) is left out. Engines tensorrt/<device_name>/*.engine take their precision from
    the sidecar JSON's "precision" (else from fp32/fp16/int8 in the file name); when the
    tensorrt stage was skipped, one skipped row per `trt_precisions` carries its reason.
    """
    run_dir = Path(run_dir)
    stages = manifest.get("stages") or {}
    entries = []
    for name, model, fmt, precision, stage, rel in RUN_ARTIFACTS:
        rec = stages.get(stage) or {}
        if (run_dir / rel).is_file():
            entries.append(ArtifactEntry(name, model, fmt, precision, stage, rel))
        elif rec.get("status") in ("skipped", "failed"):
            why = rec.get("reason") or rec.get("error") or f"stage {stage} {rec['status']}"
            entries.append(
                ArtifactEntry(
                    name, model, fmt, precision, stage, rel, "skipped", f"stage {stage} {rec['status']}: {why}"
                )
            )
    for engine in sorted((run_dir / "tensorrt" / device_name).glob("*.engine")):
        sidecar = engine.with_suffix(".json")
        meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
        precision = meta.get("precision") or next((p for p in ("int8", "fp16", "fp32") if p in engine.stem), "fp32")
        model = "teacher" if engine.stem.startswith("teacher") else "student"
        rel = engine.relative_to(run_dir).as_posix()
        entries.append(ArtifactEntry(f"{engine.stem}_tensorrt", model, "tensorrt", precision, "tensorrt", rel))
    trt = stages.get("tensorrt") or {}
    if trt.get("status") in ("skipped", "failed") and not any(e.format == "tensorrt" for e in entries):
        why = trt.get("reason") or trt.get("error") or f"stage tensorrt {trt['status']}"
        for precision in trt_precisions:
            entries.append(
                ArtifactEntry(
                    f"student_tensorrt_{precision}",
                    "student",
                    "tensorrt",
                    precision,
                    "tensorrt",
                    f"tensorrt/{device_name}/student_{precision}.engine",
                    "skipped",
                    f"stage tensorrt {trt['status']}: {why}",
                )
            )
    return entries


def one_line(error: BaseException) -> str:
    """An error as one line: EdgekdError messages as they are, others prefixed with their type."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return text if isinstance(error, EdgekdError) else f"{type(error).__name__}: {text}".rstrip(": ")


def _record(entry: ArtifactEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "model": entry.model,
        "format": entry.format,
        "precision": entry.precision,
        "source_stage": entry.source_stage,
        "path": entry.path,
        "sha256": None,
        "status": entry.status,
        "reason": entry.reason,
        "runtime": None,
        "size_bytes": None,
        "params": None,
        "macs": None,
        "latency": [],
        "accuracy": None,
    }


def _load(path: Path, threads: int, torch_device: str, ort_providers: Sequence[str]) -> Runtime:
    backend = backend_for(path)
    if backend in ("torch_eager", "torchscript"):
        return runtime_for(path, threads, device=torch_device)
    if backend == "onnxruntime":
        return runtime_for(path, threads, providers=ort_providers)
    return runtime_for(path, threads)


def benchmark_artifact(
    entry: ArtifactEntry,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    teacher_logits: np.ndarray | None,
    settings: LatencySettings,
    run_dir: Path,
    torch_device: str = "cpu",
    ort_providers: Sequence[str] = DEFAULT_PROVIDERS,
) -> dict[str, Any]:
    """The bench record of one artifact; a load or run error makes it `failed` with the error's first line."""
    record = _record(entry)
    if entry.status != "done":
        record["reason"] = entry.reason or f"{entry.status} upstream"
        return record
    path = Path(entry.path) if Path(entry.path).is_absolute() else run_dir / entry.path
    try:
        if not path.is_file():
            raise EdgekdError(f"{entry.path}: artifact file not found in {run_dir}")
        record["size_bytes"] = file_size(path)
        record["sha256"] = sha256_file(path)
        runtime = _load(path, settings.resolved_threads, torch_device, ort_providers)
        record["runtime"] = runtime.describe()
        if isinstance(runtime, TorchRuntime) and runtime.name == "pytorch":
            record["params"] = count_params(runtime.module)
            if entry.precision == "fp32":
                record["macs"] = count_macs(runtime.module, tuple(val_images.shape[1:]))
        record["accuracy"] = evaluate(runtime, val_images, val_labels, teacher_logits, max(settings.batch_sizes))
        record["latency"] = measure_latency(runtime, val_images, settings)
        if not record["latency"]:
            raise EdgekdError(
                f"{entry.path}: accepts only batch size {runtime.fixed_batch}; none of the benchmark batch sizes {list(settings.batch_sizes)}"
            )
    except Exception as e:  # one broken artifact must not stop the others; the traceback goes to the log
        log.warning("benchmark of %s failed", entry.name, exc_info=not isinstance(e, EdgekdError))
        record["status"] = "failed"
        record["reason"] = one_line(e).replace(str(path), entry.path)  # run-dir relative, like the record's path
    return record


def benchmark_artifacts(
    artifacts: list[ArtifactEntry],
    val_images: np.ndarray,
    val_labels: np.ndarray,
    teacher_logits: np.ndarray | None,
    settings: LatencySettings | BenchmarkConfig,
    device_name: str,
    run_dir: Path,
    device_kind: str = "host",
    torch_device: str = "cpu",
    ort_providers: Sequence[str] = DEFAULT_PROVIDERS,
) -> dict[str, Any]:
    """Latency and accuracy of every artifact; writes and returns the bench document run_dir/bench/<device_name>.json."""
    if isinstance(settings, BenchmarkConfig):
        settings = LatencySettings.from_config(settings)
    run_dir = Path(run_dir)
    doc = {
        "schema": BENCH_SCHEMA,
        "device": describe_system(device_name, device_kind),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings.as_dict(),
        "artifacts": [
            benchmark_artifact(
                e, val_images, val_labels, teacher_logits, settings, run_dir, torch_device, ort_providers
            )
            for e in artifacts
        ],
    }
    write_json_atomic(str(run_dir / "bench" / f"{device_name}.json"), doc)
    return doc


def save_val_set(path: Path, images: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray) -> None:
    """Write bench/val.npz (images float32 NCHW normalised, labels int64, teacher_logits float32) atomically."""
    buf = io.BytesIO()
    np.savez(
        buf,
        images=np.asarray(images, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        teacher_logits=np.asarray(teacher_logits, dtype=np.float32),
    )
    write_bytes_atomic(Path(path), buf.getvalue())


def load_val_set(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, teacher_logits) from a bench/val.npz."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["images"], data["labels"], data["teacher_logits"]
    except (OSError, KeyError, ValueError) as e:
        raise EdgekdError(
            f"{path}: not a valid val set (needs images, labels, teacher_logits arrays): {one_line(e)}"
        ) from None
