"""BatchNorm re-estimation: a student with MNASNet's BatchNorm momentum (3e-4) after a short distillation scores
at chance in eval mode unless its running statistics are recomputed; with them off the stage says why."""

import pytest
from torch import nn

from edgekd.config import load_pipeline
from edgekd.models import registry
from edgekd.models.cifar_resnet import CifarResNet
from edgekd.pipeline import Runner
from edgekd.stages.distill import DistillStage
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow


def _resnet8_mnasnet_bn(num_classes: int, in_channels: int) -> nn.Module:
    """resnet8 with torchvision MNASNet's BatchNorm momentum (1 - 0.9997)."""
    model = CifarResNet(8, num_classes=num_classes, in_channels=in_channels)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 3e-4
    return model


def test_low_momentum_batchnorm_is_reestimated_or_named(tiny_pipeline, tmp_path, monkeypatch, one_thread):
    monkeypatch.setitem(registry._CIFAR, "resnet8_mnasnet_bn", _resnet8_mnasnet_bn)
    stages = [TeacherStage(), DistillStage()]

    def pipeline(distill_extra: str, name: str):
        path = tiny_pipeline(distill_epochs=3, extra=distill_extra, name=name)
        text = path.read_text().replace("student:\n  model: resnet8\n", "student:\n  model: resnet8_mnasnet_bn\n")
        path.write_text(text)
        return path

    off = pipeline("  bn_reestimate: false\n", "off.yaml")
    run_dir = tmp_path / "run"
    distill = Runner(load_pipeline(off), stages, run_dir).run().stage("distill").to_dict()["metrics"]
    bn = distill["bn_reestimate"]
    assert not bn["ran"] and bn["reason"] == "BatchNorm momentum 0.0003 < 0.05"
    assert bn["train_top1"] > 25.0 and bn["eval_top1"] < 15.0, bn
    assert distill["diverged"] and "BatchNorm running statistics do not match" in distill["diverged_reason"]
    assert "distill.bn_reestimate: auto" in distill["diverged_reason"]

    auto = pipeline("", "auto.yaml")  # the default: auto
    distill = Runner(load_pipeline(auto), stages, run_dir).run().stage("distill").to_dict()["metrics"]
    bn = distill["bn_reestimate"]
    assert bn["ran"] and bn["images"] == 256 and bn["reason"] == "BatchNorm momentum 0.0003 < 0.05"
    assert bn["eval_top1_after"] >= bn["train_top1"] - 10.0, bn
    assert "diverged" not in distill and distill["val_top1"] > 15.0  # 1.5x chance: the divergence line
