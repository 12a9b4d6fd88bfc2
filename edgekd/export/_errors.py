"""Turn exporter failures into one-line EdgekdErrors that name the op and the module that uses it."""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from edgekd.ondevice.text import first_line

_OP_PATTERNS = (
    re.compile(r"operator '?([\w:.]+)'? to ONNX"),  # UnsupportedOperatorError
    re.compile(r"Unsupported: ONNX export of ([\w:.]+)"),  # SymbolicValueError for a known op
    re.compile(r"(aten::\w+)"),
)


def failing_op(exc: BaseException) -> str | None:
    """The aten op an exporter error message names, if any."""
    for pattern in _OP_PATTERNS:
        found = pattern.search(str(exc))
        if found:
            op = found.group(1)
            return op if "::" in op else f"aten::{op}"
    return None


def module_using(model: nn.Module, example: torch.Tensor, op: str) -> str | None:
    """The module path (e.g. `layer2.0.pool`) whose forward calls `op`, found by tracing; None if unknown."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(model, example, check_trace=False).inlined_graph
    except Exception:
        return None
    for node in graph.nodes():
        if node.kind() == op:
            scope = node.scopeName().split("/")[-1].removeprefix("__module.")
            return scope.removeprefix("__module") or "(top-level forward)"
    return None


def describe_export_failure(what: str, model: nn.Module, example: torch.Tensor, exc: BaseException, opset: int) -> str:
    """`<what>: cannot export op aten::x (module `a.b`, Foo) to ONNX opset 17: <first line>`."""
    op = failing_op(exc)
    if op is None:
        return f"{what}: export of {type(model).__name__} failed: {first_line(exc)}"
    where = module_using(model, example, op)
    if where and where != "(top-level forward)":
        kind = type(model.get_submodule(where)).__name__ if _has_submodule(model, where) else "?"
        place = f" in module '{where}' ({kind})"
    else:
        place = f" in the forward of {type(model).__name__}" if where else ""
    return (
        f"{what}: op {op}{place} has no ONNX opset {opset} translation; "
        f"replace that layer with supported ops or try another opset (13-17 for TensorRT 8.5)"
    )


def _has_submodule(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False
