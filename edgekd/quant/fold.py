"""Find the Conv2d→BatchNorm2d pairs whose BatchNorm can be folded into the convolution."""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from edgekd.quant.placement import trace


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, batchnorm path) where the BatchNorm2d reads only that Conv2d's output, found by torch.fx."""
    graph = (model if isinstance(model, torch.fx.GraphModule) else trace(model)).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if (
            isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and type(modules.get(src.target)) is nn.Conv2d
            and len(src.users) == 1
            and calls[src.target] == 1
            and calls[node.target] == 1
        ):
            pairs.append((src.target, node.target))
    return pairs


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, leaf, new)
