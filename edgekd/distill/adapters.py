"""Learned adapters that map a student feature onto its teacher feature's shape.

Maps (N, Cs, Hs, Ws) -> (N, Ct, Ht, Wt) with a 1x1 conv + BatchNorm when channels differ and
adaptive average pooling when the spatial sizes differ; vectors (N, Ds) -> (N, Dt) with a Linear.
Shapes are read from one probe forward pass (`build_adapters`). Attention transfer, and MMD on
maps, compare features whose channel counts may differ, so their pairs get no projection
(pooling only, when spatial sizes differ); MMD on vectors compares batches and needs equal sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.config import FeaturePair
from edgekd.errors import EdgekdError


def needs_projection(loss: str, feature_dims: int) -> bool:
    """Whether a pair's loss needs the student's channels/size projected onto the teacher's."""
    return loss == "hint" or (loss == "mmd" and feature_dims == 1)


class FeatureAdapter(nn.Module):
    """Student feature -> teacher feature shape (channels by a learned projection, space by pooling)."""

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], project: bool = True) -> None:
        super().__init__()
        s, t = tuple(student_shape), tuple(teacher_shape)  # without the batch dimension
        if len(s) != len(t) or len(s) not in (1, 3):
            raise EdgekdError(
                f"cannot adapt a student feature of shape {s} to a teacher feature of shape {t}: "
                f"both must be (C, H, W) maps or (D,) vectors"
            )
        self.spatial = t[1:] if len(t) == 3 and s[1:] != t[1:] else None
        if not project or s[0] == t[0]:
            self.proj: nn.Module = nn.Identity()
        elif len(s) == 3:
            self.proj = nn.Sequential(nn.Conv2d(s[0], t[0], 1, bias=False), nn.BatchNorm2d(t[0]))
        else:
            self.proj = nn.Linear(s[0], t[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial is not None:
            x = F.adaptive_avg_pool2d(x, self.spatial)  # pool first: the 1x1 conv then runs on fewer pixels
        return self.proj(x)


def _shape(feats: Mapping[str, torch.Tensor], name: str, side: str) -> tuple[int, ...]:
    if name not in feats:
        raise EdgekdError(f"the {side} layer '{name}' did not run in the probe forward pass (is it used in forward()?)")
    feat = feats[name]
    if not isinstance(feat, torch.Tensor) or feat.dim() not in (2, 4):
        found = tuple(feat.shape) if isinstance(feat, torch.Tensor) else type(feat).__name__
        raise EdgekdError(
            f"the {side} layer '{name}' outputs {found}; feature distillation needs "
            f"(N, C, H, W) maps or (N, D) vectors: pick another layer"
        )
    return tuple(feat.shape[1:])


def build_adapters(
    pairs: Sequence[FeaturePair], student_feats: Mapping[str, torch.Tensor], teacher_feats: Mapping[str, torch.Tensor]
) -> nn.ModuleList:
    """One adapter per pair (same order), shaped from the features of one probe forward pass."""
    adapters = nn.ModuleList()
    for pair in pairs:
        s = _shape(student_feats, pair.student, "student")
        t = _shape(teacher_feats, pair.teacher, "teacher")
        if len(s) != len(t):
            raise EdgekdError(
                f"feature pair teacher '{pair.teacher}' {t} / student '{pair.student}' {s}: "
                f"one is a map and the other a vector; pair maps with maps and vectors with vectors"
            )
        if pair.loss == "attention" and len(s) != 3:
            raise EdgekdError(
                f"feature pair teacher '{pair.teacher}' / student '{pair.student}': attention transfer "
                f"needs (N, C, H, W) maps, got {t} and {s}"
            )
        adapters.append(FeatureAdapter(s, t, project=needs_projection(pair.loss, len(s))))
    return adapters
