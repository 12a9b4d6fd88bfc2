"""What an ONNX file given to `edgekd bench FILE.onnx` is: its one input's shape and its precision, read from the graph.

The file is untrusted input: a regular file, an ONNX model, one float32 input whose only dynamic axis (if any) is
the batch axis. Anything else is a one-line EdgekdError naming the file (and the input) and what would be valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

from edgekd.errors import EdgekdError
from edgekd.ondevice.text import first_line

PRECISION_ROWS = {"fp32": "onnx_file", "fp16": "onnx_file_fp16", "int8": "onnx_file_int8"}
"""The catalogue row a given file (or what edgekd makes from it) takes in ONNX Runtime, by precision."""


@dataclass(frozen=True)
class OnnxFile:
    """A checked ONNX file: `name` (plain, from the file name) names its rows; `shape` is its input's shape with
    None for a dynamic batch axis; `precision` fp32, fp16 (float16 weights) or int8 (QuantizeLinear nodes: Q/DQ)."""

    path: Path
    name: str
    input: str
    shape: tuple[int | None, ...]
    precision: str
    nodes: int

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0]

    def describe_shape(self) -> str:
        return "x".join("N" if d is None else str(d) for d in self.shape)


def plain_name(stem: str) -> str:
    """A file stem as a plain name (`resnet18 v2` -> `resnet18_v2`): it names files in the output folder."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).lstrip(".-")[:64] or "model"


def read_onnx_file(path: Path, name: str | None = None) -> OnnxFile:
    """The checked description of the ONNX file at `path` (see the module docstring); `name` defaults to its stem."""
    path = Path(path)
    if not path.exists():
        raise EdgekdError(f"{path}: file not found; give an .onnx file (or a run directory made by `edgekd run`)")
    if not path.is_file():
        raise EdgekdError(f"{path}: not a regular file; give an .onnx file (or a run directory made by `edgekd run`)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends on anything that is not a model
        raise EdgekdError(
            f"{path}: not an ONNX model ({first_line(e)}); give an .onnx file, e.g. one torch.onnx.export wrote"
        ) from None
    graph = model.graph
    if not graph.node:
        raise EdgekdError(f"{path}: not an ONNX model (no graph nodes); give an .onnx file")
    if any(t.data_location == TensorProto.EXTERNAL for t in graph.initializer):
        raise EdgekdError(f"{path}: keeps its weights in external data files; save it as one file (up to 2 GB)")
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise EdgekdError(
            f"{path}: needs exactly one image input, the model has {len(inputs)}: {[i.name for i in inputs]}"
        )
    return OnnxFile(
        path, name or plain_name(path.stem), inputs[0].name, _shape(path, inputs[0]), _precision(graph), len(graph.node)
    )


def _shape(path: Path, value: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    tensor = value.type.tensor_type
    if tensor.elem_type != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(tensor.elem_type).lower() if tensor.elem_type else "not a tensor"
        raise EdgekdError(
            f"{path}: input {value.name!r} is {kind}; edgekd feeds float32 images (an fp16 file keeps float32 inputs "
            "and outputs, e.g. onnxconverter-common's keep_io_types=True)"
        )
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
    shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim)
    if not dims:
        raise EdgekdError(f"{path}: input {value.name!r} has no shape; export it with a fixed shape, e.g. 1x3x224x224")
    for axis, d in enumerate(dims[1:], start=1):
        if d is None:
            raise EdgekdError(
                f"{path}: input {value.name!r} has a dynamic axis {axis} ({shown}); export it with a fixed shape "
                "(only the batch axis, axis 0, may be dynamic)"
            )
    return tuple(dims)


def _precision(graph: onnx.GraphProto) -> str:
    """int8 when the graph quantizes (Q/DQ), fp16 when it holds float16 weights or casts to float16, else fp32."""
    ops = {n.op_type for n in graph.node}
    if "QuantizeLinear" in ops:
        return "int8"
    half = any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer)
    casts = any(
        a.name == "to" and a.i == TensorProto.FLOAT16 for n in graph.node if n.op_type == "Cast" for a in n.attribute
    )
    return "fp16" if half or casts else "fp32"
