import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.models.taps import FeatureTaps, check_layer_names, layer_names


def _tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2), nn.ReLU()),
        nn.Flatten(),
        nn.LazyLinear(3),
    )


def test_taps_capture_the_outputs_of_the_named_modules():
    model = _tiny()
    x = torch.randn(2, 1, 8, 8)
    model(x)  # materialise the lazy layer
    with FeatureTaps(model, ["0", "2.0", "4"]) as taps:
        out = model(x)
        feats = taps.pop()
    assert list(feats) == ["0", "2.0", "4"]
    torch.testing.assert_close(feats["0"], model[0](x))
    torch.testing.assert_close(feats["2.0"], model[2][0](model[1](model[0](x))))
    torch.testing.assert_close(feats["4"], out)
    assert taps.features == {}


def test_hooks_are_removed_on_exit_even_after_an_error():
    model = _tiny()
    with pytest.raises(RuntimeError), FeatureTaps(model, ["0", "2.0"]):
        model(torch.randn(2, 2, 8, 8))  # wrong channel count
    assert all(not m._forward_hooks for m in model.modules())


def test_dotted_names_in_a_registry_model():
    model = build_model("resnet8", num_classes=10, in_channels=1).eval()
    names = layer_names(model)
    assert "layer2" in names and "layer2.0.conv1" in names and "" not in names
    with FeatureTaps(model, ["layer1", "layer2.0.conv1", "layer3"]) as taps:
        model(torch.randn(3, 1, 16, 16))
    assert taps.features["layer1"].shape == (3, 16, 16, 16)
    assert taps.features["layer2.0.conv1"].shape == (3, 32, 8, 8)
    assert taps.features["layer3"].shape == (3, 64, 4, 4)


def test_an_unknown_layer_names_the_nearest_valid_ones():
    model = build_model("resnet8", num_classes=10, in_channels=1)
    with pytest.raises(
        EdgekdError, match=r"student \(CifarResNet\) has no layer 'layer_3'; did you mean 'layer3'"
    ) as err:
        FeatureTaps(model, ["layer1", "layer_3"], what="student")
    assert "\n" not in str(err.value) and "top-level layers: conv1, bn1, relu, layer1" in str(err.value)
    with pytest.raises(EdgekdError, match="no layer 'zzz'; top-level layers"):
        check_layer_names(model, ["zzz"])


def test_run_returns_the_output_and_this_pass_features():
    model = _tiny()
    x = torch.randn(2, 1, 8, 8)
    model(x)
    taps = FeatureTaps(model, ["1"])
    out, feats = taps.run(x)
    torch.testing.assert_close(out, model(x))
    torch.testing.assert_close(feats["1"], torch.relu(model[0](x)))
    assert taps.features == {} and not model[1]._forward_hooks
