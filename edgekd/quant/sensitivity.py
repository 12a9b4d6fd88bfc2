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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.config import QatConfig
from edgekd.quant.fake_quant import QUANT_LAYERS
from edgekd.quant.qat import calibrate_ptq
from edgekd.run_records import LayerScore, SensitivityRecord


@dataclass(frozen=True)
class Score:
    top1: float  # percent
    kl: float  # mean KL(fp32 ‖ int8) in nats


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
) -> tuple[Score, Score, list[LayerScore]]:
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
            rows.append(LayerScore(name, s.top1, s.kl, s.top1 - int8.top1))
    rows.sort(key=lambda r: (-r.top1, r.kl))
    return base, int8, rows


def choose_keep_float(
    fp32: nn.Module,
    qmodel: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_drop: float,
    max_layers: int,
) -> tuple[list[str], float, list[LayerScore]]:
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
) -> tuple[SensitivityRecord, list[LayerScore]]:
    """The qat stage's `sensitivity` record and the ranking."""
    base, int8, ranking = layer_sensitivity(student, ptq, images, labels)
    return SensitivityRecord(len(labels), calibration, base.top1, int8.top1, ranking), ranking


def calibration_batches(train_set, batch_size: int, seed: int) -> Iterator:
    """The shuffled training batches PTQ calibrates on (drawn with `seed`)."""
    return train_set.batches(batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def calibrated(student: nn.Module, train_set, cfg: QatConfig, batch_size: int, seed: int, keep: list[str]) -> nn.Module:
    """The PTQ model of `student` as the qat stage calibrates it."""
    batches = calibration_batches(train_set, batch_size, seed)
    return calibrate_ptq(student, batches, cfg.calibration_batches, cfg.calibration, cfg.percentile, keep)


def measure_sensitivity(
    student: nn.Module, train_set, cfg: QatConfig, batch_size: int, seed: int, keep: list[str]
) -> tuple[SensitivityRecord, nn.Module, torch.Tensor, torch.Tensor]:
    """What the qat stage and `edgekd quant sensitivity` measure: the record, the PTQ model and the images scored."""
    ptq = calibrated(student, train_set, cfg, batch_size, seed, keep)
    x, y = sensitivity_split(train_set, cfg.sensitivity_images, seed)
    record, _ = sensitivity_record(student, ptq, x, y, cfg.calibration)
    return record, ptq, x, y
