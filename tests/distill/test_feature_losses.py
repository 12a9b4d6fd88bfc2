import math

import pytest
import torch

from edgekd.distill.feature_losses import (
    FEATURE_LOSSES,
    attention_loss,
    attention_map,
    get_feature_loss,
    hint_loss,
    mmd_loss,
)
from edgekd.errors import EdgekdError


def test_hint_is_the_mean_squared_difference():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert hint_loss(s, t).item() == pytest.approx((0 + 4 + 9 + 16) / 4)
    with pytest.raises(ValueError, match="build_adapters"):
        hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_attention_map_by_hand():
    feat = torch.tensor([[[[3.0, 0.0]], [[1.0, 2.0]]]])  # (1, 2, 1, 2)
    q = [(9 + 1) / 2, (0 + 4) / 2]  # channel mean of squares per position: 5, 2
    norm = math.sqrt(q[0] ** 2 + q[1] ** 2)
    torch.testing.assert_close(attention_map(feat), torch.tensor([[q[0] / norm, q[1] / norm]]))


def test_attention_loss_by_hand_across_channel_counts():
    s = torch.tensor([[[[3.0, 4.0]]]])  # (1, 1, 1, 2): Q = (9, 16) / sqrt(337)
    t = torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]], [[1.0, 0.0]]]])  # (1, 3, 1, 2): Q = (1, 0)
    n = math.sqrt(9**2 + 16**2)
    expected = ((9 / n - 1) ** 2 + (16 / n - 0) ** 2) / 2
    assert attention_loss(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_attention_ignores_scale_and_channel_count():
    s = torch.randn(4, 2, 5, 5)
    t = 7.0 * torch.cat([s, s, s], dim=1)  # same spatial energy profile, 3x the channels, other scale
    assert attention_loss(s, t).item() == pytest.approx(0.0, abs=1e-12)
    assert attention_loss(s, torch.randn(4, 8, 5, 5)).item() > 1e-4


def test_mmd_on_vectors_by_hand():
    s = torch.tensor([[2.0, 0.0]])  # normalised: (1, 0)
    t = torch.tensor([[0.0, 5.0]])  # normalised: (0, 1); |s - t|² = 2
    assert mmd_loss(s, t).item() == pytest.approx(1 + 1 - 2 * math.exp(-2 / 2))


def test_mmd_on_maps_compares_channel_maps_per_image():
    s = torch.tensor([[[[1.0, 0.0]]]])  # one channel map: (1, 0)
    t = torch.tensor([[[[0.0, 3.0]], [[2.0, 0.0]]]])  # two channel maps: (0, 1) and (1, 0)
    e = math.exp(-1.0)
    k_ss, k_tt, k_st = 1.0, (1 + e + e + 1) / 4, (e + 1) / 2
    assert mmd_loss(s, t).item() == pytest.approx(k_ss + k_tt - 2 * k_st)
    batch_s, batch_t = torch.cat([s, s]), torch.cat([t, torch.cat([s, s], 1)])  # second image: identical maps
    assert mmd_loss(batch_s, batch_t).item() == pytest.approx((k_ss + k_tt - 2 * k_st + 0.0) / 2)


def test_mmd_gradients_are_finite_at_zero_distance():
    s = torch.randn(3, 4, 2, 2, requires_grad=True)
    loss = mmd_loss(s, s.detach().clone())
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(s.grad).all()


def test_registry_by_name():
    assert set(FEATURE_LOSSES) >= {"hint", "attention", "mmd"}
    assert get_feature_loss("attention") is attention_loss
    with pytest.raises(
        EdgekdError, match="unknown feature loss 'hnt'; did you mean 'hint'\\? valid losses: attention, hint, mmd"
    ):
        get_feature_loss("hnt")


@pytest.mark.parametrize("name", ["hint", "attention", "mmd"])
def test_each_loss_trains_a_student_feature_towards_the_teacher(name):
    torch.manual_seed(0)
    teacher = torch.randn(8, 4, 6, 6).abs()
    student = torch.nn.Parameter(torch.randn(8, 4, 6, 6))
    loss_fn = get_feature_loss(name)
    opt = torch.optim.Adam([student], lr=0.05)
    first = loss_fn(student, teacher).item()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(student, teacher)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
