"""Logit distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch (Hinton et al. 2015).

    The T² factor keeps the gradient's scale roughly independent of T.
    """
    t = temperature
    s_log = F.log_softmax(student_logits / t, dim=1)
    t_log = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(s_log, t_log, reduction="batchmean", log_target=True) * (t * t)


def hard_loss(student_logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with class indices (N,) or soft/mixed targets (N, classes)."""
    return F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)


def mean_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Mean KL(teacher ‖ student) at T=1, for monitoring."""
    return float(
        F.kl_div(
            F.log_softmax(student_logits, 1), F.log_softmax(teacher_logits, 1), reduction="batchmean", log_target=True
        )
    )
