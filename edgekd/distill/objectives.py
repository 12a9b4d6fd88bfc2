"""What the training loops minimise: cross-entropy for teachers and baselines, KD for students."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.config import DistillConfig
from edgekd.distill.losses import hard_loss, kd_loss
from edgekd.errors import EdgekdError


class CrossEntropy:
    """Hard labels only (teacher training, the student baseline)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def modules(self) -> list[nn.Module]:
        return []

    def begin_epoch(self, epoch: int, num_epochs: int) -> dict:
        return {}

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        loss = hard_loss(model(x), y, self.label_smoothing)
        return loss, {"hard_loss": loss.item()}

    def end_epoch(self, val: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _number(value: object, name: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    raise EdgekdError(f"distill.{name}: schedules are not supported yet; give a number")


class Distillation:
    """soft_weight · T² · KL(teacher ‖ student at T) + hard_weight · CE(student, labels), teacher frozen."""

    def __init__(self, teacher: nn.Module, cfg: DistillConfig) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.cfg = cfg
        self.values: dict = {}

    def modules(self) -> list[nn.Module]:
        return []

    def begin_epoch(self, epoch: int, num_epochs: int) -> dict:
        self.values = {"temperature": _number(self.cfg.temperature, "temperature"),
                       "soft_weight": _number(self.cfg.soft_weight, "soft_weight"),
                       "hard_weight": _number(self.cfg.hard_weight, "hard_weight")}
        return dict(self.values)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            t_logits = self.teacher(x)
        s_logits = model(x)
        v = self.values
        soft = kd_loss(s_logits, t_logits, v["temperature"])
        hard = hard_loss(s_logits, y, self.cfg.label_smoothing)
        loss = v["soft_weight"] * soft + v["hard_weight"] * hard
        return loss, {"soft_loss": soft.item(), "hard_loss": hard.item()}

    def end_epoch(self, val: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
