"""`sweep.space` reaches into the distill section: a feature pair's weight (`features.<i>.weight`) and a schedule's
parameters (`soft_weight.end`); a path this pipeline's distill section lacks is refused when the config loads,
and each trial trains with exactly the values sampled for it."""

import pytest

from edgekd.config import load_pipeline, search_paths
from edgekd.distill.trainer import read_history
from edgekd.errors import EdgekdError
from edgekd.pipeline import Runner
from edgekd.run_records import SweepTrial
from edgekd.rundir import RunDir
from edgekd.stages.distill import DistillStage
from edgekd.stages.teacher import TeacherStage

DISTILL = """\
  soft_weight: {kind: linear, start: 0.3, end: 0.9}
  features:
    - {teacher: layer2, student: layer2, loss: hint}
"""


def test_a_path_the_distill_section_lacks_is_refused_with_the_valid_paths(tiny_pipeline):
    cfg = load_pipeline(tiny_pipeline(extra=DISTILL + "sweep:\n  space:\n    features.0.weight: [0.5, 2]\n"))
    assert {"features.0.weight", "soft_weight.start", "soft_weight.end"} <= set(search_paths(cfg.distill))
    for path in ("features.1.weight", "temperature.end"):  # one pair; temperature is a plain number
        with pytest.raises(EdgekdError) as e:
            load_pipeline(tiny_pipeline(extra=DISTILL + f"sweep:\n  space:\n    {path}: [0.5, 2]\n"))
        line = str(e.value)
        assert "\n" not in line and f"sweep.space.{path}: not in this pipeline's distill section" in line
        assert line.endswith(", ".join(search_paths(cfg.distill)))
    negative = "sweep:\n  sampler: tpe\n  space:\n    soft_weight.end: {low: -1, high: 1}\n"
    with pytest.raises(
        EdgekdError, match=r"sweep\.space\.soft_weight\.end: -1 is not a valid distill\.soft_weight\.end"
    ):
        load_pipeline(tiny_pipeline(extra=DISTILL + negative))
    with pytest.raises(EdgekdError, match=r"sweep\.space\.soft_weight\.end: soft_weight itself is searched too"):
        load_pipeline(
            tiny_pipeline(extra=DISTILL + "sweep:\n  soft_weight: [0.5]\n  space:\n    soft_weight.end: [1]\n")
        )


@pytest.mark.slow
def test_each_trial_trains_with_the_feature_weight_and_schedule_end_sampled_for_it(tiny_pipeline, tmp_path):
    """A grid over a feature weight and a schedule's end: every combination is one trial, whose own record says
    what it trained with and whose epoch log shows those values in force (the schedule's end on its last epoch)."""
    space = "sweep:\n  pruner: none\n  space:\n    features.0.weight: [0.5, 2.0]\n    soft_weight.end: [0.4, 0.8]\n"
    cfg = load_pipeline(tiny_pipeline(teacher_epochs=0, distill_epochs=2, limit_train=96, extra=DISTILL + space))
    run_dir = tmp_path / "run"
    manifest = Runner(cfg, [TeacherStage(), DistillStage()], run_dir).run()
    sweep = manifest.stage("distill").to_dict()["metrics"]["sweep"]
    trials = [SweepTrial.from_dict(t) for t in sweep["trials"]]
    grid = {(w, end) for w in cfg.sweep.space["features.0.weight"] for end in cfg.sweep.space["soft_weight.end"]}
    assert {(t.settings["features.0.weight"], t.settings["soft_weight.end"]) for t in trials} == grid
    rundir = RunDir(run_dir)
    for t in trials:
        record = SweepTrial.read(rundir.trial_record(sweep["study"], t.number))
        assert record == t
        first, last = read_history(rundir.trial_dir(sweep["study"], t.number) / "metrics.jsonl")
        assert first["feat0_weight"] == last["feat0_weight"] == record.settings["features.0.weight"]
        assert first["soft_weight"] == cfg.distill.soft_weight.start
        assert last["soft_weight"] == pytest.approx(record.settings["soft_weight.end"], rel=1e-12)
