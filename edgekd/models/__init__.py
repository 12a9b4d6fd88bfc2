"""Model registry, checkpoints and feature taps."""

from edgekd.models.checkpoint import ModelSpec, load_model, load_state_dict_file, save_model
from edgekd.models.registry import build_model, count_params, model_names

__all__ = [
    "ModelSpec",
    "build_model",
    "count_params",
    "load_model",
    "load_state_dict_file",
    "model_names",
    "save_model",
]
