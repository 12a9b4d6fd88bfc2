"""Pretrained weights: found offline, adapted to the data's classes and channels, never downloaded unasked."""

import pytest
import torch
import torchvision.models as tvm

from edgekd.errors import EdgekdError
from edgekd.models import ModelSpec
from edgekd.models.inputs import InputSpec, attach_input_adapter
from edgekd.models.weights import (
    ALLOW_DOWNLOAD_ENV,
    check_class_names,
    describe_weights,
    pretrained_model,
    require_available,
)


@pytest.fixture(autouse=True)
def _empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(ALLOW_DOWNLOAD_ENV, raising=False)


def test_local_file_gets_a_new_head_and_a_summed_first_conv(tmp_path):
    src = tvm.resnet18(weights=None)  # 1000 classes, 3 channels: what a user's ImageNet checkpoint looks like
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    model, choices = pretrained_model("resnet18", str(tmp_path / "r18.pth"), 5, 1)
    assert model.fc.out_features == 5 and model.conv1.in_channels == 1
    assert torch.equal(model.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(model.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    assert (
        choices["head"].startswith("fc: new, 1000 -> 5") and "summed over its 3 input channels" in choices["first_conv"]
    )
    gray = torch.rand(2, 1, 32, 32)
    src.eval(), model.eval()
    with torch.no_grad():  # a gray image seen as RGB gives the same features through the summed kernel
        assert torch.allclose(model.conv1(gray), src.conv1(gray.expand(-1, 3, -1, -1)), atol=1e-5)


def test_local_file_of_the_right_classes_keeps_its_head(tmp_path):
    src = tvm.mobilenet_v2(weights=None, num_classes=4)
    torch.save({"state_dict": src.state_dict(), "class_names": ["a", "b", "c", "d"]}, tmp_path / "m.pt")
    model, choices = pretrained_model("mobilenet_v2", tmp_path / "m.pt", 4, 3, class_names=["a", "b", "c", "d"])
    assert choices["head"] == "classifier.1: kept (4 classes)"
    assert torch.equal(model.classifier[1].weight, src.classifier[1].weight)
    with pytest.raises(EdgekdError, match=r"another order .*index 0: 'a' in the checkpoint, 'b' in the data"):
        pretrained_model("mobilenet_v2", tmp_path / "m.pt", 4, 3, class_names=["b", "a", "c", "d"])


def test_class_name_mismatch_is_named():
    with pytest.raises(EdgekdError, match=r"in the checkpoint only: \['cow'\]; in the data only: \['dog'\]"):
        check_class_names(["cat", "cow"], ["cat", "dog"], "teacher.checkpoint")


def test_missing_torchvision_weights_name_url_cache_path_and_command(tmp_path):
    w = describe_weights("resnet18", "IMAGENET1K_V1", "teacher.weights")
    assert w.path == tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(EdgekdError) as e:
        pretrained_model("resnet18", "IMAGENET1K_V1", 5, 3, field="teacher.weights")
    msg = str(e.value)
    assert msg.startswith("teacher.weights: ResNet18_Weights.IMAGENET1K_V1 is not in the local cache")
    assert w.url in msg and str(w.path) in msg and "curl -L" in msg and "--allow-download" in msg
    assert not w.path.exists()


def test_cached_torchvision_weights_load_offline_with_their_preprocessing(tmp_path):
    w = describe_weights("mobilenet_v2", "IMAGENET1K_V2", "student.weights")
    w.path.parent.mkdir(parents=True)
    src = tvm.mobilenet_v2(weights=None)
    torch.save(src.state_dict(), w.path)  # stands in for the real file: same names and shapes
    require_available(w, download=False, field="student.weights")
    model, choices = pretrained_model("mobilenet_v2", "IMAGENET1K_V2", 3, 3)
    assert choices["weights"] == "MobileNet_V2_Weights.IMAGENET1K_V2"
    assert torch.equal(model.features[0][0].weight, src.features[0][0].weight)
    assert w.inputs == InputSpec(224, 232, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_unknown_weights_names_suggest_the_nearest():
    with pytest.raises(EdgekdError, match=r"'IMAGENET1K_V3' is not a weights name of resnet50; did you mean"):
        describe_weights("resnet50", "IMAGENET1K_V3", "teacher.weights")
    with pytest.raises(EdgekdError, match="resnet8' has no torchvision pretrained weights"):
        describe_weights("resnet8", "DEFAULT", "teacher.weights")


def test_timm_models_through_the_extra():
    pytest.importorskip("timm")
    from edgekd.models import build_model

    assert build_model("timm/resnet18", 3, 1)(torch.randn(1, 1, 32, 32)).shape == (1, 3)
    with pytest.raises(EdgekdError, match="did you mean 'timm/resnet18'"):
        build_model("timm/resnet_18", 3, 1)


def test_input_adapter_feeds_the_model_what_it_expects():
    given = InputSpec(16, 18, (0.5,), (0.25,))
    wanted = InputSpec(24, 27, (0.0,), (1.0,))
    torch.manual_seed(0)
    spec = ModelSpec("resnet8", 3, 1, 16, {"given": given.to_dict(), "wanted": wanted.to_dict()})
    model = spec.build().eval()
    plain = ModelSpec("resnet8", 3, 1, 16).build().eval()
    plain.load_state_dict(model.state_dict())
    raw = torch.rand(2, 1, 16, 16)
    resized = torch.nn.functional.interpolate(raw, size=(24, 24), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(model((raw - 0.5) / 0.25), plain(resized), atol=1e-5)
    attach_input_adapter(plain, wanted, wanted)  # same spec both ways: a no-op
    with torch.no_grad():
        assert torch.allclose(plain(resized), model((raw - 0.5) / 0.25), atol=1e-5)
