"""Fine-tuning a pretrained classifier: the head learns first and fastest, the backbone follows."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.distill.objectives import CrossEntropy
from edgekd.models.weights import classifier_head


def param_groups(model: nn.Module, backbone_lr_factor: float) -> list[dict]:
    """Two optimizer groups: the classifier head at the full learning rate, the rest scaled by `backbone_lr_factor`."""
    head_name, head = classifier_head(model)
    head_ids = {id(p) for p in head.parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return [
        {"params": list(head.parameters()), "lr_scale": 1.0, "name": head_name},
        {"params": backbone, "lr_scale": backbone_lr_factor, "name": "backbone"},
    ]


class FineTune(CrossEntropy):
    """Cross-entropy with the backbone frozen (no gradients, BatchNorm statistics kept) for the first epochs."""

    def __init__(self, model: nn.Module, freeze_epochs: int, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        _, head = classifier_head(model)
        head_ids = {id(p) for p in head.parameters()}
        self.backbone = [p for p in model.parameters() if id(p) not in head_ids]
        head_modules = set(head.modules())
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.norms = [m for m in self.norms if m not in head_modules]
        self.freeze_epochs = freeze_epochs
        self.frozen = False

    def begin_epoch(self, epoch: int, num_epochs: int) -> dict:
        self.frozen = epoch < self.freeze_epochs
        for p in self.backbone:
            p.requires_grad_(not self.frozen)
        return {"backbone_frozen": int(self.frozen)}

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.frozen:
            for m in self.norms:
                m.eval()
        return super().loss(model, x, y, idx)
