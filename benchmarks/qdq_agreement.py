"""Does ONNX Runtime compute the fake-quant model? PTQ of a run's distilled student, per ORT optimization level.

    python benchmarks/qdq_agreement.py pipeline.yaml [--run-dir runs/name]

Calibrates the student as the qat stage does (the first `qat.calibration_batches` shuffled training
batches, `qat.calibration`), exports the Q/DQ ONNX, then runs it in ONNX Runtime with each graph
optimization level and prints, over the whole validation split: top-1 agreement with the torch
fake-quant model, max |Δlogit| as a share of the largest |logit|, and the file's top-1.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from run_student import run_student

from edgekd.quant import calibrate_ptq, export_qdq_onnx

LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all (default)": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def main() -> None:
    cfg, student, spec, data = run_student(__doc__.splitlines()[0])
    x, y = (torch.cat(t) for t in zip(*((b[0], b[1]) for b in data.val.batches(cfg.data.eval_batch_size))))
    calib = data.train.batches(cfg.data.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))
    ptq = calibrate_ptq(student, calib, cfg.qat.calibration_batches, cfg.qat.calibration, cfg.qat.percentile)
    with torch.no_grad():
        fp32 = student.eval()(x).numpy()
        fake_quant = ptq(x).numpy()
    labels = y.numpy()
    print(
        f"{spec.name}: {len(labels)} validation images, fp32 top-1 {top1(fp32, labels):.2f}%, "
        f"fake-quant top-1 {top1(fake_quant, labels):.2f}%"
    )
    print("| ORT optimizations | agreement with fake quant | max abs Δlogit / max abs logit | ORT top-1 |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_qdq_onnx(ptq, Path(tmp) / "ptq.onnx", x[:1])
        for name, level in LEVELS.items():
            options = ort.SessionOptions()
            options.graph_optimization_level = level
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
            agree = 100.0 * float((got.argmax(1) == fake_quant.argmax(1)).mean())
            rel = float(np.abs(got - fake_quant).max() / np.abs(fake_quant).max())
            print(f"| {name} | {agree:.2f}% | {rel:.3f} | {top1(got, labels):.2f}% |")


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float((logits.argmax(1) == labels).mean())


if __name__ == "__main__":
    main()
