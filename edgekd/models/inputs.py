"""What a model is fed: input size, resize before the crop, mean/std; and the hook that converts between two such."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """Preprocessing a model expects: resize the short side to `resize_size`, centre-crop `image_size`, normalise."""

    image_size: int
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        return cls(int(d["image_size"]), int(d["resize_size"]), tuple(d["mean"]), tuple(d["std"]))

    def fit_channels(self, channels: int) -> InputSpec:
        """The same spec with mean/std of `channels` values (3 values for 1 channel: their mean)."""

        def fit(v: tuple[float, ...]) -> tuple[float, ...]:
            if len(v) == channels:
                return tuple(v)
            return tuple(v) * channels if len(v) == 1 else (sum(v) / len(v),)

        return InputSpec(self.image_size, self.resize_size, fit(self.mean), fit(self.std))


def default_resize(image_size: int) -> int:
    """The usual ImageNet ratio: resize to 256 for a 224 crop."""
    return int(round(image_size * 256 / 224))


def attach_input_adapter(model: nn.Module, given: InputSpec, wanted: InputSpec) -> None:
    """Make `model` take images preprocessed per `given` and see them as `wanted` (re-normalised, resized).

    A forward pre-hook, so layer names and the state_dict stay the model's own; tracing and ONNX export record it.
    """
    g_mean = torch.tensor(given.mean).view(1, -1, 1, 1)
    g_std = torch.tensor(given.std).view(1, -1, 1, 1)
    w_mean = torch.tensor(wanted.mean).view(1, -1, 1, 1)
    w_std = torch.tensor(wanted.std).view(1, -1, 1, 1)
    size = wanted.image_size

    def adapt(_module: nn.Module, args: tuple) -> tuple:
        x = args[0]  # (N, C, S, S), normalised per `given`
        raw = x * g_std.to(x.device, x.dtype) + g_mean.to(x.device, x.dtype)  # pixels in [0, 1]
        if raw.shape[-1] != size or raw.shape[-2] != size:
            raw = F.interpolate(
                raw, size=(size, size), mode="bilinear", align_corners=False
            )  # ONNX opset 17 has no antialias
        return ((raw - w_mean.to(x.device, x.dtype)) / w_std.to(x.device, x.dtype), *args[1:])

    model.register_forward_pre_hook(adapt)
