"""Feature distillation for a list of FeaturePairs: taps on both models, adapters, weighted losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgekd.config import FeaturePair
from edgekd.distill.adapters import build_adapters
from edgekd.distill.feature_losses import get_feature_loss
from edgekd.models.taps import FeatureTaps


class FeatureDistiller:
    """Σ weight_i · loss_i(adapter_i(student[s_i]), teacher[t_i]) over the pairs.

    Layer names are checked when it is built (before any training), and one probe forward pass of
    both models on zeros of `input_shape` (C, H, W) shapes the adapters.
    """

    def __init__(
        self, pairs: Sequence[FeaturePair], teacher: nn.Module, student: nn.Module, input_shape: Sequence[int]
    ) -> None:
        self.pairs = list(pairs)
        self.losses = [get_feature_loss(p.loss) for p in self.pairs]
        self.teacher_layers = list(dict.fromkeys(p.teacher for p in self.pairs))
        self.teacher_taps = FeatureTaps(teacher, self.teacher_layers, what="teacher")
        self.student_taps = FeatureTaps(student, dict.fromkeys(p.student for p in self.pairs), what="student")
        self.adapters = build_adapters(self.pairs, *self._probe(teacher, student, tuple(input_shape)))

    def _probe(self, teacher: nn.Module, student: nn.Module, input_shape: tuple[int, ...]):
        def run(model: nn.Module, taps: FeatureTaps) -> dict[str, torch.Tensor]:
            was_training = model.training
            param = next(model.parameters(), None)
            x = torch.zeros(2, *input_shape, device=param.device if param is not None else "cpu")
            model.eval()
            with torch.no_grad():
                _, feats = taps.run(x)
            model.train(was_training)
            return feats

        return run(student, self.student_taps), run(teacher, self.teacher_taps)

    def loss(
        self, student_feats: dict[str, torch.Tensor], teacher_feats: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum over the pairs, and each pair's unweighted loss for the log (`feat<i>_<loss>`)."""
        total = torch.zeros((), device=next(iter(student_feats.values())).device)
        parts = {}
        for i, (pair, fn, adapter) in enumerate(zip(self.pairs, self.losses, self.adapters)):
            value = fn(adapter(student_feats[pair.student]), teacher_feats[pair.teacher].detach())
            total = total + pair.weight * value
            parts[f"feat{i}_{pair.loss}"] = value.item()
        return total, parts
