"""Dynamic int8: the quantized layers are counted, a model without any is skipped with a reason."""

import numpy as np
import torch
from quant_helpers import train
from torch import nn

from edgekd.export import export_onnx, measure_parity
from edgekd.export.parity import reference_logits
from edgekd.quant.dynamic import quantize_dynamic_onnx, quantize_dynamic_torchscript


class MLPHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.hidden = nn.Linear(8 * 16 * 16, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(torch.flatten(torch.relu(self.conv(x)), 1))))


def test_linear_layers_are_quantized_and_counted(tmp_path, digits_data):
    xt, yt, xv, _ = digits_data
    images = xv[:32]
    # trained (one epoch, 0.1 s): an untrained net's logits are so small that per-batch int8 noise alone can
    # exceed the bound (measured 2-24% of the logit range over seeds, on an AVX2 CPU without VNNI)
    torch.manual_seed(0)
    model = train(MLPHead(), xt, yt, epochs=1, lr=0.05).eval()
    ts = quantize_dynamic_torchscript(model, tmp_path / "m_dynamic_int8.ts.pt", images[:1])
    assert ts.status == "done" and ts.layers == ["hidden", "out"]
    onnx_path = export_onnx(model, tmp_path / "m.onnx", images[:1])
    ort = quantize_dynamic_onnx(onnx_path, tmp_path / "m_dynamic_int8.onnx")
    assert ort.status == "done" and len(ort.layers) == 2
    ref = reference_logits(model, images.numpy())
    for path in (ts.path, ort.path):
        parity = measure_parity(path, images.numpy(), ref)
        assert parity.top1_agreement >= 0.9 and parity.max_abs_diff < 0.1 * np.abs(ref).max()


def test_cifar_resnet_fc_is_the_one_quantized_layer(trained_resnet8, tmp_path):
    result = quantize_dynamic_torchscript(trained_resnet8, tmp_path / "r.ts.pt", torch.zeros(1, 1, 16, 16))
    assert result.layers == ["fc"]


def test_all_conv_model_is_skipped_with_a_reason(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    ts = quantize_dynamic_torchscript(model, tmp_path / "c.ts.pt", torch.zeros(1, 1, 16, 16))
    assert ts.status == "skipped" and "no Linear, LSTM or GRU" in ts.reason
    assert not (tmp_path / "c.ts.pt").exists()
    onnx_path = export_onnx(model, tmp_path / "c.onnx", torch.zeros(1, 1, 16, 16))
    ort = quantize_dynamic_onnx(onnx_path, tmp_path / "c_int8.onnx")
    assert ort.status == "skipped" and "convolutions are left fp32" in ort.reason
    assert not (tmp_path / "c_int8.onnx").exists()
