"""Dynamic int8 for CPU deployment: weights stored int8, activations quantized per batch at run time.

Only matrix-multiply layers (Linear, LSTM, GRU) are quantized: convolutions are untouched, so an
all-conv network gains nothing and is reported "skipped" rather than saved as a fake "int8" model.
A CIFAR ResNet has exactly one such layer, its `fc` classifier.

PyTorch side: `torch.ao.quantization.quantize_dynamic` (deprecated in torch 2.14 in favour of
torchao, whose int8 dynamic path produces tensor subclasses that TorchScript cannot save), traced
to TorchScript. ONNX side: ONNX Runtime's `quantize_dynamic` (MatMulInteger/DynamicQuantizeLinear).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from edgekd.export.onnx import check_and_infer
from edgekd.export.torchscript import save_torchscript
from edgekd.ondevice.files import atomic_path

TORCH_LAYERS = (nn.Linear, nn.LSTM, nn.GRU)
ONNX_OPS = ("MatMul", "Gemm", "LSTM", "GRU")  # Conv is left float: ConvInteger is slow on ONNX Runtime CPU


@dataclass
class DynamicQuantResult:
    """What a dynamic quantization did: "done" with the layers it quantized, or "skipped" and why."""

    status: str
    layers: list[str] = field(default_factory=list)
    path: str | None = None
    reason: str | None = None


def dynamic_layer_names(model: nn.Module) -> list[str]:
    """Paths of the Linear/LSTM/GRU layers that dynamic int8 would quantize."""
    return [name for name, m in model.named_modules() if type(m) in TORCH_LAYERS]


def quantize_dynamic_torchscript(model: nn.Module, path: Path, example: torch.Tensor) -> DynamicQuantResult:
    """Dynamic int8 of `model`'s Linear/LSTM/GRU layers, saved as TorchScript (checked after reload)."""
    layers = dynamic_layer_names(model)
    if not layers:
        return DynamicQuantResult(
            "skipped",
            reason=f"{type(model).__name__} has no Linear, LSTM or GRU layer "
            f"(dynamic int8 quantizes only those; convolutions stay fp32)",
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        qmodel = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval().cpu(), {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8
        )
    done = [
        name for name, m in qmodel.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")
    ]
    save_torchscript(qmodel, path, example, method="trace")
    return DynamicQuantResult("done", layers=done, path=str(path))


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_dynamic_onnx(src: Path, dest: Path) -> DynamicQuantResult:
    """ONNX Runtime dynamic int8 of the MatMul/Gemm/LSTM/GRU nodes with constant weights in `src`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src)).graph
    consts = {t.name for t in graph.initializer}
    candidates = [n.name for n in graph.node if n.op_type in ONNX_OPS and len(n.input) > 1 and n.input[1] in consts]
    if not candidates:
        return DynamicQuantResult(
            "skipped",
            reason=f"{src} has no MatMul, Gemm, LSTM or GRU node with constant weights (convolutions are left fp32)",
        )
    with atomic_path(Path(dest)) as tmp, quiet_root_logger():
        # its "consider pre-processing" hint concerns shape inference, which the export already did
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=list(ONNX_OPS))
        out = onnx.load(str(tmp))
        check_and_infer(out, Path(dest))
        left = {n.name for n in out.graph.node if n.op_type in ONNX_OPS}
    done = [name for name in candidates if name not in left]
    if not done:
        Path(dest).unlink(missing_ok=True)
        return DynamicQuantResult(
            "skipped", reason=f"ONNX Runtime quantized none of {len(candidates)} candidate nodes in {src}"
        )
    return DynamicQuantResult("done", layers=done, path=str(dest))
