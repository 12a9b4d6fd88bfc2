"""Batch-1 ONNX Runtime latency of a pruned run's teacher and pruned student against hand-picked registry students.

    python benchmarks/prune_vs_small.py runs/prune [resnet8 resnet14 ...]

Times `export/teacher.onnx` and `export/student.onnx` of the run and each named registry model (exported here with
fresh weights: latency does not depend on them) with the benchmark's harness (ondevice/measure.time_runs), in
interleaved rounds so a slow period of the machine hits all alike; prints p50 per round, the median of the
rounds, MACs and params. Accuracy of a hand-picked student needs its own run (pipelines/quickstart.yaml).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgekd.bench.macs import count_macs
from edgekd.export.onnx import export_onnx
from edgekd.models import build_model, count_params, load_model
from edgekd.ondevice.measure import time_runs
from edgekd.runtimes.onnxruntime import runtime

ROUNDS = 5


def main() -> None:
    run = Path(sys.argv[1])
    names = sys.argv[2:] or ["resnet8"]
    teacher, spec = load_model(run / "teacher" / "model.pt")
    student, _ = load_model(run / "distill" / "student.pt")
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    models = {
        "teacher": (teacher, run / "export" / "teacher.onnx"),
        "pruned": (student, run / "export" / "student.onnx"),
    }
    tmp = Path(tempfile.mkdtemp())
    for name in names:
        model = build_model(name, spec.num_classes, spec.in_channels).eval()
        models[name] = (model, export_onnx(model, tmp / f"{name}.onnx", torch.zeros(1, *shape)))
    batch = np.zeros((1, *shape), dtype=np.float32)
    rounds: dict[str, list[float]] = {k: [] for k in models}
    runtimes = {k: runtime(path, providers=("CPUExecutionProvider",)).load() for k, (_, path) in models.items()}
    try:
        for _ in range(ROUNDS):
            for key, rt in runtimes.items():
                rounds[key].append(time_runs(rt.prepare(batch), 1, warmup=5, min_seconds=0.3, repeats=1)["p50_ms"])
    finally:
        for rt in runtimes.values():
            rt.close()
    print("| model | MACs | params | p50 b=1 per round (ms) | median (ms) |")
    print("|---|---|---|---|---|")
    for key, (model, _) in models.items():
        per_round = ", ".join(f"{v:.3f}" for v in rounds[key])
        print(
            f"| {key} | {count_macs(model, shape) / 1e6:.2f} M | {count_params(model) / 1e3:.1f} k | {per_round} | "
            f"{statistics.median(rounds[key]):.3f} |"
        )


if __name__ == "__main__":
    main()
