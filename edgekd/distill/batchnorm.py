"""BatchNorm running statistics that match the weights: the check, and re-estimation on training images.

A BatchNorm normalises with batch statistics while training and with its running averages in eval mode
(what evaluation, export, calibration and every deployed file use). With a small momentum the running
averages follow the weights slowly: torchvision's MNASNet (momentum 3e-4) keeps near-initial statistics
after a short distillation and scores at chance in eval mode while it trains well. Re-estimation
recomputes them as a plain average over training batches (`momentum=None`, as
`torch.optim.swa_utils.update_bn` does), with everything else in eval mode (no dropout; fake-quant
ranges untouched), so a QAT model keeps its quantizers and folds the new statistics into its weights.

needs, top1s = bn_check(model, images, labels)   # a reason to re-estimate, or None
reestimate_bn(model, train_batches, max_images=2048)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

MOMENTUM_THRESHOLD = 0.05  # below this, running statistics lag the weights (MNASNet 3e-4, MobileNetV3 1e-2)
GAP_POINTS = 10.0  # eval-mode top-1 this far under the train-mode top-1: the statistics do not match


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@dataclass(frozen=True)
class BnCheck:
    """What `bn_check` found on a training slice."""

    reason: str | None  # why re-estimating matters, or None
    min_momentum: float | None
    eval_top1: float  # running statistics (what ships)
    train_top1: float  # batch statistics (what training saw)


@torch.no_grad()
def _top1(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_stats: bool) -> float:
    """Top-1 (percent) in eval mode, with the BatchNorms on batch statistics (running ones unchanged) if asked."""
    bns = batchnorms(model)
    was_training = model.training
    saved = [(bn.momentum, bn.num_batches_tracked.clone()) for bn in bns]
    model.eval()
    if batch_stats:
        for bn in bns:
            bn.train()
            bn.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        device = next(model.parameters()).device
        logits = torch.cat([model(x.to(device)).float().cpu() for x in images.split(256)])
    finally:
        for bn, (momentum, tracked) in zip(bns, saved, strict=True):
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)
        model.train(was_training)
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def bn_check(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> BnCheck:
    """Whether `model`'s running statistics need re-estimating: a momentum under MOMENTUM_THRESHOLD, or an
    eval-mode top-1 on `images` more than GAP_POINTS under the batch-statistics one."""
    bns = batchnorms(model)
    momenta = [bn.momentum for bn in bns if bn.momentum is not None]
    low = min(momenta) if momenta else None
    eval_top1 = _top1(model, images, labels, batch_stats=False)
    train_top1 = _top1(model, images, labels, batch_stats=True) if bns else eval_top1
    reason = None
    if low is not None and low < MOMENTUM_THRESHOLD:
        reason = f"BatchNorm momentum {low:.3g} < {MOMENTUM_THRESHOLD:g}"
    elif train_top1 - eval_top1 > GAP_POINTS:
        reason = f"eval-mode top-1 {eval_top1:.1f}% is {train_top1 - eval_top1:.1f} points under train-mode {train_top1:.1f}%"
    return BnCheck(reason, low, eval_top1, train_top1)


@torch.no_grad()
def reestimate_bn(model: nn.Module, batches: Iterable, max_images: int = 2048) -> int:
    """Recompute every BatchNorm's running mean and variance over up to `max_images` images of `batches`
    ((images, ...) tuples or image tensors), in place; returns the images used (0: no BatchNorm)."""
    bns = batchnorms(model)
    if not bns:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches
        bn.train()
    device = next(model.parameters()).device
    seen = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x[: max_images - seen]
            model(x.to(device))
            seen += len(x)
            if seen >= max_images:
                break
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    return seen
