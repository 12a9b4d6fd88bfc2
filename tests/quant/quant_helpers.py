"""Digits (scikit-learn) upsampled to 16x16, a plain training loop and accuracy, for the quantization tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data.datasets import digits_arrays


def digits(size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, val images, val labels); images (N, 1, size, size), normalised."""
    images, labels = digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - 0.3) / 0.4
    y = torch.tensor(labels, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    n_val = len(y) // 5
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def batches(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return [(x[perm[i : i + size]], y[perm[i : i + size]]) for i in range(0, len(y), size)]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, on_epoch=None) -> nn.Module:
    """Plain SGD fine-tuning with cross-entropy; `on_epoch(model, epoch)` runs before each epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    for epoch in range(epochs):
        if on_epoch:
            on_epoch(model, epoch)
        model.train()
        for xb, yb in batches(x, y, 64, seed=epoch):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.eval()(x).argmax(1) == y).float().mean())


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch: int = 64) -> nn.Module:
    """BatchNorm running statistics recomputed as the exact average over `x` (everything else in eval mode):
    torchvision's MNASNet (momentum 3e-4) and MobileNetV3 (1e-2) otherwise keep near-initial statistics
    after a short training run, and their eval-mode outputs are noise."""
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
        bn.train()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    return model.eval()


def train_until(
    model: nn.Module,
    data: tuple,
    target: float,
    max_steps: int,
    lr: float,
    check_every: int = 25,
    margin: float = 0.15,
    channels_last: bool = True,
) -> tuple[nn.Module, float, int]:
    """AdamW on cross-entropy, batches of 32, until the val top-1 (BatchNorm recalibrated on 512 training
    images) reaches `target` or `max_steps` pass. Returns (model in eval mode, val top-1, steps).

    The val top-1 is looked at every `check_every` steps, but only once the last 8 training batches were
    classified within `margin` of `target` (free: their logits are computed anyway): a look costs about as
    much as 7 training steps, and while the model is plainly not there yet it would only say so.
    Trains in channels-last memory format (`channels_last`), as the pipeline does (half the step time of depthwise
    nets on the CPU); the model it returns is NCHW."""
    xt, yt, xv, yv = data
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4, fused=True)  # one kernel per step: big models
    steps, epoch, top1 = 0, 0, 0.0
    recent: list[float] = []  # training-batch top-1 of the last 8 steps
    while steps < max_steps and top1 < target:
        for xb, yb in batches(xt, yt, 32, seed=epoch):
            model.train()
            opt.zero_grad()
            logits = model(xb)
            F.cross_entropy(logits, yb).backward()
            opt.step()
            steps += 1
            recent = [*recent[-7:], float((logits.detach().argmax(1) == yb).float().mean())]
            if steps % check_every == 0 or steps == max_steps:
                if sum(recent) / len(recent) >= target - margin or steps >= max_steps:
                    top1 = accuracy(recalibrate_bn(model, xt[:512]), xv, yv)
                if top1 >= target or steps >= max_steps:
                    break
        epoch += 1
    return model.to(memory_format=torch.contiguous_format).eval(), top1, steps
