"""Histogram calibration: each method's range against hand-checkable distributions."""

import pytest
import torch

from edgekd.quant.calibration import Histogram


def _hist(x: torch.Tensor) -> Histogram:
    h = Histogram(float(x.abs().max()))
    h.observe(x)
    return h


def test_percentile_clips_a_rare_outlier_max_keeps_it():
    x = torch.cat([torch.linspace(-1, 1, 100_000), torch.tensor([50.0])])
    h = _hist(x)
    assert h.amax == 50.0
    assert h.amax_for("percentile", 99.9) == pytest.approx(1.0, abs=50 / 2048 + 1e-6)


def test_mse_and_entropy_clip_a_long_tail_but_keep_a_uniform_range():
    g = torch.Generator().manual_seed(0)
    tail = torch.cat([torch.randn(200_000, generator=g), torch.tensor([40.0])])
    uniform = torch.rand(200_000, generator=g) * 4
    # MSE balances the one outlier's clipping error (40 - a)^2 against 200k * (a/127)^2 / 12: a = 19.7
    assert _hist(tail).amax_for("mse") == pytest.approx(19.7, abs=0.5)
    assert _hist(tail).amax_for("entropy") < 10  # KL ignores one sample's worth of mass
    for method in ("mse", "entropy"):
        assert _hist(uniform).amax_for(method) > 3.5, method  # nothing to gain by clipping a uniform range
