"""Fake-quantized Conv2d and Linear in the layout TensorRT wants for explicit (Q/DQ) int8.

Symmetric int8, zero point 0: activations per tensor, weights per output channel (axis 0).
`torch.fake_quantize_per_{tensor,channel}_affine` export to ONNX QuantizeLinear/DequantizeLinear
pairs, so the exported graph has Q/DQ on the input and the weight of every Conv and Gemm, as
NVIDIA's pytorch-quantization / Model Optimizer place them.

The bias is what an int8 kernel adds: rounded to int32 steps of input scale x weight scale (ONNX
Runtime's QLinearConv and its `WeightBiasQuantization` rewrite, TFLite). It is exported as that float
value (TensorRT 8.5 takes no int32 Q/DQ and adds the bias in float), so torch, ONNX Runtime at every
optimization level and TensorRT add the same number. Left float, a bias that ONNX Runtime rounds and
torch does not moved 6% of an EfficientNet-B0's top-1 (docs/quantization.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QMIN, QMAX = -128, 127
BOUND = 127.0  # scale = amax / 127: symmetric, so -amax and +amax both map inside [-127, 127]
EPS = 1e-8
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def bias_on_grid(bias: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """`bias` rounded to int32 multiples of `step` (input scale x per-channel weight scale), with a
    straight-through gradient."""
    grid = torch.clamp(torch.round(bias / step), INT32_MIN, INT32_MAX) * step
    return bias + (grid - bias).detach()


class ActivationQuantizer(nn.Module):
    """Per-tensor fake quantization of an activation with a range `amax`.

    Three phases: `calibrating` (observe the max |x| over batches, or fill `histogram` when one is
    set, pass x through unquantized), training (fake-quantize; unless frozen, `amax` follows an
    exponential moving average of the batch max), `frozen` (fake-quantize with a fixed `amax`: QAT's
    default from calibration on). In eval mode `amax` never
    changes. `enabled = False` passes x through (a layer measured or kept in float).
    """

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.calibrating = False
        self.frozen = False
        self.enabled = True
        self.histogram = None  # a calibration.Histogram while a histogram method calibrates
        self.calibrated_amax = 0.0  # the range calibration set (the collapse watch compares against it)
        self.register_buffer("amax", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()), persistent=False)
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.calibrating:
            if self.histogram is not None:
                self.histogram.observe(x)
            else:
                self.amax.copy_(torch.maximum(self.amax, x.detach().abs().amax()))
            return x
        if not torch.onnx.is_in_onnx_export():  # exporting: the stored scale becomes a constant initializer
            if self.training and not self.frozen:
                self.amax.lerp_(x.detach().abs().amax(), self.momentum)
            self.scale.copy_((self.amax / BOUND).clamp(min=EPS))
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, QMIN, QMAX)

    def extra_repr(self) -> str:
        return f"amax={float(self.amax):.4g}, frozen={self.frozen}"


class WeightQuantizer(nn.Module):
    """Per-output-channel (axis 0) fake quantization of a weight; `amax` is the weight's own max |w| per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.enabled = True
        self.register_buffer("amax", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(channels), persistent=False)
        self.register_buffer("zero_point", torch.zeros(channels, dtype=torch.int32), persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        if not torch.onnx.is_in_onnx_export():  # exporting: the stored scales become a constant initializer
            self.amax.copy_(w.detach().abs().amax(dim=tuple(range(1, w.dim()))))
            self.scale.copy_((self.amax / BOUND).clamp(min=EPS))
        return torch.fake_quantize_per_channel_affine(w, self.scale, self.zero_point, 0, QMIN, QMAX)


class QuantConv2d(nn.Conv2d):
    """nn.Conv2d with fake-quantized input and weight (same parameters, so state_dict keys stay)."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, momentum: float = 0.01) -> QuantConv2d:
        q = cls.__new__(cls)
        q.__dict__.update(conv.__dict__)  # share parameters, buffers and hyper-parameters
        q._modules = dict(conv._modules)
        q.input_quantizer = ActivationQuantizer(momentum)
        q.weight_quantizer = WeightQuantizer(conv.out_channels)
        return q.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self.input_quantizer(x), self.weight_quantizer(self.weight)
        return self._conv_forward(x, w, _int8_bias(self, self.bias))


class QuantConvBn2d(QuantConv2d):
    """Conv2d followed by its BatchNorm2d, trained with the BN folded into the quantized weight.

    Krishnamoorthi (2018), as torch.ao's ConvBn2d: the weight is scaled by gamma/sqrt(running_var+eps)
    before fake quantization, the convolution output is scaled back and passed through the real
    BatchNorm (batch statistics while training, so training stays as stable as in fp32). In eval mode
    it computes exactly the folded convolution that `folded()` exports.
    """

    @classmethod
    def from_conv_bn(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d, momentum: float = 0.01) -> QuantConvBn2d:
        q = cls.from_float(conv, momentum)
        q.bn = bn
        return q

    def _fold_factor(self) -> torch.Tensor:
        return self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)  # (C,)

    def _folded_bias(self, factor: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is not None else torch.zeros_like(self.bn.running_mean)
        return (bias - self.bn.running_mean) * factor + self.bn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self._fold_factor()
        w = self.weight_quantizer(self.weight * factor.reshape(-1, 1, 1, 1))
        x = self.input_quantizer(x)
        if not self.bn.training:  # the folded convolution, as exported: same operations, same rounding
            return self._conv_forward(x, w, _int8_bias(self, self._folded_bias(factor)))
        y = self._conv_forward(x, w, None) / factor.reshape(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return self.bn(y)

    @torch.no_grad()
    def folded(self) -> QuantConv2d:
        """The equivalent QuantConv2d with the BatchNorm folded in (running statistics), for export."""
        factor = self._fold_factor()
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            True,
            self.padding_mode,
        ).to(self.weight.device)
        conv.weight.copy_(self.weight * factor.reshape(-1, 1, 1, 1))
        conv.bias.copy_(self._folded_bias(factor))
        q = QuantConv2d.from_float(conv)
        q.input_quantizer = self.input_quantizer
        return q


class QuantLinear(nn.Linear):
    """nn.Linear with fake-quantized input and weight; exports as Gemm with a [out, in] weight, axis 0."""

    @classmethod
    def from_float(cls, linear: nn.Linear, momentum: float = 0.01) -> QuantLinear:
        q = cls.__new__(cls)
        q.__dict__.update(linear.__dict__)
        q._modules = dict(linear._modules)
        q.input_quantizer = ActivationQuantizer(momentum)
        q.weight_quantizer = WeightQuantizer(linear.out_features)
        return q.to(linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self.input_quantizer(x), self.weight_quantizer(self.weight)
        return F.linear(x, w, _int8_bias(self, self.bias))


def _int8_bias(layer: QuantConv2d | QuantLinear, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The bias the int8 kernel adds (`bias_on_grid`), once the layer's input and weight quantizers have
    run; unchanged while calibrating, for a layer measured in float, and while exporting (`snap_biases`
    has put it on the grid already)."""
    xq, wq = layer.input_quantizer, layer.weight_quantizer
    if bias is None or xq.calibrating or not (xq.enabled and wq.enabled) or torch.onnx.is_in_onnx_export():
        return bias
    return bias_on_grid(bias, xq.scale * wq.scale)


@torch.no_grad()
def snap_biases(model: nn.Module) -> None:
    """Put every quantized layer's bias on its int32 grid in place, after a forward has set the weight
    scales, so the exported file carries the bias that torch adds (a float: no int32 DQ for TensorRT 8.5)."""
    for m in model.modules():
        if type(m) in (QuantConv2d, QuantLinear) and m.bias is not None:  # folded: no QuantConvBn2d left
            m.bias.copy_(_int8_bias(m, m.bias))


QUANT_LAYERS = (QuantConv2d, QuantLinear)  # QuantConvBn2d is a QuantConv2d
