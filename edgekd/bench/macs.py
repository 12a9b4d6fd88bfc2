"""Multiply-accumulate count of a torch model (the bench record's `macs`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of Conv and Linear layers for ONE image of shape (C, H, W) or (features,).

    Counted with forward hooks on a single forward pass: a conv output element costs
    in_channels/groups x kernel elements; a linear output element costs in_features.
    Other layers (norms, activations, pooling) are not counted.
    """
    total = 0

    def conv_hook(module: nn.modules.conv._ConvNd, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        per_output = (module.in_channels // module.groups) * int(np.prod(module.kernel_size))
        total += out.numel() // out.shape[0] * per_output

    def linear_hook(module: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        param = next(model.parameters(), None)
        x = torch.zeros((1, *input_shape), device=param.device if param is not None else "cpu")
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            model(x)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total
