"""Export a fake-quantized model as explicit-quantization (Q/DQ) ONNX, and check the layout TensorRT needs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export.onnx import Preprocessing, export_onnx
from edgekd.export.parity import Parity, check_parity, reference_logits
from edgekd.quant.qat import fold_for_export, quantized_layer_names

# A Q/DQ file cannot match its fake-quant torch twin to float precision: a different summation order
# flips an activation across a rounding boundary now and then, a one-step (amax/127) change that later
# layers carry on (measured: up to 4% of the logit range on a random resnet18 even with ONNX Runtime's
# optimizations off). So it is held within a share of the logit range, and to top-1 agreement.
QDQ_LOGIT_RTOL = 0.10  # max |Δlogit| allowed, as a fraction of the largest |logit|
QDQ_MIN_AGREEMENT = 0.97  # top-1 agreement with the fake-quant model


def check_qdq_parity(model: nn.Module, path: Path, images: np.ndarray) -> Parity:
    """`check_parity` of a Q/DQ file against its fake-quant model, with the int8 tolerances above."""
    reference = reference_logits(copy.deepcopy(model), images)
    atol = QDQ_LOGIT_RTOL * float(np.abs(reference).max())
    return check_parity(copy.deepcopy(model), [path], images, atol=atol, min_agreement=QDQ_MIN_AGREEMENT)[0]


def export_qdq_onnx(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    opset: int = 17,
    *,
    dynamic_batch: bool = True,
    preprocessing: Preprocessing | None = None,
) -> Path:
    """Export a model from `prepare_qat`/`calibrate_ptq` to Q/DQ ONNX and verify its layout (see `check_qdq`)."""
    if not quantized_layer_names(model):
        raise EdgekdError(
            f"{path}: {type(model).__name__} has no fake-quantized layers; run prepare_qat or calibrate_ptq first"
        )
    frozen = fold_for_export(copy.deepcopy(model).eval().cpu())
    with torch.no_grad():
        frozen(example.cpu())  # refresh each weight's per-channel range from its current values
    export_onnx(frozen, path, example, opset=opset, dynamic_batch=dynamic_batch, preprocessing=preprocessing)
    check_qdq(path)
    return path


def check_qdq(path: Path) -> int:
    """Raise EdgekdError unless every Conv/Gemm reads its input and weight through int8 DequantizeLinear
    with zero point 0, the weight per channel on axis 0 (one scale per output channel), the input per tensor.

    Returns the number of quantized Conv/Gemm nodes.
    """
    graph = onnx.load(str(path)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {out: node for node in graph.node for out in node.output}
    count = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        where = f"{path}: {node.op_type} '{node.name}'"
        for role, tensor in (("input", node.input[0]), ("weight", node.input[1])):
            dq = producer.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                raise EdgekdError(
                    f"{where}: its {role} is not produced by DequantizeLinear (found {dq.op_type if dq else 'a graph input'})"
                )
            scale, zero = consts.get(dq.input[1]), consts.get(dq.input[2]) if len(dq.input) > 2 else None
            if scale is None or zero is None:
                raise EdgekdError(f"{where}: {role} scale and zero point must be constants")
            if zero.dtype != np.int8 or np.any(zero != 0):
                raise EdgekdError(
                    f"{where}: {role} zero point must be int8 zeros, found {zero.dtype} {zero.ravel()[:4]}"
                )
            if np.any(scale <= 0):
                raise EdgekdError(f"{where}: {role} scale must be positive, found min {scale.min():g}")
            if role == "input" and scale.ndim != 0:
                raise EdgekdError(f"{where}: input scale must be per tensor (a scalar), found shape {scale.shape}")
            if role == "weight":
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
                weight = _weight_shape(dq, producer, consts)
                if scale.ndim != 1 or axis != 0 or (weight is not None and scale.shape[0] != weight[0]):
                    raise EdgekdError(
                        f"{where}: weight scale must be 1-D per output channel on axis 0, "
                        f"found shape {scale.shape} on axis {axis} for weight {weight}"
                    )
        count += 1
    if count == 0:
        raise EdgekdError(f"{path}: no Conv or Gemm node found")
    return count


def _weight_shape(dq: onnx.NodeProto, producer: dict, consts: dict) -> tuple[int, ...] | None:
    """Shape of the float (or int8) weight behind a DequantizeLinear (through its QuantizeLinear)."""
    src = dq.input[0]
    q = producer.get(src)
    if q is not None and q.op_type == "QuantizeLinear":
        src = q.input[0]
    return tuple(consts[src].shape) if src in consts else None
