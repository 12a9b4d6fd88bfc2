"""Torch-Pruning steps on registry models: sizes, round_to, the saved and rebuilt architecture, ONNX parity, and
one-line errors where Torch-Pruning cannot follow the channels. No training: the weights are fresh ones."""

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgekd.config import load_pipeline
from edgekd.config.pipeline import PruneConfig
from edgekd.errors import EdgekdError
from edgekd.export.onnx import export_onnx
from edgekd.export.parity import run_exported
from edgekd.models import ModelSpec, build_model, load_model, save_model
from edgekd.models.structure import shrink_to, structure_of
from edgekd.prune.pruner import StepSettings, check_prunable, choose_share, cut, size_of, taylor_gradients, with_grads

pytest.importorskip("torch_pruning")


def _pruned_roundtrip(tmp_path, name: str, size: int, round_to: int, share: float):
    """Cut `share` of the channels of a fresh registry model, save it as edgekd saves students, reload it
    (weights_only), export the reloaded one to ONNX: (original, pruned, reloaded, onnx path, example)."""
    torch.manual_seed(0)
    spec = ModelSpec(name, 10, 1, size)
    model = spec.build().eval()
    example = torch.randn(2, 1, size, size)
    pruned = cut(copy.deepcopy(model), example, share, StepSettings(round_to=round_to)).eval()
    assert size_of(pruned, (1, size, size)).macs < size_of(model, (1, size, size)).macs
    structure = structure_of(pruned, spec.build())
    assert structure  # some layers changed size
    path = tmp_path / "pruned.pt"
    save_model(path, pruned, ModelSpec(name, 10, 1, size, structure=structure))
    reloaded, _ = load_model(path)  # torch.load(weights_only=True) of plain data: spec + state_dict
    onnx_path = export_onnx(reloaded, tmp_path / "pruned.onnx", example[:1])
    return model, pruned, reloaded, onnx_path, example


def _conv_out_channels(onnx_path) -> list[int]:
    proto = onnx.load(str(onnx_path))
    weights = {i.name: i for i in proto.graph.initializer}
    return [weights[n.input[1]].dims[0] for n in proto.graph.node if n.op_type == "Conv" and n.input[1] in weights]


@pytest.mark.parametrize(
    "name,size,round_to",
    [("mobilenet_v2", 32, 8), ("squeezenet1_1", 32, 8)],  # depthwise + inverted residuals; concatenations (Fire)
)
def test_pruned_registry_model_saves_reloads_and_exports_with_parity(tmp_path, name, size, round_to):
    model, pruned, reloaded, onnx_path, example = _pruned_roundtrip(tmp_path, name, size, round_to, 0.2)
    with torch.inference_mode():
        want = pruned(example).numpy()
        assert np.allclose(reloaded(example).numpy(), want, atol=1e-5)
    got = run_exported(onnx_path, example.numpy())
    assert np.abs(got - want).max() <= 1e-3 + 1e-4 * np.abs(want).max()
    channels = _conv_out_channels(onnx_path)
    original = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(channels) == len(original) and sum(channels) < sum(original)
    head = original[-1] if name.startswith("squeezenet") else None  # squeezenet's head is a conv: never pruned
    assert all(c % round_to == 0 for c in channels if c != head), channels


def test_shufflenet_channel_shuffle_is_one_line_naming_the_layer():
    cfg = PruneConfig(target={"macs": 0.5})
    with pytest.raises(EdgekdError) as e:
        check_prunable(build_model("shufflenet_v2_x0_5", 10, 1), cfg, in_channels=1)
    msg = str(e.value)
    assert "\n" not in msg and "cannot prune ShuffleNetV2 at layer 'stage" in msg and "ZeroDivisionError" in msg


def test_unknown_ignored_layer_is_named():
    cfg = PruneConfig(target={"macs": 0.5}, ignored=["layer9"])
    with pytest.raises(EdgekdError, match="student.prune.ignored: no layer 'layer9' in CifarResNet"):
        check_prunable(build_model("resnet8", 10, 1), cfg, in_channels=1)


def test_a_step_meets_its_goal_within_max_step_or_cuts_the_most_it_may():
    model = build_model("resnet8", 10, 1).eval()
    example = torch.randn(2, 1, 16, 16)
    base = size_of(model, (1, 16, 16))
    settings = StepSettings(round_to=2, max_step=1 / 3)
    step = choose_share(model, example, int(base.macs * 0.8), settings)
    assert step.met_goal and 2 / 3 * base.macs <= step.size.macs <= 0.8 * base.macs
    capped = choose_share(model, example, int(base.macs * 0.3), settings)
    assert 2 / 3 * base.macs <= capped.size.macs < base.macs and not capped.met_goal  # the cap wins over the goal
    # resnet8's 16-channel stage at multiples of 16: any cut empties it or removes more than a fifth
    with pytest.raises(EdgekdError, match="student.prune.round_to: 16: the smallest cut"):
        choose_share(model, example, int(base.macs * 0.9), StepSettings(round_to=16, max_step=0.2))


def test_ignored_layers_keep_their_channels():
    model = build_model("resnet8", 10, 1).eval()
    example = torch.randn(2, 1, 16, 16)
    cut(model, example, 0.5, StepSettings(round_to=4, ignored=("layer3.0.conv1",)))
    assert model.layer3[0].conv1.out_channels == 64 and model.layer2[0].conv1.out_channels < 32
    assert model.fc.out_features == 10  # the head's classes: never pruned


def test_structure_of_another_model_is_refused():
    with pytest.raises(EdgekdError, match="layer 'features.0' is not a Conv2d/BatchNorm2d/Linear of CifarResNet"):
        shrink_to(build_model("resnet8", 10, 1), {"features.0": {"out_channels": 8}})


def test_student_is_exactly_one_of_model_and_prune(tiny_pipeline):
    both = tiny_pipeline(extra="")
    text = both.read_text().replace(
        "student:\n  model: resnet8\n", "student:\n  model: resnet8\n  prune: {target: {macs: 0.5}}\n"
    )
    both.write_text(text)
    with pytest.raises(EdgekdError, match="exactly one of student.model and student.prune"):
        load_pipeline(both)
    few = tiny_pipeline(name="few.yaml")
    few.write_text(
        few.read_text().replace("  model: resnet8\nbenchmark", "  prune: {target: {macs: 0.3}, steps: 2}\nbenchmark")
    )
    with pytest.raises(EdgekdError, match=r"steps: 2 step\(s\) to 0.3 of the teacher remove 45% each.*use steps >= 3"):
        load_pipeline(few)


@pytest.mark.parametrize("importance", ["taylor", "bn_scale"])
def test_taylor_and_bn_scale_importances_cut_the_same_share_per_layer(importance):
    torch.manual_seed(0)
    images, labels = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    magnitude = cut(build_model("resnet8", 10, 1).eval(), images[:2], 0.25, StepSettings(round_to=2))
    model = build_model("resnet8", 10, 1).eval()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        nn.init.uniform_(bn.weight)  # BatchNorm scales that differ, for bn_scale to rank
    if importance == "taylor":
        taylor_gradients(model, images, labels)
    other = cut(with_grads(model), images[:2], 0.25, StepSettings(importance=importance, round_to=2))
    assert structure_of(other, model) == structure_of(magnitude, build_model("resnet8", 10, 1))  # same share per layer
