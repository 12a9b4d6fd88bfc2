import os
import pickle

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.models import ModelSpec, build_model, count_params, load_model, load_state_dict_file, save_model


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "mobilenet_v2", "shufflenet_v2_x0_5", "mobilenet_v3_small"])
@pytest.mark.parametrize("channels", [1, 3])
def test_models_adapt_to_classes_and_channels(name, channels):
    model = build_model(name, num_classes=7, in_channels=channels).eval()
    assert model(torch.randn(2, channels, 32, 32)).shape == (2, 7)


def test_unknown_model_lists_valid_names():
    with pytest.raises(EdgekdError, match="did you mean 'resnet20'.*valid models: .*mobilenet_v2"):
        build_model("resnet_20", 10)


def test_cifar_resnet_depths():
    assert count_params(build_model("resnet56", 10)) > 3 * count_params(build_model("resnet20", 10))


def test_save_and_load_round_trip(tmp_path):
    model = build_model("resnet8", 10, 1).eval()
    spec = ModelSpec("resnet8", 10, 1, 16)
    save_model(tmp_path / "m.pt", model, spec)
    loaded, got = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 1, 16, 16)
    assert got == spec and torch.equal(model(x), loaded(x))


def test_user_state_dict_mismatch_names_first_bad_tensor(tmp_path):
    torch.save(build_model("resnet8", 5, 1).state_dict(), tmp_path / "five.pt")
    with pytest.raises(EdgekdError, match=r"tensor 'fc.weight' has shape \(5, 64\).*needs \(10, 64\)"):
        load_state_dict_file(build_model("resnet8", 10, 1), tmp_path / "five.pt")
    torch.save(build_model("resnet20", 10, 1).state_dict(), tmp_path / "r20.pt")
    with pytest.raises(EdgekdError, match="has no place in model|missing"):
        load_state_dict_file(build_model("resnet8", 10, 1), tmp_path / "r20.pt")


def test_ddp_prefix_and_wrapped_state_dict_load(tmp_path):
    src = build_model("resnet8", 10, 1)
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "ddp.pt")
    dst = build_model("resnet8", 10, 1)
    load_state_dict_file(dst, tmp_path / "ddp.pt")
    assert torch.equal(dst.fc.weight, src.fc.weight)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Evil()}, path)
    with pytest.raises(EdgekdError, match="refused to load"):
        load_state_dict_file(build_model("resnet8", 10, 1), path)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(EdgekdError, match="bad.pt"):
        load_state_dict_file(build_model("resnet8", 10, 1), path)
    with pytest.raises(EdgekdError, match="not found"):
        load_model(tmp_path / "missing.pt")
    assert pickle  # the module under test must never fall back to plain pickle
