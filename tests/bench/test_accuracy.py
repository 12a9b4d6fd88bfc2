import math

import numpy as np
import pytest
from torch import nn

from edgekd.bench.macs import count_macs
from edgekd.models import count_params
from edgekd.ondevice.measure import accuracy_metrics, predict
from edgekd.runtimes import runtime_for


def test_accuracy_metrics_on_hand_made_logits() -> None:
    logits = np.array([[3.0, 1, 0, 0, 0, 0], [0, 2, 1, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    labels = np.array([0, 2, 0])  # top-1 right, top-5 right, top-5 wrong (class 0 ranks last)
    teacher = np.array([[3.0, 1, 0, 0, 0, 0], [0, 0, 5, 0, 0, 0], [0, 0, 0, 0, 0, 9]])
    m = accuracy_metrics(logits, labels, teacher)
    assert m["n"] == 3
    assert m["top1"] == pytest.approx(100 / 3) and m["top5"] == pytest.approx(200 / 3)
    assert m["agreement"] == pytest.approx(200 / 3)  # rows 0 and 2 pick the teacher's class

    def kl(t: np.ndarray, s: np.ndarray) -> float:
        pt, ps = np.exp(t) / np.exp(t).sum(), np.exp(s) / np.exp(s).sum()
        return float(sum(p * math.log(p / q) for p, q in zip(pt, ps)))

    expected = np.mean([kl(teacher[i], logits[i]) for i in range(3)])
    assert kl(teacher[0], logits[0]) == 0.0
    assert m["kl"] == pytest.approx(expected, rel=1e-9)


def test_count_macs_and_params_of_a_known_net() -> None:
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),  # 8x8 out: 4*64 outputs x 2*9 = 4608
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, bias=False),  # 4x4 out: 4*16 x 2*9 = 1152
        nn.Flatten(),
        nn.Linear(64, 10),  # 640
    )
    assert count_macs(net, (2, 8, 8)) == 4608 + 1152 + 640
    assert count_params(net) == (2 * 4 * 9 + 4) + (4 * 2 * 9) + (64 * 10 + 10)
    assert not net[0]._forward_hooks  # hooks removed


def test_predict_pads_to_a_fixed_batch(make_onnx, images: np.ndarray) -> None:
    with runtime_for(make_onnx("b2.onnx", batch=2), threads=1) as fixed, runtime_for(make_onnx("dyn.onnx")) as dynamic:
        out = predict(fixed, images, chunk=4)
        assert out.shape == (5, 10)
        np.testing.assert_allclose(out, dynamic.run(images), rtol=1e-5, atol=1e-6)
