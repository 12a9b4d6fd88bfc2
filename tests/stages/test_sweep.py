"""`sweep:` is an Optuna study: each trial trains on the training data less a seeded selection split, is scored on
it, and records the settings it trained with; the winner goes on and only it is scored on the validation split."""

import hashlib
import json
import subprocess
import sys

import optuna
import pytest
import torch

from edgekd.config import SweepConfig, load_pipeline
from edgekd.data.datasets import carve, load_data
from edgekd.distill.trainer import read_history
from edgekd.models import build_model
from edgekd.pipeline import Runner, Selection
from edgekd.run_records import SweepTrial
from edgekd.rundir import RunDir
from edgekd.search.study import trial_seed
from edgekd.stages.distill import DistillStage
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow

LEAN = "qat:\n  enabled: false\ndynamic_quant:\n  enabled: false\nexport:\n  enabled: false\n"

SELECTION_ONLY = """\
name: sel
data: {{dataset: digits, image_size: 16, batch_size: 32, limit_train: 160, limit_val: 64}}
teacher: {{model: resnet8, checkpoint: {teacher}, allow_weak: true}}
student: {{model: resnet8}}
distill: {{epochs: 1, lr: 0.05, bn_reestimate: true}}
sweep: {{temperature: [4.0], selection_split: 0.25}}
"""


def test_grid_space_and_its_size():
    sweep = SweepConfig(temperature=[2, 8], hard_weight=[0.1, 0.5])
    assert sweep.sampler == "grid" and sweep.search_space == {"temperature": [2, 8], "hard_weight": [0.1, 0.5]}
    assert sweep.n_trials == 4
    with pytest.raises(ValueError, match="grid needs a list"):
        SweepConfig(space={"lr": {"low": 0.01, "high": 0.1}})
    with pytest.raises(ValueError, match="not a searchable"):
        SweepConfig(sampler="tpe", space={"epochs": [1, 2]})


def test_grid_sweep_runs_every_combination_and_records_each_trial(tiny_pipeline, tmp_path):
    path = tiny_pipeline(
        distill_epochs=1, limit_train=160, extra="sweep:\n  temperature: [1.0, 8.0]\n  soft_weight: [0.0, 0.9]\n"
    )
    run_dir = tmp_path / "run"
    cfg = load_pipeline(path)
    manifest = Runner(cfg, [TeacherStage(), DistillStage()], run_dir).run()
    metrics = manifest.stage("distill").to_dict()["metrics"]
    sweep = metrics["sweep"]
    trials = [SweepTrial.from_dict(t) for t in sweep["trials"]]
    assert {(t.settings["temperature"], t.settings["soft_weight"]) for t in trials} == {
        (1, 0),
        (1, 0.9),
        (8, 0),
        (8, 0.9),
    }
    best = max(trials, key=lambda t: (t.selection_top1, -t.selection_kl, -t.number))
    assert sweep["best"] == best.number and metrics["sweep_best"] == best.settings
    # chosen on a seeded split of the training data, recorded in the manifest
    selection = sweep["selection"]
    assert selection["split"] == "train" and selection["images"] == 16 and selection["trained_on"] == 144
    assert "training images held out" in sweep["chosen_by"]
    rundir = RunDir(run_dir)
    for t in trials:
        # each trial's own record says what it trained with; its epoch log shows the same values in force
        record = SweepTrial.read(rundir.trial_record(sweep["study"], t.number))
        assert record == t and record.seed == trial_seed(cfg.seed, t.number)
        history = read_history(rundir.trial_dir(sweep["study"], t.number) / "metrics.jsonl")
        assert history[-1]["temperature"] == t.settings["temperature"]
        assert history[-1]["soft_weight"] == t.settings["soft_weight"]
    assert len({t.seed for t in trials}) == 4
    # one teacher cache, built once and shared by every trial
    assert len(list((run_dir / "distill").glob("teacher_cache*"))) == 1
    # a second run is cached
    again = Runner(cfg, [TeacherStage(), DistillStage()], run_dir).run()
    assert again.stage("distill").status == "cached"
    # the winner trained again from its settings and seed (as when another worker trained it) is the same student
    rundir.trial_student(sweep["study"], best.number).unlink()
    forced = Runner(cfg, [TeacherStage(), DistillStage()], run_dir).run(Selection(force=("distill",)))
    redo = forced.stage("distill").to_dict()["metrics"]
    assert redo["sweep"]["winner_model"].startswith("trained again here")
    assert redo["sweep"]["reproduced_selection_top1"] == best.selection_top1
    assert redo["val_top1"] == metrics["val_top1"]


def test_selection_split_is_seeded_and_disjoint_from_training(tiny_pipeline):
    cfg = load_pipeline(tiny_pipeline(limit_train=200))
    data = load_data(cfg.data, cfg.seed)
    fit, sel = carve(data.train, 0.1, 0)
    fit2, sel2 = carve(data.train, 0.1, 0)
    assert len(sel) == 20 and len(fit) == 180
    assert sel.indices.tolist() == sel2.indices.tolist()
    assert not set(sel.indices.tolist()) & set(fit.indices.tolist())
    assert sel.indices.tolist() != carve(data.train, 0.1, 1)[1].indices.tolist()
    seen = [int(i) for _, _, idx in fit.batches(64) for i in idx]  # training batches come from the fit part only
    assert sorted(seen) == fit.indices.tolist()
    json.dumps(sel.indices.tolist())


def test_the_selection_images_never_reach_a_trials_student(tmp_path, monkeypatch):
    """A trial trains, and re-estimates its BatchNorm statistics, on its training part alone: with the selection
    images inverted (the same files otherwise), the trial trains the same student bit for bit."""
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    torch.save(build_model("resnet8", 10, 1).state_dict(), teacher)  # an untrained stand-in: the same in both runs
    path = tmp_path / "p.yaml"
    path.write_text(SELECTION_ONLY.format(teacher=teacher))
    cfg = load_pipeline(path)
    stages = [TeacherStage(), DistillStage()]
    runs = {"a": Runner(cfg, stages, tmp_path / "a").run()}

    def inverted_selection(data_cfg, seed, inputs=None):
        data = load_data(data_cfg, seed, inputs)
        _, selection = carve(data.train, cfg.sweep.selection_split, seed)
        images = selection.base.images
        images[selection.indices] = 1.0 - images[selection.indices]
        return data

    monkeypatch.setattr("edgekd.pipeline.load_data", inverted_selection)
    runs["b"] = Runner(cfg, stages, tmp_path / "b").run()
    a, b = (
        torch.load(RunDir(tmp_path / run).trial_student(study, 0), weights_only=True)["state_dict"]
        for run, manifest in runs.items()
        for study in [manifest.stage("distill").to_dict()["metrics"]["sweep"]["study"]]
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_sweep_under_nproc_trains_every_trial_on_every_process(tiny_pipeline, tmp_path):
    """`edgekd run --nproc 2` (two gloo processes): rank 0 works the study and both processes train each trial;
    the selection split, the trials' seeds and their records are those one process would have."""
    path = tiny_pipeline(limit_train=192, extra=LEAN + "sweep:\n  temperature: [1.0, 8.0]\n")
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgekd.cli", "run", str(path), "--run-dir", str(run_dir), "--nproc", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = load_pipeline(path)
    metrics = json.loads((run_dir / "manifest.json").read_text())["stages"]["distill"]["metrics"]
    sweep = metrics["sweep"]
    rundir = RunDir(run_dir)
    study = optuna.load_study(study_name=sweep["study"], storage=f"sqlite:///{rundir.study_db}")
    finished = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 2
    trials = [SweepTrial.from_dict(t) for t in sweep["trials"]]
    assert sorted(t.settings["temperature"] for t in trials) == [1.0, 8.0]
    for t in trials:
        assert f"trial {t.number} trains on 2 processes" in done.stderr
        record = SweepTrial.read(rundir.trial_record(sweep["study"], t.number))
        assert record == t and record.seed == trial_seed(cfg.seed, t.number)
        history = read_history(rundir.trial_dir(sweep["study"], t.number) / "metrics.jsonl")
        assert history[-1]["temperature"] == t.settings["temperature"]
    # the winner: the best on the split one process carves from the training data, never on the validation split
    complete = [t for t in trials if t.state == "complete"]
    best = max(complete, key=lambda t: (t.selection_top1, -t.selection_kl, -t.number))
    assert sweep["best"] == best.number and metrics["sweep_best"] == best.settings
    _, selection = carve(load_data(cfg.data, cfg.seed).train, cfg.sweep.selection_split, cfg.seed)
    assert sweep["selection"]["split"] == "train"
    assert sweep["selection"]["indices_sha256"] == hashlib.sha256(selection.indices.numpy().tobytes()).hexdigest()
    assert sweep["winner_model"] == "trained by this worker"
