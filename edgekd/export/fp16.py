"""fp16 ONNX for TensorRT >= 10's strongly typed fp16 engines: fp16 weights and compute, fp32 inputs and outputs.

A hand conversion of the graphs edgekd exports (onnxconverter-common is not a dependency): float32
initializers and Constant/ConstantOfShape tensors become float16, Casts to float32 cast to float16,
and one Cast after each float32 graph input and before each float32 graph output keeps the file's
interface float32, so the same preprocessing, validation batch and runtimes serve both files. Inputs
ONNX types as float32 only (Resize/Upsample scales) stay float32. onnx's checker then infers and checks
every type, and `check_fp16_parity` compares the file with its fp32 source in ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.errors import EdgekdError
from edgekd.export.parity import Parity, measure_parity, run_exported
from edgekd.ondevice.files import atomic_path

FP32_ONLY = {("Resize", 2), ("Upsample", 1)}
"""(op type, input index) that ONNX types as float32 whatever the data's type."""
FP16_MAX = float(np.finfo(np.float16).max)  # 65504


def _half(tensor: TensorProto, where: str) -> TensorProto:
    values = numpy_helper.to_array(tensor)
    if values.size and np.abs(values).max() > FP16_MAX:
        raise EdgekdError(
            f"{where}: float32 values up to {np.abs(values).max():.3g} overflow float16 (largest {FP16_MAX:g}); "
            "set export.fp16_onnx: false for this model"
        )
    return numpy_helper.from_array(values.astype(np.float16), tensor.name)


def _rename_inputs(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of `model` whose float32 graph inputs and outputs stay float32 (Casts at the boundary)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise EdgekdError(f"{graph.name}: graphs with subgraphs (If, Loop, Scan) are not converted to fp16")
    keep = {n.input[i] for n in graph.node for op, i in FP32_ONLY if n.op_type == op and len(n.input) > i}
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            init.CopyFrom(_half(init, f"initializer {init.name!r}"))
    for node in graph.node:
        if any(out in keep for out in node.output):
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_half(attr.t, f"node {node.name or node.op_type!r}"))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16

    initializers = {i.name for i in graph.initializer}
    casts_in = []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT and value.name not in initializers:
            _rename_inputs(graph, value.name, value.name + "_fp16")
            casts_in.append(helper.make_node("Cast", [value.name], [value.name + "_fp16"], to=TensorProto.FLOAT16))
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = value.name + "_fp16"
        _rename_inputs(graph, value.name, inner)
        for node in graph.node:
            node.output[:] = [inner if out == value.name else out for out in node.output]
        graph.node.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT))
    for i, cast in enumerate(casts_in):
        graph.node.insert(i, cast)
    del graph.value_info[:]  # stale float32 types; inferred again below
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def write_fp16_onnx(source: Path, target: Path) -> Path:
    """Convert the fp32 ONNX `source` into `target` (atomically); metadata (preprocessing, classes) is kept."""
    try:
        model = convert_to_fp16(onnx.load(str(source)))
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise EdgekdError(
            f"{source}: the fp16 conversion is not a valid ONNX: {str(e).strip().splitlines()[0]}"
        ) from None
    with atomic_path(Path(target)) as tmp:
        onnx.save(model, str(tmp))
    return Path(target)


def check_fp16_parity(
    fp32: Path, fp16: Path, images: np.ndarray, rtol: float = 0.01, min_agreement: float = 0.99
) -> Parity:
    """Compare the fp16 file with its fp32 source in ONNX Runtime on `images`; EdgekdError beyond tolerance.

    fp16 keeps about 3 significant digits, so the logit tolerance is relative: `rtol` times the largest
    |logit| of the fp32 file. Top-1 agreement must reach `min_agreement`.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    reference = run_exported(fp32, images).astype(np.float64)
    parity = measure_parity(fp16, images, reference)
    tol = rtol * max(float(np.abs(reference).max()), 1e-6)
    if not parity.max_abs_diff <= tol:
        raise EdgekdError(
            f"{fp16}: max |Δlogit| {parity.max_abs_diff:.3g} from {Path(fp32).name} > {tol:.3g} "
            f"(export.fp16_rtol {rtol:g} of the largest |logit|) on {parity.samples} validation images"
        )
    if parity.top1_agreement < min_agreement:
        raise EdgekdError(
            f"{fp16}: top-1 agreement with {Path(fp32).name} {parity.top1_agreement:.1%} < {min_agreement:.0%} "
            f"on {parity.samples} validation images"
        )
    return parity
