"""Feature-distillation losses, looked up by name (the `loss` of a FeaturePair).

Every loss takes `(student, teacher)` features, the student already passed through its adapter
(see edgekd.distill.adapters), and returns a scalar. The teacher feature is a target: callers
pass it detached.

- ``hint``: FitNets (Romero et al. 2015) mean squared error between adapted student and teacher.
- ``attention``: attention transfer (Zagoruyko & Komodakis 2017), p = 2: each map becomes the
  L2-normalised spatial map ``Q = normalize(mean_c(A_c ** 2))``; the loss is the mean squared
  difference of the two maps (as in the authors' code). Channel counts may differ.
- ``mmd``: maximum mean discrepancy with a Gaussian kernel ``exp(-|x - y|² / (2 σ²))``, biased
  estimator ``mean k(s, s') + mean k(t, t') - 2 mean k(s, t)``. On (N, C, H, W) maps it is computed
  per image over its L2-normalised channel maps (neuron selectivity transfer, Huang & Wang 2017;
  channel counts may differ) and averaged over the batch; on (N, D) vectors it compares the two
  batches of L2-normalised rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from edgekd.errors import EdgekdError
from edgekd.ondevice.text import did_you_mean

FeatureLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

FEATURE_LOSSES: dict[str, FeatureLoss] = {}


def register_feature_loss(name: str) -> Callable[[FeatureLoss], FeatureLoss]:
    """Decorator that adds a loss to the registry under `name`."""

    def add(fn: FeatureLoss) -> FeatureLoss:
        if name in FEATURE_LOSSES:
            raise ValueError(f"feature loss '{name}' is already registered")
        FEATURE_LOSSES[name] = fn
        return fn

    return add


def get_feature_loss(name: str) -> FeatureLoss:
    """The registered loss called `name`; EdgekdError naming the valid ones otherwise."""
    if name not in FEATURE_LOSSES:
        hint = did_you_mean(name, FEATURE_LOSSES)
        raise EdgekdError(f"unknown feature loss '{name}'; {hint}valid losses: {', '.join(sorted(FEATURE_LOSSES))}")
    return FEATURE_LOSSES[name]


def _same_shape(student: torch.Tensor, teacher: torch.Tensor, loss: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{loss}: student feature {tuple(student.shape)} and teacher feature "
            f"{tuple(teacher.shape)} differ; build the pair's adapter with build_adapters"
        )


@register_feature_loss("hint")
def hint_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """FitNets hint: mean over all elements of (student - teacher)²."""
    _same_shape(student, teacher, "hint")
    return F.mse_loss(student, teacher)


def attention_map(feat: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W): channel mean of squared activations, L2-normalised per sample."""
    return F.normalize(feat.pow(2).mean(dim=1).flatten(1), dim=1)


@register_feature_loss("attention")
def attention_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Attention transfer (p = 2): mean of (Q_s - Q_t)² over the batch and spatial positions."""
    if student.dim() != 4 or student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
        raise ValueError(
            f"attention: needs (N, C, H, W) maps with equal N, H, W; got student "
            f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}"
        )
    return (attention_map(student) - attention_map(teacher)).pow(2).mean()


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Biased squared MMD between sample sets x (..., n, d) and y (..., m, d); batched over leading dims."""
    gamma = 1.0 / (2.0 * sigma**2)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # |a - b|² expanded, so gradients stay finite where a == b (unlike cdist at distance 0)
        d2 = a.pow(2).sum(-1).unsqueeze(-1) + b.pow(2).sum(-1).unsqueeze(-2) - 2.0 * a @ b.transpose(-2, -1)
        return torch.exp(-gamma * d2.clamp_min(0)).mean(dim=(-2, -1))

    return k(x, x) + k(y, y) - 2.0 * k(x, y)


@register_feature_loss("mmd")
def mmd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Gaussian-kernel MMD (σ = 1) of L2-normalised channel maps per image, or of batch rows for vectors."""
    if student.dim() == 4:
        if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
            raise ValueError(
                f"mmd: maps need equal N, H, W; got student {tuple(student.shape)} and teacher {tuple(teacher.shape)}"
            )
        s = F.normalize(student.flatten(2), dim=2)  # (N, Cs, H*W): each channel map is one sample
        t = F.normalize(teacher.flatten(2), dim=2)  # (N, Ct, H*W)
        return gaussian_mmd(s, t).mean()
    _same_shape(student, teacher, "mmd")
    return gaussian_mmd(F.normalize(student, dim=1), F.normalize(teacher, dim=1))
