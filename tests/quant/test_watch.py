"""The collapse watch stops a QAT run that is turning useless, naming the layer, and leaves a healthy one alone."""

import pytest
import torch
import torch.nn.functional as F
from quant_helpers import batches

from edgekd.config import QatConfig
from edgekd.errors import EdgekdError
from edgekd.quant import prepare_qat
from edgekd.quant.watch import CollapseWatch


def _qat(model, xt, yt, ranges: str, lr: float, epochs: int) -> CollapseWatch:
    """QAT of `model` at `lr` with a watch checking every 4 steps; returns the watch (raises when it stops)."""
    torch.manual_seed(0)
    qat = prepare_qat(model, batches(xt, yt, 64, seed=1), QatConfig(calibration_batches=2, activation_ranges=ranges))
    steps = len(batches(xt, yt, 64, seed=0))
    watch = CollapseWatch(qat, xt[:256], yt[:256], 10, every=4, growth=100.0, steps_per_epoch=steps, lr=lr)
    opt = torch.optim.SGD(qat.parameters(), lr=lr, momentum=0.9)
    for epoch in range(epochs):
        for xb, yb in batches(xt, yt, 64, seed=epoch):
            loss = F.cross_entropy(qat(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            watch.step(loss)
    return watch


def test_a_huge_learning_rate_stops_at_chance_with_the_layer_named(trained_resnet8, digits_data):
    xt, yt, _, _ = digits_data
    with pytest.raises(EdgekdError, match=r"qat collapsed by step \d+: top-1 .* the weights of \S+ moved most") as e:
        _qat(trained_resnet8, xt, yt, "fixed", lr=50.0, epochs=3)
    assert "lower qat.lr (now 50)" in str(e.value) and "\n" not in str(e.value)


def test_a_runaway_moving_average_range_stops_with_the_layer_named(trained_resnet8, digits_data):
    xt, yt, _, _ = digits_data
    with pytest.raises(EdgekdError, match=r"activation range of \S+ grew from .* set qat.activation_ranges: fixed"):
        _qat(trained_resnet8, xt, yt, "moving_average", lr=50.0, epochs=3)


def test_a_healthy_qat_run_is_left_alone(trained_resnet8, digits_data):
    xt, yt, _, _ = digits_data
    watch = _qat(trained_resnet8, xt, yt, "fixed", lr=0.005, epochs=1)
    summary = watch.summary()
    assert summary["checks"] == summary["steps"] // 4 > 0
    assert summary["last_top1"] > 90.0 and summary["max_range_growth"] == 1.0
