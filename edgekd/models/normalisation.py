"""Is a loaded model fed the normalisation it was trained with? Its accuracy under the configured mean/std
against the obvious alternatives (pixels in [0, 1], ImageNet's statistics, the data's own), on a slice of
validation images.

A checkpoint does not say how its images were normalised. A teacher trained on raw pixels scores well
above chance under ImageNet's mean/std (39% where it scores 72% under mean 0, std 1, in the case that
prompted this), so the 2x-chance gate alone lets it be distilled; a far better score under another
normalisation is the sign.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models.checkpoint import ModelSpec, load_state_dict_file
from edgekd.models.inputs import InputSpec


class ImageSet(Protocol):
    """What the check needs of a data set (edgekd.data.datasets.ImageSet): its batches in order."""

    def batches(self, batch_size: int) -> Iterable: ...


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGES = 512
"""Validation images the check scores on."""
MARGIN = 20.0
"""Points by which an alternative must beat the configured normalisation to stop the run."""


@dataclass(frozen=True)
class Verdict:
    configured_top1: float
    best: str  # the alternative's description
    best_spec: InputSpec
    best_top1: float
    images: int

    @property
    def far_better(self) -> bool:
        return self.best_top1 >= self.configured_top1 + MARGIN


def alternatives(wanted: InputSpec, images: torch.Tensor, given: InputSpec) -> dict[str, InputSpec]:
    """Normalisations a model may have been trained with: unit, ImageNet, and the data's own statistics
    (measured on `images`, which are normalised with `given`)."""
    channels = len(wanted.mean)
    raw = images * torch.tensor(given.std).view(1, -1, 1, 1) + torch.tensor(given.mean).view(1, -1, 1, 1)
    own_mean = tuple(float(v) for v in raw.mean(dim=(0, 2, 3)))
    own_std = tuple(max(float(v), 1e-3) for v in raw.std(dim=(0, 2, 3)))

    def spec(mean: tuple[float, ...], std: tuple[float, ...]) -> InputSpec:
        return InputSpec(wanted.image_size, wanted.resize_size, mean, std).fit_channels(channels)

    return {
        "mean 0, std 1 (pixels in [0, 1])": spec((0.0,), (1.0,)),
        "ImageNet's mean/std": spec(*IMAGENET),
        "the data's own mean/std": spec(own_mean, own_std),
    }


@torch.no_grad()
def top1(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    logits = torch.cat([model(x) for x in images.split(128)])
    return float((logits.argmax(1) == labels).float().mean() * 100)


def compare(
    build: Callable[[InputSpec], nn.Module],
    wanted: InputSpec,
    given: InputSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> Verdict:
    """Top-1 of `build(spec)` (the loaded model fed `spec`'s normalisation) under `wanted` and each alternative."""
    configured = top1(build(wanted), images, labels)
    scores = {
        name: (spec, top1(build(spec), images, labels)) for name, spec in alternatives(wanted, images, given).items()
    }
    best = max(scores, key=lambda name: scores[name][1])
    return Verdict(configured, best, scores[best][0], scores[best][1], len(labels))


def check_normalisation(
    spec: ModelSpec, checkpoint: Path, given: InputSpec, wanted: InputSpec, val: ImageSet, batch_size: int
) -> None:
    """A loaded teacher that scores far better under another normalisation stops the run, naming the setting."""
    xs, ys, n = [], [], 0
    for x, y, _ in val.batches(batch_size):
        xs.append(x)
        ys.append(y)
        n += len(y)
        if n >= IMAGES:
            break
    images, labels = torch.cat(xs)[:IMAGES], torch.cat(ys)[:IMAGES]

    def build(inputs: InputSpec) -> nn.Module:
        adapter = {"given": given.to_dict(), "wanted": inputs.to_dict()} if inputs != given else None
        model = dataclasses.replace(spec, input_adapter=adapter).build()
        load_state_dict_file(model, checkpoint)
        return model

    verdict = compare(build, wanted, given, images, labels)
    if verdict.far_better:
        mean, std = ([round(v, 4) for v in values] for values in (verdict.best_spec.mean, verdict.best_spec.std))
        raise EdgekdError(
            f"teacher.checkpoint {checkpoint}: val top-1 {verdict.configured_top1:.1f}% under mean {list(wanted.mean)}, "
            f"std {list(wanted.std)} but {verdict.best_top1:.1f}% under {verdict.best} on {verdict.images} validation "
            f"images: it was likely trained with that normalisation; set teacher.mean: {mean} and teacher.std: {std} "
            f"(or state the mean/std it was trained with)"
        )
