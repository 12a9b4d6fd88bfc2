"""BatchNorm folding: the QAT form (Conv+BN with the fold inside) equals the exported folded convolution."""

import copy

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.quant import calibrate_ptq, quantizable_copy
from edgekd.quant.fake_quant import QuantConvBn2d
from edgekd.quant.fold import conv_bn_pairs
from edgekd.quant.qat import fold_for_export


def _with_bn_statistics(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def test_every_batchnorm_of_a_resnet_is_absorbed_and_folding_keeps_outputs():
    model = _with_bn_statistics(build_model("resnet8", 10, 1))
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert len(conv_bn_pairs(model)) == n_bn
    x = torch.randn(8, 1, 16, 16)
    ptq = calibrate_ptq(model, [x])
    assert sum(isinstance(m, QuantConvBn2d) for m in ptq.modules()) == n_bn
    folded = fold_for_export(copy.deepcopy(ptq))
    assert not any(isinstance(m, (QuantConvBn2d, torch.nn.BatchNorm2d)) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), ptq(x), atol=1e-4, rtol=1e-4)
        fp32 = model(x)
    assert (ptq(x) - fp32).abs().max() < 0.1 * fp32.abs().max(), "int8 fake quantization stays close to fp32"


def test_batchnorm_after_a_non_conv_is_left_alone():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.BatchNorm2d(4))
    assert conv_bn_pairs(model) == []


def test_untraceable_model_is_a_named_error():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else -self.conv(x)

    with pytest.raises(EdgekdError, match="Branchy: torch.fx cannot trace"):
        quantizable_copy(Branchy())
