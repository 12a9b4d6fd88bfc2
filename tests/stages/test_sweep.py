"""`sweep:` trains one student per combination, sharing the teacher cache, and keeps the best."""

import json

import pytest

from edgekd.config import SweepConfig, load_pipeline
from edgekd.pipeline import Runner
from edgekd.run_records import DistillChoice
from edgekd.stages.distill import DistillStage, sweep_grid
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow


def test_grid_and_names():
    assert sweep_grid(None) == [DistillChoice({})]
    grid = sweep_grid(SweepConfig(temperature=[2, 8], hard_weight=[0.1, 0.5]))
    assert [g.overrides for g in grid] == [
        {"temperature": 2, "hard_weight": 0.1},
        {"temperature": 2, "hard_weight": 0.5},
        {"temperature": 8, "hard_weight": 0.1},
        {"temperature": 8, "hard_weight": 0.5},
    ]
    assert [g.name for g in grid][-1] == "T8_hard0.5"


def test_sweep_keeps_the_best_student(tiny_pipeline, tmp_path):
    path = tiny_pipeline(distill_epochs=2, extra="sweep:\n  temperature: [1.0, 8.0]\n  soft_weight: [0.0, 0.9]\n")
    run_dir = tmp_path / "run"
    manifest = Runner(load_pipeline(path), [TeacherStage(), DistillStage()], run_dir).run()
    metrics = manifest.stage("distill").to_dict()["metrics"]
    table = metrics["sweep"]
    assert len(table) == 4 and {(r["temperature"], r["soft_weight"]) for r in table} == {
        (1, 0),
        (1, 0.9),
        (8, 0),
        (8, 0.9),
    }
    best = max(table, key=lambda r: r["val_top1"])
    assert metrics["val_top1"] == best["val_top1"]
    assert metrics["sweep_best"] == {"temperature": best["temperature"], "soft_weight": best["soft_weight"]}
    for r in table:
        assert (
            run_dir
            / "distill"
            / "sweep"
            / DistillChoice({"temperature": r["temperature"], "soft_weight": r["soft_weight"]}).name
            / "checkpoint-last.pt"
        ).is_file()
    # one teacher cache, built once and shared by every trial
    assert len(list((run_dir / "distill").glob("teacher_cache*"))) == 1
    hist = [
        json.loads(x)
        for x in (run_dir / manifest.stage("distill").to_dict()["artifacts"]["distill_metrics"]["path"])
        .read_text()
        .splitlines()
    ]
    assert hist[-1]["temperature"] == best["temperature"]
