"""Where Q/DQ goes besides Conv/Linear inputs: the residual input of each skip Add, one shared scale for concat inputs.

TensorRT fuses `Conv → Add(DQ(residual))` into one int8 convolution with the addition as its epilogue
when the Add's other input carries a Q/DQ pair; without it the Add runs as a separate kernel with
re-quantization around it. Concatenation is eliminated only when all its inputs share one scale.
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html#q-dq-layer-placement-recommendations

The rules are applied in the torch graph (torch.fx), so the fake-quant model trains and calibrates with
the same quantizers the ONNX file will have:

- a skip Add is an addition of two tensors that both depend on the model input;
- its residual input is the one that does not come straight from a weighted layer (Conv/Linear,
  through BatchNorm/Identity/StochasticDepth/Dropout); when both do (ResNet downsample shortcut) or
  neither does (ConvNeXt's layer-scale), it is the shallower one (fewer nodes from the model input),
  i.e. the shortcut. This is Model Optimizer's `build_non_residual_input_map` rule, except that it leaves
  Adds with no weighted input unquantized;
- every input of a `torch.cat` goes through the same quantizer module (one amax, one scale).
"""

from __future__ import annotations

import operator
import sys

import torch
import torch.fx
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.ondevice.text import first_line
from edgekd.quant.fake_quant import ActivationQuantizer, QuantConv2d, QuantLinear

WEIGHTED = (nn.Conv2d, nn.Linear)
PASS_THROUGH = (nn.BatchNorm2d, nn.Identity, nn.Dropout)  # between a weighted layer and an Add (+ StochasticDepth)
ADDS = {operator.add, operator.iadd, torch.add}
CATS = {torch.cat, torch.concat}
RESIDUAL_PREFIX = "residual_quantizer_"
CONCAT_PREFIX = "concat_quantizer_"


class QuantTracer(torch.fx.Tracer):
    """torch.fx tracer that keeps fake-quant layers and StochasticDepth as single calls (their forward
    branches on mode flags that must stay live, not be frozen at trace time)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        leaves = (*_stochastic_depth(), ActivationQuantizer, QuantConv2d, QuantLinear)
        return isinstance(m, leaves) or super().is_leaf_module(m, qualname)


def _stochastic_depth() -> tuple[type, ...]:
    """torchvision's StochasticDepth, where torchvision is loaded: no model holds one otherwise, and importing
    torchvision only to ask costs 2-3 s (it loads torch._dynamo)."""
    ops = sys.modules.get("torchvision.ops")
    return (ops.StochasticDepth,) if ops is not None else ()


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """`model` as a GraphModule with the same module paths (state_dict keys), or an EdgekdError naming it."""
    try:
        graph = QuantTracer().trace(model)
    except Exception as e:  # fx raises many types for untraceable Python
        raise EdgekdError(
            f"cannot quantize {type(model).__name__}: torch.fx cannot trace its forward "
            f"({first_line(e)}); int8 quantization needs a traceable model"
        ) from e
    return torch.fx.GraphModule(model, graph, class_name=type(model).__name__)


def place_quantizers(gm: torch.fx.GraphModule, momentum: float = 0.01) -> list[str]:
    """Insert an ActivationQuantizer on the residual input of every skip Add and one shared quantizer on
    the inputs of every concatenation of `gm` (a graph of the float model); returns the new module names."""
    modules = dict(gm.named_modules())
    depth: dict[torch.fx.Node, int] = {}
    dynamic: set[torch.fx.Node] = set()
    for node in gm.graph.nodes:
        parents = node.all_input_nodes
        depth[node] = 1 + max((depth[p] for p in parents), default=-1)
        if node.op == "placeholder" or any(p in dynamic for p in parents):
            dynamic.add(node)
    added = []
    for node in list(gm.graph.nodes):
        if _is_skip_add(node, dynamic):
            a, b = node.args[0], node.args[1]
            from_a, from_b = _from_weighted(a, modules), _from_weighted(b, modules)
            if from_a != from_b:
                residual = b if from_a else a
            else:  # both or neither from a weighted layer: the shallower one is the shortcut
                residual = a if depth[a] < depth[b] else b
            name = RESIDUAL_PREFIX + node.name
            gm.add_submodule(name, ActivationQuantizer(momentum))
            with gm.graph.inserting_before(node):
                q = gm.graph.call_module(name, (residual,))
            node.replace_input_with(residual, q)
            added.append(name)
        elif node.op == "call_function" and node.target in CATS:
            tensors = node.args[0] if node.args else node.kwargs["tensors"]
            if not all(isinstance(t, torch.fx.Node) and t in dynamic for t in tensors):
                continue
            name = CONCAT_PREFIX + node.name
            gm.add_submodule(name, ActivationQuantizer(momentum))
            with gm.graph.inserting_before(node):
                quantized = [gm.graph.call_module(name, (t,)) for t in tensors]
            node.args = (quantized, *node.args[1:]) if node.args else node.args
            if not node.args:
                node.kwargs = {**node.kwargs, "tensors": quantized}
            added.append(name)
    gm.recompile()
    return added


def _is_skip_add(node: torch.fx.Node, dynamic: set[torch.fx.Node]) -> bool:
    is_add = (node.op == "call_function" and node.target in ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )
    if not is_add or len(node.args) < 2:
        return False
    a, b = node.args[0], node.args[1]
    return isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node) and a is not b and {a, b} <= dynamic


def _from_weighted(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether `node` is a Conv/Linear output, possibly through BatchNorm, Identity, StochasticDepth, Dropout."""
    passing = (*PASS_THROUGH, *_stochastic_depth())
    while node.op == "call_module" and isinstance(modules.get(node.target), passing):
        node = node.args[0]
    return node.op == "call_module" and isinstance(modules.get(node.target), WEIGHTED)
