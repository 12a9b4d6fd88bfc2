import math

import torch

from edgekd.distill.losses import hard_loss, kd_loss


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(xs, t):
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_hand_computed_value():
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]]
    for temp in (1.0, 2.0, 4.0):
        expected = temp**2 * sum(_kl(_softmax(ti, temp), _softmax(si, temp)) for si, ti in zip(s, t)) / 2
        got = kd_loss(torch.tensor(s), torch.tensor(t), temp)
        assert abs(float(got) - expected) < 1e-6, (temp, float(got), expected)


def test_kd_loss_is_zero_when_student_equals_teacher():
    x = torch.randn(4, 10)
    assert float(kd_loss(x, x.clone(), 3.0)) < 1e-6


def test_kd_gradient_scale_is_roughly_temperature_independent():
    # Hinton et al.: the T^2 factor keeps soft-target gradients comparable across T
    # (for large T the gradient tends to (s - t) / N, independent of T).
    torch.manual_seed(0)
    t = torch.randn(16, 10) * 0.5
    s0 = torch.randn(16, 10) * 0.5
    norms = {}
    for temp in (4.0, 8.0, 16.0):
        s = s0.clone().requires_grad_(True)
        kd_loss(s, t, temp).backward()
        norms[temp] = float(s.grad.norm())
    assert max(norms.values()) / min(norms.values()) < 1.2, norms
    s = s0.clone().requires_grad_(True)
    (kd_loss(s, t, 8.0) / 64).backward()  # without T^2 the gradient shrinks ~T^2-fold
    assert float(s.grad.norm()) < norms[8.0] / 30


def test_hard_loss_accepts_indices_and_mixed_targets():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    idx = hard_loss(logits, torch.tensor([0, 1]))
    onehot = hard_loss(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert abs(float(idx) - float(onehot)) < 1e-6
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.e / (math.e + 1))) / 2
    assert abs(float(idx) - expected) < 1e-6
