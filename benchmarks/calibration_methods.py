"""PTQ (and, with EDGEKD_QAT=1, QAT) val top-1 of a run's distilled student for each calibration method.

    python benchmarks/calibration_methods.py pipelines/quickstart.yaml [--run-dir runs/quickstart]
    EDGEKD_QAT=1 python benchmarks/calibration_methods.py pipelines/quickstart.yaml

Calibration batches come from the training split (as in the qat stage); accuracy is on the validation
split, for the torch fake-quant model and for its Q/DQ ONNX in ONNX Runtime. QAT keeps the calibrated
ranges fixed (the default `qat.activation_ranges`), so the method shapes the QAT file too: the QAT column
fine-tunes with hard labels (SGD, `qat.lr`, cosine, `qat.epochs`), not the stage's KD loss, and gives the
Q/DQ ONNX top-1.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from run_student import run_student

from edgekd.export.parity import top1_accuracy
from edgekd.quant import calibrate_ptq, export_qdq_onnx, prepare_qat


def main() -> None:
    cfg, student, _, data = run_student(__doc__.splitlines()[0])
    val = list(data.val.batches(cfg.data.eval_batch_size))
    fp32 = top1(student, val)
    print(
        f"fp32 student val top-1 {fp32:.2f}%  ({cfg.qat.calibration_batches} calibration batches of {cfg.data.batch_size})"
    )
    qat = os.environ.get("EDGEKD_QAT") == "1"
    print(
        "| method | fake-quant top-1 | ONNX Runtime top-1 | drop vs fp32 | calibration s |"
        + (" QAT ONNX top-1 |" if qat else "")
    )
    print("|---|---|---|---|---|" + ("---|" if qat else ""))
    for method in ("max", "percentile", "entropy", "mse"):
        calib = data.train.batches(cfg.data.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))
        t0 = time.perf_counter()
        ptq = calibrate_ptq(student, calib, cfg.qat.calibration_batches, method, cfg.qat.percentile)
        took = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            path = export_qdq_onnx(ptq, Path(tmp) / "ptq.onnx", val[0][0][:1])
            ort = top1_accuracy(path, val)
        fq = top1(ptq, val)
        extra = f" {qat_top1(cfg, student, data, method, val):.2f}% |" if qat else ""
        print(f"| {method} | {fq:.2f}% | {ort:.2f}% | {fp32 - ort:+.2f} | {took:.1f} |{extra}")


def qat_top1(cfg, student: torch.nn.Module, data, method: str, val: list) -> float:
    """ONNX Runtime top-1 of a QAT model calibrated by `method` and fine-tuned with hard labels."""
    calib = data.train.batches(cfg.data.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))
    model = prepare_qat(student, calib, cfg.qat.model_copy(update={"calibration": method}))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.qat.lr, momentum=0.9, weight_decay=cfg.qat.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.qat.epochs, 1))
    torch.manual_seed(cfg.seed)
    for epoch in range(cfg.qat.epochs):
        model.train()
        shuffle = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        for x, y, _ in data.train.batches(cfg.data.batch_size, shuffle=True, generator=shuffle):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    with tempfile.TemporaryDirectory() as tmp:
        return top1_accuracy(export_qdq_onnx(model.eval(), Path(tmp) / "qat.onnx", val[0][0][:1]), val)


@torch.no_grad()
def top1(model: torch.nn.Module, batches: list) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y, *_ in batches)
    return 100.0 * correct / sum(len(b[1]) for b in batches)


if __name__ == "__main__":
    main()
