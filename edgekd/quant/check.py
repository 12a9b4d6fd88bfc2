"""Check an exported Q/DQ ONNX file against the layout TensorRT needs to run it fast in int8.

- every Conv/Gemm (and MatMul with a weight, reached through a Transpose) reads data and weight through
  int8 DequantizeLinear with zero point 0, the data
  per tensor, the weight per output channel (axis 0) — except the layers kept float, which have none;
- every skip Add (two inputs computed from the model input) reads at least one input, its residual,
  through DequantizeLinear, so TensorRT can fuse the Add into the convolution before it;
- every Concat reads all inputs through DequantizeLinear with one shared scale.

Each violation is an EdgekdError naming the node (and the layer, where the weight's name tells it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class QdqLayout:
    """What `check_qdq` counted in a file that passed."""

    quantized_layers: int
    float_layers: int
    residual_adds: int
    concats: int


class _Graph:
    def __init__(self, path: Path) -> None:
        self.graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
        self.integer_tensors = {  # shape arithmetic (Shape → Gather → Concat/Add), not activations
            v.name
            for v in [*self.graph.value_info, *self.graph.input, *self.graph.output]
            if v.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
        }
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.dynamic = {i.name for i in self.graph.input if i.name not in self.consts}
        for node in self.graph.node:  # nodes are topologically sorted in a valid ONNX graph
            if any(i in self.dynamic for i in node.input):
                self.dynamic.update(node.output)

    def dq(self, tensor: str) -> onnx.NodeProto | None:
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        return self.consts.get(node.input[index]) if len(node.input) > index else None

    def weight_input(self, node: onnx.NodeProto) -> str:
        """The tensor a layer's weight arrives as: input 1, or the input of the Transpose before a MatMul
        (a Linear applied to channels-last activations, as in ConvNeXt, exports as MatMul(x, Transpose(W)))."""
        src = node.input[1]
        p = self.producer.get(src)
        return p.input[0] if node.op_type == "MatMul" and p is not None and p.op_type == "Transpose" else src

    def is_weighted(self, node: onnx.NodeProto) -> bool:
        """Conv and Gemm, and a MatMul whose second input is a weight (constant behind Q/DQ and Transpose)."""
        if node.op_type in ("Conv", "Gemm"):
            return True
        return node.op_type == "MatMul" and self.weight_name(node) != ""

    def weight_name(self, node: onnx.NodeProto) -> str:
        """The initializer behind a layer's weight (through DequantizeLinear/QuantizeLinear), e.g. `layer1.0.conv1`."""
        src = self.weight_input(node)
        for op in ("DequantizeLinear", "QuantizeLinear"):
            p = self.producer.get(src)
            if p is not None and p.op_type == op:
                src = p.input[0]
        return src.removesuffix(".weight") if src in self.consts else ""


def check_qdq(path: Path, keep_float: Iterable[str] = ()) -> int:
    """Raise EdgekdError unless `path` has the layout in the module docstring; returns the number of
    quantized Conv/Gemm nodes (see `inspect_qdq` for all counts)."""
    return inspect_qdq(path, keep_float).quantized_layers


def inspect_qdq(path: Path, keep_float: Iterable[str] = ()) -> QdqLayout:
    """`check_qdq` with every count: quantized and float Conv/Gemm, quantized skip Adds, Concats."""
    g = _Graph(path)
    keep = set(keep_float)
    quantized = floats = adds = concats = 0
    for node in g.graph.node:
        where = f"{path}: {node.op_type} '{node.name}'"
        if g.is_weighted(node):
            layer = g.weight_name(node)
            where += f" (layer {layer})" if layer else ""
            if layer in keep:
                if g.dq(node.input[0]) or g.dq(g.weight_input(node)):
                    raise EdgekdError(f"{where}: kept float (qat.keep_float) but reads a DequantizeLinear")
                floats += 1
                continue
            _check_layer(g, node, where)
            quantized += 1
        elif node.op_type == "Add" and len(node.input) == 2 and all(i in g.dynamic for i in node.input):
            if node.output[0] in g.integer_tensors:
                continue
            if not any(g.dq(i) for i in node.input):
                found = " and ".join(_producer_name(g, i) for i in node.input)
                raise EdgekdError(
                    f"{where}: skip Add without Q/DQ on its residual input (inputs from {found}); "
                    f"TensorRT cannot fuse it into the convolution before it"
                )
            adds += 1
        elif (
            node.op_type == "Concat"
            and node.output[0] not in g.integer_tensors
            and sum(i in g.dynamic for i in node.input) > 1
        ):
            dqs = [g.dq(i) for i in node.input]
            if not all(dqs):
                raise EdgekdError(f"{where}: every Concat input needs Q/DQ, found inputs from non-DequantizeLinear")
            scales = [g.const(dq, 1) for dq in dqs]
            if any(s is None for s in scales) or any(not np.array_equal(s, scales[0]) for s in scales):
                raise EdgekdError(f"{where}: Concat inputs must share one scale, found {[_fmt(s) for s in scales]}")
            concats += 1
    if quantized + floats == 0:
        raise EdgekdError(f"{path}: no Conv or Gemm node found")
    if quantized == 0:
        raise EdgekdError(f"{path}: every Conv/Gemm is kept float: nothing is int8")
    return QdqLayout(quantized, floats, adds, concats)


def _check_layer(g: _Graph, node: onnx.NodeProto, where: str) -> None:
    for role, tensor in (("input", node.input[0]), ("weight", g.weight_input(node))):
        dq = g.dq(tensor)
        if dq is None:
            raise EdgekdError(
                f"{where}: its {role} is not produced by DequantizeLinear (found {_producer_name(g, tensor)})"
            )
        scale, zero = g.const(dq, 1), g.const(dq, 2)
        if scale is None or zero is None:
            raise EdgekdError(f"{where}: {role} scale and zero point must be constants")
        if zero.dtype != np.int8 or np.any(zero != 0):
            raise EdgekdError(f"{where}: {role} zero point must be int8 zeros, found {zero.dtype} {zero.ravel()[:4]}")
        if np.any(scale <= 0):
            raise EdgekdError(f"{where}: {role} scale must be positive, found min {scale.min():g}")
        if role == "input" and scale.ndim != 0:
            raise EdgekdError(f"{where}: input scale must be per tensor (a scalar), found shape {scale.shape}")
        if role == "weight":
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            weight = _weight_shape(g, dq)
            if scale.ndim != 1 or axis != 0 or (weight is not None and scale.shape[0] != weight[0]):
                raise EdgekdError(
                    f"{where}: weight scale must be 1-D per output channel on axis 0, "
                    f"found shape {scale.shape} on axis {axis} for weight {weight}"
                )


def _producer_name(g: _Graph, tensor: str) -> str:
    node = g.producer.get(tensor)
    return f"{node.op_type} '{node.name}'" if node is not None else "a graph input"


def _weight_shape(g: _Graph, dq: onnx.NodeProto) -> tuple[int, ...] | None:
    """Shape of the float (or int8) weight behind a DequantizeLinear (through its QuantizeLinear)."""
    src = dq.input[0]
    q = g.producer.get(src)
    if q is not None and q.op_type == "QuantizeLinear":
        src = q.input[0]
    return tuple(g.consts[src].shape) if src in g.consts else None


def _fmt(scale: np.ndarray | None) -> str:
    return "none" if scale is None else f"{float(np.ravel(scale)[0]):.4g}"
