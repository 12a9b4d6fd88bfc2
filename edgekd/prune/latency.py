"""A pruning candidate's latency, measured the way the benchmark measures the student's ONNX file.

The candidate is exported to ONNX (edgekd.export, as the export stage does) and timed with the benchmark's
harness (ondevice/measure.time_runs: warm-up, interleaved rounds, their spread) on ONNX Runtime at batch 1,
the runtime and batch size of the report's `student_onnx` row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.export.onnx import export_onnx
from edgekd.ondevice.measure import Settings, time_runs
from edgekd.runtimes.onnxruntime import runtime


def measure_latency(model: nn.Module, example: torch.Tensor, onnx_path: Path, settings: Settings) -> dict:
    """Batch-1 latency summary (p50_ms, spread, ...; ondevice.measure.summarize) of `model` exported to `onnx_path`."""
    export_onnx(model, onnx_path, example[:1], dynamic_batch=True)
    batch = np.ascontiguousarray(example[:1].cpu().numpy(), dtype=np.float32)
    with runtime(onnx_path, settings.threads, providers=("CPUExecutionProvider",)) as rt:
        return time_runs(
            rt.prepare(batch),
            1,
            warmup=settings.warmup,
            min_runs=settings.min_runs,
            min_seconds=settings.min_seconds,
            repeats=settings.repeats,
        )
