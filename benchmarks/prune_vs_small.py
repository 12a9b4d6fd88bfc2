"""Batch-1 ONNX Runtime latency of pruned runs' students against their teacher and hand-picked registry students.

    python benchmarks/prune_vs_small.py runs/prune [runs/prune30 ...] [resnet8 resnet14 ...]

Arguments that are directories are runs: the first gives the teacher (`export/teacher.onnx`), each its distilled
student (`export/student.onnx`) and that student's top-1 from the run's bench file. The others are registry
models, exported here with fresh weights (latency does not depend on them) at the first run's input. All are timed
with the benchmark's harness (ondevice/measure.time_runs) in interleaved rounds so a slow period of the machine
hits all alike; prints p50 per round, the median of the rounds, MACs, params and the conv layers' widths.
Accuracy of a hand-picked student needs its own run (pipelines/quickstart.yaml).
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
from edgekd.ondevice import catalog
from edgekd.ondevice.measure import time_runs
from edgekd.rundir import RunDir, load_bench
from edgekd.runtimes.onnxruntime import runtime

ROUNDS = 7


def _widths(model: torch.nn.Module) -> str:
    return "/".join(str(w) for w in sorted({m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)}))


def _top1(run: Path, artifact: str) -> str:
    bench = next((b for b in map(load_bench, RunDir(run).bench_files()) if b.kind == "host"), None)
    rec = bench.get(artifact) if bench is not None else None
    return f"{rec.accuracy.top1:.2f}%" if rec is not None and rec.accuracy is not None else "-"


def main() -> None:
    runs = [Path(a) for a in sys.argv[1:] if Path(a).is_dir()]
    names = [a for a in sys.argv[1:] if not Path(a).is_dir()] or ["resnet8"]
    if not runs:
        sys.exit("usage: prune_vs_small.py RUN_DIR [RUN_DIR ...] [REGISTRY_MODEL ...]")
    teacher, spec = load_model(runs[0] / catalog.path_of("teacher"))
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    models = {"teacher": (teacher, runs[0] / catalog.path_of("teacher_onnx"), _top1(runs[0], "teacher_onnx"))}
    for run in runs:
        student, _ = load_model(run / catalog.path_of("student"))
        models[f"{run.name} student"] = (student, run / catalog.path_of("student_onnx"), _top1(run, "student_onnx"))
    tmp = Path(tempfile.mkdtemp())
    for name in names:
        model = build_model(name, spec.num_classes, spec.in_channels).eval()
        models[name] = (model, export_onnx(model, tmp / f"{name}.onnx", torch.zeros(1, *shape)), "-")
    batch = np.zeros((1, *shape), dtype=np.float32)
    rounds: dict[str, list[float]] = {k: [] for k in models}
    runtimes = {k: runtime(path, providers=("CPUExecutionProvider",)).load() for k, (_, path, _) in models.items()}
    try:
        for _ in range(ROUNDS):
            for key, rt in runtimes.items():
                rounds[key].append(time_runs(rt.prepare(batch), 1, warmup=5, min_seconds=0.3, repeats=1)["p50_ms"])
    finally:
        for rt in runtimes.values():
            rt.close()
    print("| model | conv widths | MACs | params | val top-1 (run) | p50 b=1 per round (ms) | median (ms) |")
    print("|---|---|---|---|---|---|---|")
    for key, (model, _, top1) in models.items():
        per_round = ", ".join(f"{v:.3f}" for v in rounds[key])
        print(
            f"| {key} | {_widths(model)} | {count_macs(model, shape) / 1e6:.2f} M | {count_params(model) / 1e3:.1f} k "
            f"| {top1} | {per_round} | {statistics.median(rounds[key]):.3f} |"
        )


if __name__ == "__main__":
    main()
