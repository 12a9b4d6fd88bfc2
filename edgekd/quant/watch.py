"""Collapse watch: stop a QAT run that is turning into a useless model while it trains, not at the end.

Every `every` optimizer steps (`step(loss)` is called once per step):
- a loss or a weight that is not finite stops at once, naming the first layer with a non-finite weight;
- an activation range more than `growth` times its calibrated value stops (a moving-average range that
  follows training-mode batch maxima away from the eval-mode activations it quantizes: every activation
  there then rounds to zero);
- the top-1 on a fixed slice of training images (eval mode, what the exported file computes) at chance
  (at most 1.5x) for every check over at least one epoch stops, when the calibrated model started at
  3x chance or more; the layer named is the quantized one whose weights moved furthest from where QAT
  started (relative L2 change).
Each stop is one `EdgekdError` line: what happened, where, when, and what to change.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.quant.fake_quant import QUANT_LAYERS, ActivationQuantizer

CHANCE_FACTOR = 1.5  # top-1 at most this times chance counts as chance (as the distill stage's divergence note)
START_FACTOR = 3.0  # the top-1 watch applies only to a model that started at least this times chance


class CollapseWatch:
    """Watches a QAT model (the `prepare_qat` result) over its training steps; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        every: int,
        growth: float,
        steps_per_epoch: int,
        lr: float,
    ) -> None:
        self.model = model
        self.images, self.labels = images, labels
        self.chance = 100.0 / num_classes
        self.every = every
        self.growth = growth
        self.lr = lr
        self.patience = max(3, math.ceil(steps_per_epoch / max(every, 1)) + 1)  # checks: at least one epoch
        self.steps = 0
        self.low = 0
        self.history: list[dict] = []  # one entry per check: {"step", "top1", "max_growth"}
        self.start_weights = {
            n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)
        }
        self.start_top1 = self._top1()

    @torch.no_grad()
    def _top1(self) -> float:
        was_training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            logits = torch.cat([self.model(x.to(device)).float().cpu() for x in self.images.split(256)])
        finally:
            self.model.train(was_training)
        return 100.0 * float((logits.argmax(1) == self.labels).float().mean())

    def _ranges(self) -> list[tuple[str, float, float]]:
        """(layer, calibrated amax, amax now) of every calibrated activation quantizer."""
        out = []
        for name, m in self.model.named_modules():
            if isinstance(m, ActivationQuantizer) and m.enabled and m.calibrated_amax > 0:
                layer = name.rsplit(".input_quantizer", 1)[0] if name.endswith("input_quantizer") else name
                out.append((layer, m.calibrated_amax, float(m.amax)))
        return out

    def _moved_most(self) -> tuple[str, float]:
        """The quantized layer whose weights moved furthest (relative L2) since QAT started, and how far."""
        best, best_change = "", -1.0
        for name, m in self.model.named_modules():
            if name in self.start_weights:
                w0 = self.start_weights[name].to(m.weight.device)
                change = float((m.weight.detach() - w0).norm() / w0.norm().clamp(min=1e-12))
                change = math.inf if not math.isfinite(change) else change
                if change > best_change:
                    best, best_change = name, change
        return best, best_change

    def step(self, loss: torch.Tensor) -> None:
        self.steps += 1
        if not torch.isfinite(loss.detach()).all():
            bad = next(
                (n for n, p in self.model.named_parameters() if not torch.isfinite(p.detach()).all()), "the loss"
            )
            raise EdgekdError(
                f"qat collapsed at step {self.steps}: the loss is {float(loss.detach()):g} (non-finite weights first in "
                f"{bad}); lower qat.lr (now {self.lr:g})"
            )
        if self.every <= 0 or self.steps % self.every:
            return
        ranges = self._ranges()
        grown = max(ranges, key=lambda r: r[2] / r[1], default=None)
        max_growth = grown[2] / grown[1] if grown else 1.0
        if grown and max_growth > self.growth:
            raise EdgekdError(
                f"qat collapsed at step {self.steps}: the activation range of {grown[0]} grew from {grown[1]:.3g} "
                f"(calibrated) to {grown[2]:.3g}, over qat.watch_growth {self.growth:g} times, so its int8 "
                f"activations round to zero; set qat.activation_ranges: fixed (or lower qat.lr, now {self.lr:g})"
            )
        top1 = self._top1()
        self.history.append({"step": self.steps, "top1": top1, "max_growth": max_growth})
        at_chance = top1 <= CHANCE_FACTOR * self.chance and self.start_top1 >= START_FACTOR * self.chance
        self.low = self.low + 1 if at_chance else 0
        if self.low >= self.patience:
            layer, change = self._moved_most()
            raise EdgekdError(
                f"qat collapsed by step {self.steps}: top-1 on {len(self.labels)} training images is {top1:.1f}% "
                f"(chance {self.chance:.1f}%, {self.start_top1:.1f}% after calibration) for {self.low} checks; "
                f"the weights of {layer} moved most ({change:.3g}x their norm); lower qat.lr (now {self.lr:g})"
            )

    def summary(self) -> dict:
        """For the stage metrics: checks made, top-1 at calibration and at the last check, largest range growth."""
        last = self.history[-1] if self.history else {}
        return {
            "steps": self.steps,
            "checks": len(self.history),
            "start_top1": self.start_top1,
            "last_top1": last.get("top1"),
            "max_range_growth": max((h["max_growth"] for h in self.history), default=None),
        }
