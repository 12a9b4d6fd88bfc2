"""A pruning candidate's latency, measured the way the benchmark measures the student's ONNX file.

The candidate is exported to ONNX (edgekd.export, as the export stage does) and timed at batch 1, in the same
interleaved rounds as the unpruned teacher's file, by a timer the prune stage hands in (edgekd.fleet.timing: ONNX
Runtime here with the benchmark's harness, or shipped to a device and judged on the row the report judges there),
so pruning and the scout time candidates with one code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export.onnx import export_onnx
from edgekd.ondevice.measure import Settings
from edgekd.ondevice.records import ArtifactRecord, Latency


def time_candidate(
    model: nn.Module,
    example: torch.Tensor,
    onnx_path: Path,
    timer: Callable[..., tuple[dict[str, ArtifactRecord], str]],
    settings: Settings,
    opset: int,
    log: Callable[[str], None],
    reference: Path | None = None,
) -> tuple[ArtifactRecord, Latency, Latency | None]:
    """`model` exported to `onnx_path` at `opset` (the pipeline's export.opset, as the scout exports its
    candidates) and timed by `timer` (an edgekd.fleet.timing.Timer) at batch 1, with the `reference` ONNX file
    (the unpruned teacher's) in the same interleaved rounds where one is given: the record the figure is of, its
    latency and the reference's. A file that could not be timed is a one-line error with the reason."""
    export_onnx(model, onnx_path, example[:1], opset=opset, dynamic_batch=True)
    batch = np.ascontiguousarray(example[:1].cpu().numpy(), dtype=np.float32)
    files = {onnx_path.stem: onnx_path} | ({reference.stem: reference} if reference is not None else {})
    records, _ = timer(files, batch, settings._replace(batch_sizes=(1,)), log)
    rec = records[onnx_path.stem]
    ref = _latency(records[reference.stem], reference) if reference is not None else None
    return rec, _latency(rec, onnx_path), ref


def _latency(rec: ArtifactRecord, path: Path) -> Latency:
    latency = rec.latency_at(1) if rec.status == "done" else None
    if latency is None:
        raise EdgekdError(f"student.prune.target.device: {path.name} could not be timed: {rec.reason}")
    return latency
