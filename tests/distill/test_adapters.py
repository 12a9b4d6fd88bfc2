import pytest
import torch
from torch import nn

from edgekd.config import FeaturePair
from edgekd.distill.adapters import build_adapters
from edgekd.distill.feature_losses import get_feature_loss
from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.models.taps import FeatureTaps


def _probe(student_shapes, teacher_shapes):
    return (
        {k: torch.zeros(2, *v) for k, v in student_shapes.items()},
        {k: torch.zeros(2, *v) for k, v in teacher_shapes.items()},
    )


def test_adapters_map_student_features_to_teacher_shapes():
    pairs = [
        FeaturePair(teacher="t1", student="s1", loss="hint"),
        FeaturePair(teacher="t2", student="s2", loss="hint"),
        FeaturePair(teacher="t1", student="s1", loss="attention"),
        FeaturePair(teacher="t3", student="s3", loss="mmd"),
        FeaturePair(teacher="t1", student="s4", loss="hint"),
    ]
    s, t = _probe(
        {"s1": (8, 16, 16), "s2": (10,), "s3": (12,), "s4": (64, 8, 8)}, {"t1": (64, 8, 8), "t2": (20,), "t3": (24,)}
    )
    adapters = build_adapters(pairs, s, t)
    assert isinstance(adapters, nn.ModuleList) and len(adapters) == 5
    assert adapters[0](torch.randn(3, 8, 16, 16)).shape == (3, 64, 8, 8)
    assert isinstance(adapters[0].proj[0], nn.Conv2d) and isinstance(adapters[0].proj[1], nn.BatchNorm2d)
    assert isinstance(adapters[1].proj, nn.Linear) and adapters[1](torch.randn(3, 10)).shape == (3, 20)
    assert sum(p.numel() for p in adapters[2].parameters()) == 0  # attention: pooling only
    assert adapters[2](torch.randn(3, 8, 16, 16)).shape == (3, 8, 8, 8)
    assert adapters[3](torch.randn(3, 12)).shape == (3, 24)
    assert sum(p.numel() for p in adapters[4].parameters()) == 0  # same channels: pooling only
    x = torch.randn(1, 64, 8, 8)
    torch.testing.assert_close(adapters[4](x), x)


def test_incompatible_pairs_are_user_errors():
    s, t = _probe({"s": (8, 4, 4), "v": (8,)}, {"t": (16,)})
    with pytest.raises(EdgekdError, match="one is a map and the other a vector"):
        build_adapters([FeaturePair(teacher="t", student="s")], s, t)
    with pytest.raises(EdgekdError, match="attention transfer needs"):
        build_adapters([FeaturePair(teacher="t", student="v", loss="attention")], s, t)
    with pytest.raises(EdgekdError, match="student layer 'missing' did not run"):
        build_adapters([FeaturePair(teacher="t", student="missing")], s, t)


def test_hint_through_an_adapter_trains_the_student_towards_the_teacher():
    torch.manual_seed(0)
    teacher = build_model("resnet8", num_classes=10, in_channels=1).eval()
    student = build_model("resnet8", num_classes=10, in_channels=1)
    pairs = [FeaturePair(teacher="layer3", student="layer2", loss="hint")]
    x = torch.randn(8, 1, 16, 16)
    with FeatureTaps(teacher, ["layer3"]) as tt, torch.no_grad():
        teacher(x)
    with FeatureTaps(student, ["layer2"]) as st:
        student(x)
        adapters = build_adapters(pairs, st.pop(), tt.features)
        opt = torch.optim.Adam([*student.parameters(), *adapters.parameters()], lr=1e-2)
        losses = []
        for _ in range(20):
            opt.zero_grad()
            student(x)
            loss = get_feature_loss("hint")(adapters[0](st.pop()["layer2"]), tt.features["layer3"])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
