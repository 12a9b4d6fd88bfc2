"""The distill stage with feature pairs, schedules, augmentation, the teacher cache and TensorBoard."""

import json

import pytest
import torch

from edgekd.config import load_pipeline
from edgekd.distill.schedules import value_at
from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.pipeline import Runner, Selection
from edgekd.stages.distill import DistillStage
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow

BASE = """\
name: feat
seed: 0
data: {{dataset: digits, image_size: 16, batch_size: 32, limit_train: 192, limit_val: 64}}
teacher: {{model: resnet8, checkpoint: {teacher}, allow_weak: true}}  # an untrained stand-in teacher
student: {{model: resnet8}}
distill:
  epochs: {epochs}
  lr: 0.05
"""


def _teacher_file(path, seed):
    torch.manual_seed(seed)
    torch.save(build_model("resnet8", 10, 1).state_dict(), path)
    return path


def _run(tmp_path, run_dir, distill_yaml="", epochs=2, teacher_seed=0, selection=Selection()):
    teacher = _teacher_file(tmp_path / "teacher_sd.pt", teacher_seed)  # same seed, same bytes: teacher stays cached
    path = tmp_path / "p.yaml"
    path.write_text(BASE.format(teacher=teacher, epochs=epochs) + distill_yaml)
    return Runner(load_pipeline(path), [TeacherStage(), DistillStage()], run_dir).run(selection)


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "distill" / "metrics.jsonl").read_text().splitlines()]


def test_feature_pairs_schedules_adapters_and_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    m = _run(
        tmp_path,
        run_dir,
        epochs=3,
        distill_yaml="""\
  temperature: {kind: phases, phases: [{fraction: 0.5, value: 8}, {fraction: 0.3, start: 8, end: 2}, {fraction: 0.2, value: 1}]}
  soft_weight: {kind: linear, start: 0.9, end: 0.5}
  features:
    - {teacher: layer2, student: layer2, loss: attention, weight: 100}
    - {teacher: layer3, student: layer2, loss: hint}
  tensorboard: true
""",
    )
    cfg = load_pipeline(tmp_path / "p.yaml").distill
    history = _history(run_dir)
    assert [h["temperature"] for h in history] == [value_at(cfg.temperature, e, 3) for e in range(3)] == [8.0, 8.0, 1.0]
    assert [h["soft_weight"] for h in history] == pytest.approx([0.9, 0.7, 0.5])
    assert all(h["feat0_attention"] > 0 and h["feat1_hint"] > 0 for h in history)
    assert history[-1]["feat1_hint"] < history[0]["feat1_hint"]  # the adapter and student learn the hint
    ckpt = torch.load(run_dir / "distill" / "checkpoint-last.pt", weights_only=True)
    adapters = ckpt["extra"][0]
    assert adapters["1.proj.0.weight"].shape == (64, 32, 1, 1)  # hint pair: 1x1 conv 32 -> 64 channels
    assert not any(k.startswith("0.") for k in adapters)  # attention pair: no parameters
    assert list((run_dir / "distill" / "tb").glob("events.out.tfevents.*"))
    assert m.stage("distill").to_dict()["metrics"]["feature_pairs"] == 2


def test_teacher_cache_gives_the_live_teacher_result_and_follows_the_checkpoint(tmp_path):
    features = "  features: [{teacher: layer3, student: layer3, loss: hint}]\n"
    cached = _run(tmp_path, tmp_path / "cached", features, epochs=1)
    assert cached.stage("distill").to_dict()["metrics"]["teacher_cache"].startswith("built")
    live = _run(tmp_path, tmp_path / "live", features + "  teacher_cache: false\n", epochs=1)
    assert live.stage("distill").to_dict()["metrics"]["teacher_cache"].startswith("off")
    a = torch.load(tmp_path / "cached" / "distill" / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "live" / "distill" / "student.pt", weights_only=True)["state_dict"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-4)
    assert [h["soft_loss"] for h in _history(tmp_path / "cached")] == pytest.approx(
        [h["soft_loss"] for h in _history(tmp_path / "live")], rel=1e-4
    )

    again = _run(tmp_path, tmp_path / "cached", features, epochs=1, selection=Selection(force=("distill",)))
    assert again.stage("distill").to_dict()["metrics"]["teacher_cache"].startswith("reused")
    new_teacher = _run(tmp_path, tmp_path / "cached", features, epochs=1, teacher_seed=1)  # same path, other weights
    assert new_teacher.stage("distill").to_dict()["metrics"]["teacher_cache"].startswith("built")


def test_mixup_skips_the_cache_and_trains_on_mixed_targets(tmp_path):
    m = _run(tmp_path, tmp_path / "run", "  augment: {mixup_alpha: 0.4, random_crop: true}\n", epochs=1)
    assert m.stage("distill").to_dict()["metrics"]["teacher_cache"].startswith("skipped: random augmentation")
    assert not (tmp_path / "run" / "distill" / "teacher_cache.pt").exists()
    h = _history(tmp_path / "run")[0]
    assert h["hard_loss"] > 0 and h["soft_loss"] > 0


def test_an_unknown_layer_fails_before_training(tmp_path):
    with pytest.raises(EdgekdError, match="student \\(CifarResNet\\) has no layer 'layer_3'; did you mean 'layer3'"):
        _run(tmp_path, tmp_path / "run", "  features: [{teacher: layer3, student: layer_3}]\n")
    assert not (tmp_path / "run" / "distill" / "checkpoint-last.pt").exists()
