"""The baseline stage: the student on hard labels alone, with the distillation budget."""

import json

import pytest

from edgekd.config import load_pipeline
from edgekd.pipeline import Runner
from edgekd.stages import all_stages
from edgekd.stages.baseline import BaselineStage, baseline_optim
from edgekd.stages.distill import DistillStage
from edgekd.stages.teacher import TeacherStage


def test_the_budget_comes_from_distill_unless_set(tiny_pipeline):
    cfg = load_pipeline(
        tiny_pipeline(distill_epochs=3, extra="  weight_decay: 0.001\nbaseline: {enabled: true, lr: 0.02}\n")
    )
    optim = baseline_optim(cfg)
    assert (optim.epochs, optim.weight_decay, optim.lr) == (3, 0.001, 0.02)
    assert "baseline" in [s.name for s in all_stages()]


@pytest.mark.slow
def test_baseline_trains_the_student_without_the_teacher(tiny_pipeline, tmp_path):
    run_dir = tmp_path / "run"
    path = tiny_pipeline(distill_epochs=2, extra="  augment: {hflip: true}\nbaseline: {enabled: true}\n")
    stages = [TeacherStage(), DistillStage(), BaselineStage()]
    m = Runner(load_pipeline(path), stages, run_dir).run()
    entry = m.stage("baseline").to_dict()
    assert entry["status"] == "done" and entry["metrics"]["epochs"] == 2
    history = [json.loads(line) for line in (run_dir / "baseline" / "metrics.jsonl").read_text().splitlines()]
    assert set(history[0]) >= {"hard_loss", "val_top1"} and "soft_loss" not in history[0]
    assert (
        "kd_gain_top1" not in entry["metrics"]
    )  # the report compares the two records; no value travels between stages
    assert (run_dir / entry["artifacts"]["baseline_student"]["path"]).is_file()

    again = Runner(load_pipeline(path), stages, run_dir)
    assert [e.action for e in again.plan()] == ["cached", "cached", "cached"]
    off = Runner(load_pipeline(tiny_pipeline(distill_epochs=2, name="off.yaml")), stages, run_dir).plan()[-1]
    assert (off.action, off.why) == ("skip", "baseline.enabled is false")
