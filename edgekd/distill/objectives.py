"""What the training loops minimise: cross-entropy for teachers and baselines, KD for students."""

from __future__ import annotations

import torch
from torch import nn

from edgekd import distributed
from edgekd.config import DistillConfig
from edgekd.data.augment import BatchAugment
from edgekd.distill.features import FeatureDistiller
from edgekd.distill.losses import hard_loss, kd_loss
from edgekd.distill.schedules import DistillSchedules
from edgekd.distill.teacher_cache import TeacherCache


def _augment_seed(seed: int, epoch: int) -> int:
    """A stream apart from the loop's shuffling seed; each process of a distributed run draws its own."""
    return ((seed * 100_003 + epoch) * 2 + 1) * 1_009 + distributed.rank()


class CrossEntropy:
    """Hard labels only (teacher training, the student baseline), optionally on augmented batches."""

    def __init__(self, label_smoothing: float = 0.0, augment: BatchAugment | None = None, seed: int = 0) -> None:
        self.label_smoothing = label_smoothing
        self.augment = augment
        self.seed = seed

    def modules(self) -> list[nn.Module]:
        return []

    def begin_epoch(self, epoch: int, num_epochs: int) -> dict:
        if self.augment is not None:
            self.augment.reseed(_augment_seed(self.seed, epoch))
        return {}

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.augment is not None:
            x, y = self.augment(x, y)
        loss = hard_loss(model(x), y, self.label_smoothing)
        return loss, {"hard_loss": loss.item()}

    def end_epoch(self, val: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Distillation:
    """soft_weight · T² · KL(teacher ‖ student at T) + hard_weight · CE(student, targets) + feature losses.

    Temperature and weights follow their schedules (adaptive ones fed with val top-1 as a fraction).
    The batch is augmented once, so teacher and student see the same images; MixUp/CutMix give the CE
    mixed targets. With a TeacherCache (only with deterministic augmentation) the teacher does not run:
    its logits and features are looked up by sample index.
    """

    def __init__(
        self,
        teacher: nn.Module,
        cfg: DistillConfig,
        *,
        features: FeatureDistiller | None = None,
        augment: BatchAugment | None = None,
        cache: TeacherCache | None = None,
        seed: int = 0,
    ) -> None:
        if cache is not None and augment is not None and not augment.deterministic:
            raise ValueError("a teacher cache is only valid when the augmentation is deterministic")
        self.teacher = teacher.eval().requires_grad_(False)
        self.cfg = cfg
        self.features = features
        self.augment = augment
        self.cache = cache
        self.seed = seed
        self.schedules = DistillSchedules(cfg)
        self.values: dict = {}

    def modules(self) -> list[nn.Module]:
        return [self.features.adapters] if self.features else []

    def begin_epoch(self, epoch: int, num_epochs: int) -> dict:
        if self.augment is not None:
            self.augment.reseed(_augment_seed(self.seed, epoch))
        self.values = self.schedules.values(epoch)
        weights = {
            f"feat{i}_weight": pair.weight for i, pair in enumerate(self.features.pairs if self.features else [])
        }
        return {**self.values, **weights}

    def _teacher(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.cache is not None:
            logits, feats = self.cache.lookup(idx)
            return logits.to(x.device, non_blocking=True), {
                k: v.to(x.device, non_blocking=True) for k, v in feats.items()
            }
        with torch.no_grad():
            if self.features:
                return self.features.teacher_taps.run(x)
            return self.teacher(x), {}

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.augment is not None:
            x, y = self.augment(x, y)
        t_logits, t_feats = self._teacher(x, idx)
        s_feats: dict = {}
        if self.features:
            with self.features.student_taps as taps:
                s_logits = model(x)
            s_feats = taps.pop()
        else:
            s_logits = model(x)
        v = self.values
        soft = kd_loss(s_logits, t_logits, v["temperature"])
        hard = hard_loss(s_logits, y, self.cfg.label_smoothing)
        loss = v["soft_weight"] * soft + v["hard_weight"] * hard
        parts = {"soft_loss": soft.item(), "hard_loss": hard.item()}
        if self.features:
            feat_loss, feat_parts = self.features.loss(s_feats, t_feats)
            loss = loss + feat_loss
            parts.update(feat_parts)
        return loss, parts

    def end_epoch(self, val: dict) -> None:
        self.schedules.observe(val["val_top1"] / 100)

    def state_dict(self) -> dict:
        return {"schedules": self.schedules.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.schedules.load_state_dict(state.get("schedules", {}))
