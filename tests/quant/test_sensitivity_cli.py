"""`edgekd quant sensitivity` measures what the qat stage measures, on the run's own preprocessing: here a
student whose pretrained weights set ImageNet's mean/std, where the data set's usual values differ."""

import json

import pytest
import torchvision.models as tvm
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import load_pipeline
from edgekd.models.weights import describe_weights
from edgekd.pipeline import Runner
from edgekd.stages.distill import DistillStage
from edgekd.stages.qat import QatStage
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow


def test_the_cli_scores_sensitivity_on_the_runs_preprocessing(tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = describe_weights("mobilenet_v2", "IMAGENET1K_V2", "student.weights")
    weights.path.parent.mkdir(parents=True)
    import torch

    torch.save(tvm.mobilenet_v2(weights=None).state_dict(), weights.path)  # stands in for the real file
    path = tiny_pipeline(distill_epochs=1)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"]["image_size"] = 32
    cfg["student"] = {"model": "mobilenet_v2", "weights": "IMAGENET1K_V2"}
    cfg["qat"] = {"epochs": 0, "ptq": True, "sensitivity": True, "sensitivity_images": 64, "calibration_batches": 2}
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    manifest = Runner(load_pipeline(path), [TeacherStage(), DistillStage(), QatStage()], run).run()
    staged = manifest.done("qat").metrics["sensitivity"]
    assert manifest.done("distill").metrics["student_init"]["weights"] == "MobileNet_V2_Weights.IMAGENET1K_V2"

    out = tmp_path / "sensitivity.json"
    result = CliRunner().invoke(app, ["quant", "sensitivity", str(path), "--run-dir", str(run), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == staged  # same images, same normalisation, same figures
