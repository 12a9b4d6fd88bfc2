"""Accuracy of an artifact on the validation images, and its size, parameter and MAC counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.ondevice.measure import accuracy_metrics
from edgekd.runtimes.base import Runtime


def predict(runtime: Runtime, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for all `images`, in chunks of `batch_size` (padded to the artifact's fixed batch when it has one)."""
    step = runtime.fixed_batch or batch_size
    out = []
    for start in range(0, len(images), step):
        chunk = np.ascontiguousarray(images[start : start + step], dtype=np.float32)
        n = len(chunk)
        if runtime.fixed_batch is not None and n < step:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
        out.append(np.asarray(runtime.run(chunk), dtype=np.float32)[:n])
    return np.concatenate(out)


def evaluate(
    runtime: Runtime, images: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray | None, batch_size: int = 32
) -> dict[str, float]:
    """edgekd.ondevice.measure.accuracy_metrics of the runtime's predictions (top1, top5, agreement, kl)."""
    return accuracy_metrics(predict(runtime, images, batch_size), labels, teacher_logits)


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size


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
