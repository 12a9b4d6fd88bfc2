"""Quantization-aware training and post-training static int8 with the fake-quant layers of `fake_quant`.

qat = prepare_qat(student, calib_batches, cfg)   # copy, fold BN, wrap Conv/Linear, calibrate (and fix) ranges
... train `qat` like any nn.Module with any loss (e.g. the KD loop) ...
freeze_observers(qat)                            # moving-average ranges: before the last epoch(s)
export_qdq_onnx(qat, "student_int8_qdq.onnx", example)

ptq = calibrate_ptq(student, calib_batches)       # same format, calibration only
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from edgekd.config import QatConfig
from edgekd.errors import EdgekdError
from edgekd.quant.calibration import Histogram
from edgekd.quant.fake_quant import QUANT_LAYERS, ActivationQuantizer, QuantConv2d, QuantConvBn2d, QuantLinear
from edgekd.quant.fold import conv_bn_pairs, replace_module
from edgekd.quant.placement import place_quantizers, trace

Batch = torch.Tensor | tuple | list


def check_keep_float(model: nn.Module, keep_float: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """The Conv2d and Linear layers int8 can take, by path; a name in `keep_float` that is not one of them is a
    one-line error naming it and the valid names (checked before a run as well as by the qat stage)."""
    targets = [(name, m) for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear) and name]
    unknown = sorted(set(keep_float) - {name for name, _ in targets})
    if unknown:
        valid = ", ".join(name for name, _ in targets[:8]) + (", ..." if len(targets) > 8 else "")
        raise EdgekdError(
            f"qat.keep_float: {unknown[0]!r} is not a Conv2d or Linear of {type(model).__name__}; valid: {valid}"
        )
    return targets


def quantize_layers(model: nn.Module, momentum: float = 0.01, keep_float: Iterable[str] = ()) -> list[str]:
    """Replace every Conv2d (with the BatchNorm that follows it, if any) and Linear in place by its
    fake-quantized twin, except the layers named in `keep_float`; the absorbed BatchNorms become
    Identity. Returns the quantized layer paths."""
    keep = set(keep_float)
    targets = check_keep_float(model, keep)
    pairs = dict(conv_bn_pairs(model))
    done = []
    for name, m in targets:
        if name in keep:
            continue
        if name in pairs:
            bn_path = pairs[name]
            q = QuantConvBn2d.from_conv_bn(m, model.get_submodule(bn_path), momentum)
            replace_module(model, bn_path, nn.Identity())
        elif isinstance(m, nn.Conv2d):
            q = QuantConv2d.from_float(m, momentum)
        else:
            q = QuantLinear.from_float(m, momentum)
        replace_module(model, name, q)
        done.append(name)
    return done


def activation_quantizers(model: nn.Module) -> list[ActivationQuantizer]:
    return [m for m in model.modules() if isinstance(m, ActivationQuantizer)]


def _images(batch: Batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Iterable[Batch],
    limit: int | None = None,
    method: str = "max",
    percentile: float = 99.99,
) -> int:
    """Set every activation range from the batches (fp32 forward): their max |x| (`method="max"`), or
    by `percentile`, `entropy` or `mse` from a histogram of |x| (see `calibration`); returns batches used."""
    quantizers = activation_quantizers(model)
    device = next(model.parameters()).device
    images = [_images(b) for b in itertools.islice(batches, limit)]
    if not images:
        raise EdgekdError("quantization calibration got no batches: the calibration data loader is empty")
    was_training = model.training
    model.eval()
    for q in quantizers:
        q.amax.zero_()
        q.calibrating = True
    try:
        for x in images:
            model(x.to(device))
        if method != "max":
            for q in quantizers:
                q.histogram = Histogram(float(q.amax))
            for x in images:
                model(x.to(device))
            for q in quantizers:
                q.amax.fill_(q.histogram.amax_for(method, percentile))
    finally:
        for q in quantizers:
            q.calibrating = False
            q.histogram = None
            q.calibrated_amax = float(q.amax)
        model.train(was_training)
    if not any(float(q.amax) > 0 for q in quantizers):
        raise EdgekdError("quantization calibration saw only zeros at every quantized layer input: check the data")
    return len(images)


def quantizable_copy(model: nn.Module, momentum: float = 0.01, keep_float: Iterable[str] = ()) -> nn.Module:
    """A GraphModule copy of `model` with fake-quantized Conv2d(+BatchNorm)/Linear layers (except
    `keep_float`) and quantizers on skip-Add residuals and concat inputs (`placement`), not yet calibrated.

    Also the skeleton to load a saved QAT state_dict into:
    `quantizable_copy(spec.build(), keep_float=kept).load_state_dict(sd)`.
    """
    qmodel = trace(copy.deepcopy(model).eval())
    place_quantizers(qmodel, momentum)
    if not quantize_layers(qmodel, momentum, keep_float) and not keep_float:
        raise EdgekdError(f"{type(model).__name__} has no Conv2d or Linear layer to quantize")
    return qmodel


def prepare_qat(
    model: nn.Module, calib_batches: Iterable[Batch], cfg: QatConfig | None = None, keep_float: Iterable[str] = ()
) -> nn.Module:
    """A copy of `model` ready for quantization-aware training, in train mode.

    Every Conv2d/Linear gets fake-quantized input (per tensor) and weight (per channel); a BatchNorm
    after a convolution is folded into its quantized weight while still normalising with batch
    statistics during training (see QuantConvBn2d); activation ranges are set from `cfg.calibration_batches`
    batches of `calib_batches` (images, or (images, labels)) by `cfg.calibration`, then stay fixed
    (`cfg.activation_ranges == "fixed"`, the default) or follow an EMA of the training batches' max |x|
    (`"moving_average"`). Layers in `keep_float` stay float.
    The result is a plain nn.Module: train it with any loss and optimizer.
    """
    cfg = cfg or QatConfig()
    qmodel = quantizable_copy(model, cfg.ema_momentum, keep_float)
    calibrate(qmodel, calib_batches, cfg.calibration_batches, cfg.calibration, cfg.percentile)
    if cfg.activation_ranges == "fixed":
        # A running max of *training-mode* batches (BatchNorm on batch statistics) can run away from the
        # eval-mode activations it quantizes: 15.6 -> 6.35e6 on an EfficientNet-B0 (docs/quantization.md).
        freeze_observers(qmodel)
    return qmodel.train()


def calibrate_ptq(
    model: nn.Module,
    batches: Iterable[Batch],
    limit: int | None = None,
    method: str = "max",
    percentile: float = 99.99,
    keep_float: Iterable[str] = (),
) -> nn.Module:
    """Post-training static int8: a calibrated, frozen copy of `model` in eval mode (same Q/DQ format as QAT)."""
    qmodel = quantizable_copy(model, 0.0, keep_float)
    calibrate(qmodel, batches, limit, method, percentile)
    freeze_observers(qmodel)
    return qmodel.eval()


def freeze_observers(model: nn.Module) -> int:
    """Stop updating activation ranges (after calibration, or for the last QAT epochs of moving-average
    ranges); returns how many were frozen.

    BatchNorm statistics keep their usual running averages: freezing them as well turns training into
    training the folded network, which diverges at fine-tuning learning rates (measured on digits).
    """
    quantizers = activation_quantizers(model)
    for q in quantizers:
        q.frozen = True
    return len(quantizers)


def fold_for_export(model: nn.Module) -> nn.Module:
    """Replace every QuantConvBn2d in place by its folded QuantConv2d (running statistics), and fold the
    BatchNorm of each float (kept) Conv2d too, so the exported weight keeps the layer's name."""
    for conv_path, bn_path in conv_bn_pairs(model):
        fused = fuse_conv_bn_eval(model.get_submodule(conv_path).eval(), model.get_submodule(bn_path).eval())
        replace_module(model, conv_path, fused)
        replace_module(model, bn_path, nn.Identity())
    for name, m in list(model.named_modules()):
        if isinstance(m, QuantConvBn2d):
            replace_module(model, name, m.folded())
    return model


def float_layer_names(model: nn.Module) -> list[str]:
    """Paths of the Conv2d/Linear layers left float (`keep_float`) in a quantized model."""
    return [name for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]


def quantized_layer_names(model: nn.Module) -> list[str]:
    """Paths of the fake-quantized Conv2d/Linear layers."""
    return [name for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]
