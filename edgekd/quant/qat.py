"""Quantization-aware training and post-training static int8 with the fake-quant layers of `fake_quant`.

qat = prepare_qat(student, calib_batches, cfg)   # copy, fold BN, wrap Conv/Linear, calibrate ranges
... train `qat` like any nn.Module with any loss (e.g. the KD loop) ...
freeze_observers(qat)                            # before the last epoch(s)
export_qdq_onnx(qat, "student_int8_qdq.onnx", example)

ptq = calibrate_ptq(student, calib_batches)       # same format, calibration only
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from edgekd.config import QatConfig
from edgekd.errors import EdgekdError
from edgekd.quant.fake_quant import QUANT_LAYERS, ActivationQuantizer, QuantConv2d, QuantConvBn2d, QuantLinear
from edgekd.quant.fold import conv_bn_pairs, replace_module

Batch = torch.Tensor | tuple | list


def quantize_layers(model: nn.Module, momentum: float = 0.01) -> list[str]:
    """Replace every Conv2d (with the BatchNorm that follows it, if any) and Linear in place by its
    fake-quantized twin; the absorbed BatchNorms become Identity. Returns the quantized layer paths."""
    pairs = dict(conv_bn_pairs(model))
    targets = [(name, m) for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear) and name]
    for name, m in targets:
        if name in pairs:
            bn_path = pairs[name]
            q = QuantConvBn2d.from_conv_bn(m, model.get_submodule(bn_path), momentum)
            replace_module(model, bn_path, nn.Identity())
        elif isinstance(m, nn.Conv2d):
            q = QuantConv2d.from_float(m, momentum)
        else:
            q = QuantLinear.from_float(m, momentum)
        replace_module(model, name, q)
    return [name for name, _ in targets]


def activation_quantizers(model: nn.Module) -> list[ActivationQuantizer]:
    return [m for m in model.modules() if isinstance(m, ActivationQuantizer)]


def _images(batch: Batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Batch], limit: int | None = None) -> int:
    """Set every activation range to the max |x| seen over the batches (fp32 forward); returns batches used."""
    quantizers = activation_quantizers(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for q in quantizers:
        q.amax.zero_()
        q.calibrating = True
    used = 0
    try:
        for batch in batches:
            if limit is not None and used >= limit:
                break
            model(_images(batch).to(device))
            used += 1
    finally:
        for q in quantizers:
            q.calibrating = False
        model.train(was_training)
    if used == 0:
        raise EdgekdError("quantization calibration got no batches: the calibration data loader is empty")
    dead = sum(float(q.amax) == 0.0 for q in quantizers)
    if dead == len(quantizers):
        raise EdgekdError("quantization calibration saw only zeros at every quantized layer input: check the data")
    return used


def quantizable_copy(model: nn.Module, momentum: float = 0.01) -> nn.Module:
    """A copy of `model` with fake-quantized Conv2d(+BatchNorm)/Linear layers, not yet calibrated.

    Also the skeleton to load a saved QAT state_dict into: `quantizable_copy(spec.build()).load_state_dict(sd)`.
    """
    qmodel = copy.deepcopy(model).eval()
    if not quantize_layers(qmodel, momentum):
        raise EdgekdError(f"{type(model).__name__} has no Conv2d or Linear layer to quantize")
    return qmodel


def prepare_qat(model: nn.Module, calib_batches: Iterable[Batch], cfg: QatConfig | None = None) -> nn.Module:
    """A copy of `model` ready for quantization-aware training, in train mode.

    Every Conv2d/Linear gets fake-quantized input (per tensor) and weight (per channel); a BatchNorm
    after a convolution is folded into its quantized weight while still normalising with batch
    statistics during training (see QuantConvBn2d); activation ranges start from `cfg.calibration_batches`
    batches of `calib_batches` (images, or (images, labels)) and then follow an EMA while training.
    The result is a plain nn.Module: train it with any loss and optimizer.
    """
    cfg = cfg or QatConfig()
    qmodel = quantizable_copy(model, cfg.ema_momentum)
    calibrate(qmodel, calib_batches, cfg.calibration_batches)
    return qmodel.train()


def calibrate_ptq(model: nn.Module, batches: Iterable[Batch], limit: int | None = None) -> nn.Module:
    """Post-training static int8: a calibrated, frozen copy of `model` in eval mode (same Q/DQ format as QAT)."""
    qmodel = quantizable_copy(model, momentum=0.0)
    calibrate(qmodel, batches, limit)
    freeze_observers(qmodel)
    return qmodel.eval()


def freeze_observers(model: nn.Module) -> int:
    """Stop updating activation ranges (for the last QAT epochs); returns how many were frozen.

    BatchNorm statistics keep their usual running averages: freezing them as well turns training into
    training the folded network, which diverges at fine-tuning learning rates (measured on digits).
    """
    quantizers = activation_quantizers(model)
    for q in quantizers:
        q.frozen = True
    return len(quantizers)


def fold_for_export(model: nn.Module) -> nn.Module:
    """Replace every QuantConvBn2d in place by its folded QuantConv2d (running statistics)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, QuantConvBn2d):
            replace_module(model, name, m.folded())
    return model


def quantized_layer_names(model: nn.Module) -> list[str]:
    """Paths of the fake-quantized Conv2d/Linear layers."""
    return [name for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]
