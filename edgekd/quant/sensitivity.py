"""Per-layer int8 sensitivity and mixed precision: which layers cost the accuracy, and keeping them float.

Sensitivity of a layer = what the int8 model scores when only that layer is left float (its input and
weight quantizers switched off), everything else int8: top-1 and the mean KL divergence from the fp32
model's predictions. A layer whose floating recovers the most is the most sensitive. Scored on images
from the training data, never on the validation split that the report scores artifacts on.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.quant.fake_quant import QUANT_LAYERS


@dataclass(frozen=True)
class Score:
    top1: float  # percent
    kl: float  # mean KL(fp32 ‖ int8) in nats


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    top1: float  # int8 top-1 with this layer float
    kl: float
    top1_gain: float  # points recovered over all-int8

    def as_dict(self) -> dict:
        return asdict(self)


def sample_images(batches: Iterable, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` (images, labels) of (images, labels, ...) batches."""
    xs, ys = zip(*((b[0], b[1]) for b in itertools.islice(batches, max(1, n))), strict=True)
    return torch.cat(xs)[:n].cpu(), torch.cat(ys)[:n].cpu()


@torch.no_grad()
def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ref_logp: torch.Tensor) -> Score:
    """Top-1 (percent) and mean KL from the reference log-probabilities."""
    logits = torch.cat([model(x) for x in images.split(256)])
    logp = F.log_softmax(logits.float(), 1)
    kl = float(F.kl_div(logp, ref_logp, log_target=True, reduction="batchmean"))
    return Score(100.0 * float((logits.argmax(1) == labels).float().mean()), kl)


@contextmanager
def layers_float(model: nn.Module, layers: Iterable[str]) -> Iterator[None]:
    """Switch off the input and weight quantizers of `layers` for the duration of the block."""
    mods = [model.get_submodule(name) for name in layers]
    for m in mods:
        m.input_quantizer.enabled = m.weight_quantizer.enabled = False
    try:
        yield
    finally:
        for m in mods:
            m.input_quantizer.enabled = m.weight_quantizer.enabled = True


def layer_sensitivity(
    fp32: nn.Module, qmodel: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[Score, Score, list[LayerSensitivity]]:
    """(fp32 score, all-int8 score, one entry per quantized layer, most sensitive first) of a calibrated
    `qmodel` (eval mode) against its float `fp32` model."""
    fp32, qmodel = copy.deepcopy(fp32).eval().cpu(), copy.deepcopy(qmodel).eval().cpu()
    with torch.no_grad():
        ref = F.log_softmax(torch.cat([fp32(x) for x in images.split(256)]).float(), 1)
    base = score(fp32, images, labels, ref)
    int8 = score(qmodel, images, labels, ref)
    rows = []
    for name, m in qmodel.named_modules():
        if isinstance(m, QUANT_LAYERS):
            with layers_float(qmodel, [name]):
                s = score(qmodel, images, labels, ref)
            rows.append(LayerSensitivity(name, s.top1, s.kl, s.top1 - int8.top1))
    rows.sort(key=lambda r: (-r.top1, r.kl))
    return base, int8, rows


def choose_keep_float(
    fp32: nn.Module,
    qmodel: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_drop: float,
    max_layers: int,
) -> tuple[list[str], float, list[LayerSensitivity]]:
    """Layers to keep float, most sensitive first, added one at a time until the int8 top-1 is within
    `max_drop` points of fp32 on `images` or `max_layers` are kept. Returns (layers, final drop, ranking)."""
    base, int8, ranking = layer_sensitivity(fp32, qmodel, images, labels)
    qmodel = copy.deepcopy(qmodel).eval().cpu()
    with torch.no_grad():
        ref = F.log_softmax(torch.cat([fp32.eval().cpu()(x) for x in images.split(256)]).float(), 1)
    kept: list[str] = []
    drop = base.top1 - int8.top1
    for row in ranking:
        if drop <= max_drop or len(kept) >= max_layers:
            break
        kept.append(row.layer)
        with layers_float(qmodel, kept):
            drop = base.top1 - score(qmodel, images, labels, ref).top1
    return kept, drop, ranking


def sensitivity_split(train_set, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training images and labels drawn with `seed + 1` (the calibration batches use `seed`)."""
    generator = torch.Generator().manual_seed(seed + 1)
    return sample_images(train_set.batches(256, shuffle=True, generator=generator), n)


def sensitivity_record(
    student: nn.Module, ptq: nn.Module, images: torch.Tensor, labels: torch.Tensor, calibration: str
) -> tuple[dict, list[LayerSensitivity]]:
    """The `sensitivity` metrics record of the qat stage (documented in edgekd/stages/qat.py) and the ranking."""
    base, int8, ranking = layer_sensitivity(student, ptq, images, labels)
    record = {
        "split": "train",
        "images": len(labels),
        "calibration": calibration,
        "measure": "top-1 and KL to fp32 with only this layer float, every other layer int8",
        "fp32_top1": base.top1,
        "int8_top1": int8.top1,
        "layers": [r.as_dict() for r in ranking],
    }
    return record, ranking
