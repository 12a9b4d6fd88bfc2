"""PTQ val top-1 of a run's distilled student for each calibration method (max, percentile, entropy, mse).

    python benchmarks/calibration_methods.py pipelines/quickstart.yaml [--run-dir runs/quickstart]

Calibration batches come from the training split (as in the qat stage); accuracy is on the validation
split, for the torch fake-quant model and for its Q/DQ ONNX in ONNX Runtime.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from run_student import run_student

from edgekd.export.parity import top1_accuracy
from edgekd.quant import calibrate_ptq, export_qdq_onnx


def main() -> None:
    cfg, student, _, data = run_student(__doc__.splitlines()[0])
    val = list(data.val.batches(cfg.data.eval_batch_size))
    fp32 = top1(student, val)
    print(
        f"fp32 student val top-1 {fp32:.2f}%  ({cfg.qat.calibration_batches} calibration batches of {cfg.data.batch_size})"
    )
    print("| method | fake-quant top-1 | ONNX Runtime top-1 | drop vs fp32 | calibration s |")
    print("|---|---|---|---|---|")
    for method in ("max", "percentile", "entropy", "mse"):
        calib = data.train.batches(cfg.data.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))
        t0 = time.perf_counter()
        ptq = calibrate_ptq(student, calib, cfg.qat.calibration_batches, method, cfg.qat.percentile)
        took = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            path = export_qdq_onnx(ptq, Path(tmp) / "ptq.onnx", val[0][0][:1])
            ort = top1_accuracy(path, val)
        fq = top1(ptq, val)
        print(f"| {method} | {fq:.2f}% | {ort:.2f}% | {fp32 - ort:+.2f} | {took:.1f} |")


@torch.no_grad()
def top1(model: torch.nn.Module, batches: list) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y, *_ in batches)
    return 100.0 * correct / sum(len(b[1]) for b in batches)


if __name__ == "__main__":
    main()
