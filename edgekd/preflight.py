"""Checks that need no data and no training, run before the first stage so a typo costs seconds, not a teacher."""

from __future__ import annotations

from edgekd.config import PipelineConfig
from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.models.taps import check_layer_names


def check_pipeline(cfg: PipelineConfig) -> None:
    """Model names exist, and every feature-distillation layer exists in its model."""
    models = {}
    for role in ("teacher", "student"):
        name = getattr(cfg, role).model
        try:
            models[role] = build_model(name, num_classes=10, in_channels=cfg.data.channels or 3)
        except EdgekdError as e:
            raise EdgekdError(f"{role}.model: {e}") from None
    for i, pair in enumerate(cfg.distill.features):
        for role in ("teacher", "student"):
            try:
                check_layer_names(models[role], [getattr(pair, role)], what=f"{role} {getattr(cfg, role).model}")
            except EdgekdError as e:
                raise EdgekdError(f"distill.features[{i}].{role}: {e}") from None
