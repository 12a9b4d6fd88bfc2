"""The runner: caching by key, invalidation by section, --only/--from/--force, plan, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import load_pipeline
from edgekd.errors import EdgekdError
from edgekd.pipeline import Runner, Selection
from edgekd.stages.distill import DistillStage
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow


def _runner(path, run_dir):
    return Runner(load_pipeline(path), [TeacherStage(), DistillStage()], run_dir)


def _statuses(manifest):
    return {name: entry["status"] for name, entry in manifest.to_dict()["stages"].items()}


def test_cache_and_invalidation(tiny_pipeline, tmp_path):
    run_dir = tmp_path / "run"
    m = _runner(tiny_pipeline(), run_dir).run()
    assert _statuses(m) == {"teacher": "done", "distill": "done"}
    assert m.stage("distill").to_dict()["metrics"]["val_top1"] > 0
    art = m.stage("teacher").to_dict()["artifacts"]["teacher"]
    assert len(art["sha256"]) == 64 and (run_dir / art["path"]).is_file()

    again = _runner(tiny_pipeline(), run_dir)
    assert [e.action for e in again.plan()] == ["cached", "cached"]
    assert _statuses(again.run()) == {"teacher": "cached", "distill": "cached"}

    changed = _runner(tiny_pipeline(extra="  soft_weight: 0.5\n"), run_dir)
    assert [e.action for e in changed.plan()] == ["cached", "run"]
    assert _statuses(changed.run()) == {"teacher": "cached", "distill": "done"}

    model = run_dir / "teacher" / "model.pt"
    original = model.read_bytes()
    model.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # same size, other content
    assert [e.action for e in changed.plan()] == ["run", "check"]
    # the teacher re-trains to the same bytes (CPU, fixed seed): the distilled student it made stays valid
    assert _statuses(changed.run()) == {"teacher": "done", "distill": "cached"}
    assert model.read_bytes() == original


def test_an_upstream_artifact_made_anew_under_the_same_key_is_never_trained_on_from_an_old_checkpoint(
    tiny_pipeline, tmp_path
):
    """A stage re-run under an unchanged key can make other bytes (a latency-targeted pruning, timed anew, cuts
    another net): the next stage re-runs, and must train from scratch, not resume the checkpoint it trained on
    the old input (a pruned student of other layer sizes crashed in load_state_dict; one of equal sizes would
    have resumed silently on the wrong weights)."""
    import dataclasses

    from edgekd.manifest import ArtifactEntry, Manifest
    from edgekd.models import load_model, save_model
    from edgekd.ondevice.files import sha256_file

    run_dir = tmp_path / "run"
    assert _statuses(_runner(tiny_pipeline(), run_dir).run()) == {"teacher": "done", "distill": "done"}
    assert (run_dir / "distill" / "checkpoint-last.pt").is_file()  # what a resume would pick up
    # the teacher stage's output made anew, recorded by its own (cached) key: what a re-run that timed other
    # latencies leaves behind
    path = run_dir / "teacher" / "model.pt"
    model, spec = load_model(path)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    save_model(path, model, spec)
    manifest = Manifest(run_dir)
    done = manifest.done("teacher")
    entry = ArtifactEntry(done.artifacts["teacher"].path, sha256_file(path), path.stat().st_size)
    manifest.record("teacher", dataclasses.replace(done, artifacts={**done.artifacts, "teacher": entry}))

    again = _runner(tiny_pipeline(), run_dir)
    assert [(e.action, e.why) for e in again.plan()][1] == (
        "run",
        "input 'teacher' differs from the one it was made from",
    )
    m = again.run()
    assert _statuses(m) == {"teacher": "cached", "distill": "done"}
    assert not m.stage("distill").metrics.get("resumed_from_epoch")  # trained from epoch 1 on the new teacher


def test_selection_flags(tiny_pipeline, tmp_path):
    run_dir = tmp_path / "run"
    r = _runner(tiny_pipeline(distill_epochs=1), run_dir)
    with pytest.raises(EdgekdError, match="--only distil: no such stage; stages are: teacher, distill"):
        r.run(Selection(only="distil"))
    with pytest.raises(EdgekdError, match="needs 'teacher' from stage 'teacher'"):
        r.run(Selection(only="distill"))
    assert _statuses(r.run(Selection(only="teacher"))) == {"teacher": "done"}
    assert _statuses(r.run(Selection(only="distill"))) == {"teacher": "done", "distill": "done"}
    assert _statuses(r.run(Selection(force=("teacher",)))) == {"teacher": "done", "distill": "cached"}
    assert _statuses(r.run(Selection(start="teacher"))) == {"teacher": "done", "distill": "done"}


def test_cli_reruns_unchanged_pipeline_without_training(tiny_pipeline, tmp_path):
    path, run_dir = tiny_pipeline(distill_epochs=1), tmp_path / "run"
    cmd = [sys.executable, "-m", "edgekd.cli", "run", str(path), "--run-dir", str(run_dir)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "teacher: cached" in second.stderr and "distill: cached" in second.stderr
    assert "epoch" not in second.stderr
    # the same app and error path in this process (as tests/test_bad_inputs.py runs `run` cases): a third
    # interpreter would spend its seconds importing torch to print one line
    bad = CliRunner().invoke(app, ["run", str(tiny_pipeline(extra="  temprature: 2\n", name="bad.yaml"))])
    assert bad.exception is None or isinstance(bad.exception, SystemExit), repr(bad.exception)
    assert bad.exit_code == 2 and "did you mean 'temperature'" in bad.stderr and "Traceback" not in bad.stderr


def test_killed_run_resumes_to_the_same_student(tiny_pipeline, tmp_path):
    path = tiny_pipeline(distill_epochs=5, extra="qat:\n  enabled: false\nexport:\n  enabled: false\n")
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    cmd = [sys.executable, "-m", "edgekd.cli", "run", str(path), "--run-dir"]
    # both runs in fresh processes: the test process's torch thread settings must not differ from the runs'
    assert subprocess.run([*cmd, str(ref_dir)], capture_output=True, timeout=300).returncode == 0

    proc = subprocess.Popen(
        [*cmd, str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    metrics = run_dir / "distill" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    # epoch 2's checkpoint is saved before its metrics line: the run is now in (or at the start of) the third epoch
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["status"] == "running"

    assert subprocess.run([*cmd, str(run_dir)], capture_output=True, timeout=300).returncode == 0
    resumed = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert resumed["teacher"]["status"] == "cached"
    assert resumed["distill"]["metrics"]["resumed_from_epoch"] >= 2
    a = torch.load(ref_dir / "distill" / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "distill" / "student.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_hist = [json.loads(x) for x in (ref_dir / "distill" / "metrics.jsonl").read_text().splitlines()]
    got_hist = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [h["val_top1"] for h in ref_hist] == [h["val_top1"] for h in got_hist]
