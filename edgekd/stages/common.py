"""Small pieces several stages share."""

from __future__ import annotations

from pathlib import Path

from edgekd.models import ModelSpec, count_params, load_model
from edgekd.pipeline import RunContext


def spec_for(ctx: RunContext, model_name: str) -> ModelSpec:
    info = ctx.data.info
    return ModelSpec(model_name, info.num_classes, info.in_channels, info.image_size)


def model_summary(path: Path) -> dict:
    """Parameters and size on disk of a saved model file."""
    model, spec = load_model(path)
    return {"model": spec.name, "params": count_params(model), "size_bytes": path.stat().st_size}
