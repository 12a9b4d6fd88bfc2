"""Export a fake-quantized model as explicit-quantization (Q/DQ) ONNX, and check the layout TensorRT needs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export.onnx import Preprocessing, export_onnx
from edgekd.export.parity import Parity, check_parity
from edgekd.quant.check import check_qdq
from edgekd.quant.fake_quant import snap_biases
from edgekd.quant.qat import float_layer_names, fold_for_export, quantized_layer_names

# A Q/DQ file cannot match its fake-quant torch twin to float precision: a different summation order
# flips an activation across a rounding boundary now and then, a one-step (amax/127) change that later
# layers carry on (measured: up to 4% of the logit range on a random resnet18 even with ONNX Runtime's
# optimizations off). So it is held within a share of the logit range, and to top-1 agreement.
QDQ_LOGIT_RTOL = 0.10  # max |Δlogit| allowed, as a fraction of the largest |logit|
QDQ_MIN_AGREEMENT = 0.97  # top-1 agreement with the fake-quant model


def check_qdq_parity(model: nn.Module, path: Path, images: np.ndarray) -> Parity:
    """`check_parity` of a Q/DQ file against its fake-quant model, with the int8 tolerances above.

    The file runs as written (`int8_kernels=False`): this checks the export, the same on every machine.
    What this CPU's int8 kernels make of it is the benchmark's top-1 of the file.
    """
    fake_quant = copy.deepcopy(model)  # reference_logits puts it in eval mode on the CPU
    return check_parity(
        fake_quant,
        [path],
        images,
        atol=0.0,
        min_agreement=QDQ_MIN_AGREEMENT,
        rtol=QDQ_LOGIT_RTOL,
        int8_kernels=False,
    )[0]


def export_qdq_onnx(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    opset: int = 17,
    *,
    dynamic_batch: bool = True,
    preprocessing: Preprocessing | None = None,
) -> Path:
    """Export a model from `prepare_qat`/`calibrate_ptq` to Q/DQ ONNX and verify its layout (`check.check_qdq`)."""
    if not quantized_layer_names(model):
        raise EdgekdError(
            f"{path}: {type(model).__name__} has no fake-quantized layers; run prepare_qat or calibrate_ptq first"
        )
    frozen = fold_for_export(copy.deepcopy(model).eval().cpu())
    with torch.no_grad():
        frozen(example.cpu())  # refresh each weight's per-channel range from its current values
    snap_biases(frozen)
    export_onnx(frozen, path, example, opset=opset, dynamic_batch=dynamic_batch, preprocessing=preprocessing)
    check_qdq(path, keep_float=float_layer_names(frozen))
    return path
