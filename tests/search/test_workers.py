"""Several `edgekd sweep` workers share one study through a storage URL; a worker killed with SIGKILL mid-trial
leaves a trial that its stale heartbeat marks failed and that another worker retries with the same settings.
A journal file (no heartbeats) is shared the same way by workers that live."""

import os
import signal
import subprocess
import sys
import time

import pytest

from edgekd.config import load_pipeline
from edgekd.run_records import SweepTrial
from edgekd.rundir import RunDir
from edgekd.search.study import open_storage, optuna_module

pytestmark = pytest.mark.slow

SWEEP = """\
sweep:
  sampler: random
  trials: 3
  pruner: none
  heartbeat_seconds: 1
  space:
    temperature: {low: 1.0, high: 8.0}
"""


def _worker(path, storage, run_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH")] if p)}
    cmd = [sys.executable, "-m", "edgekd.cli", "sweep", str(path), "--storage", storage, "--run-dir", str(run_dir)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _mid_trial(study) -> list[int]:
    """The trials that are running and have reported an epoch."""
    return [t.number for t in study.get_trials() if t.state.name == "RUNNING" and t.intermediate_values]


def run_shared_study(path, storage, tmp_path):
    """Worker A is killed mid-trial; workers B and C, started at once, finish the study."""
    optuna = optuna_module()
    cfg = load_pipeline(path)
    a = _worker(path, storage, tmp_path / "a")
    deadline = time.monotonic() + 240
    study = None
    while study is None and time.monotonic() < deadline and a.poll() is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage, tmp_path, cfg.sweep))]
        if names:
            study = optuna.load_study(study_name=names[0], storage=open_storage(storage, tmp_path, cfg.sweep))
        else:
            time.sleep(0.5)
    # A runs in 50 ms slices and is looked at while stopped, until it is mid-trial: a running trial has reported an
    # epoch (a finished trial's metrics file would not do: A could be between trials, in one that never started,
    # which is failed, not retried). Looked at while A runs, A could finish the trial, or on a fast machine the
    # whole study, between one look and the next (CI saw both).
    assert study is not None, a.communicate()[0] if a.poll() is not None else "worker A made no study in 240 s"
    a.send_signal(signal.SIGSTOP)
    while time.monotonic() < deadline and a.poll() is None and not _mid_trial(study):
        a.send_signal(signal.SIGCONT)
        time.sleep(0.05)
        a.send_signal(signal.SIGSTOP)
    assert a.poll() is None, a.stdout.read()
    a.send_signal(signal.SIGKILL)
    a.wait()
    killed = _mid_trial(study)
    assert killed, "worker A was killed outside a trial it had started"
    b, c = _worker(path, storage, tmp_path / "b"), _worker(path, storage, tmp_path / "c")
    outs = [p.communicate(timeout=300)[0] for p in (b, c)]
    assert b.returncode == 0 and c.returncode == 0, outs
    trials = study.get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    states = [(t.number, t.state.name, t.system_attrs.get("failed_trial"), t.user_attrs) for t in trials]
    assert len(complete) == 3, states  # B and C racing for the last: one stands down
    assert all(t.user_attrs.get("surplus") for t in trials if t.state.name == "PRUNED"), "pruner: none prunes nothing"
    assert [t.state.name for t in trials if t.number in killed] == ["FAIL"] * len(killed)
    retried = [t for t in complete if t.system_attrs.get("failed_trial") in killed]
    assert retried and retried[0].params == next(t.params for t in trials if t.number in killed), (killed, states, outs)
    # no trial ran twice: each complete trial was trained by exactly one worker (A may finish one before its death)
    ran = {
        w: {t.number for t in complete if RunDir(tmp_path / w).trial_record(study.study_name, t.number).is_file()}
        for w in "abc"
    }
    assert sum(len(v) for v in ran.values()) == 3 and set().union(*ran.values()) == {t.number for t in complete}
    for w, numbers in ran.items():
        for n in numbers:
            record = SweepTrial.read(RunDir(tmp_path / w).trial_record(study.study_name, n))
            assert record.state == "complete" and (w != "a" or n not in killed)
            assert record.state == "complete" and record.settings == next(t.params for t in complete if t.number == n)
    return study


def test_workers_share_a_study_on_a_real_postgresql_server(postgres_url, tiny_pipeline, tmp_path):
    """The whole story on the storage many machines would share (SQLite runs the same code; its single-process
    use is tested in tests/stages/test_sweep.py): ~100 s of CPU, so one storage only."""
    path = tiny_pipeline(distill_epochs=4, limit_train=128, extra=SWEEP)  # 3 epochs left after the first: time to kill
    run_shared_study(path, postgres_url, tmp_path)


def test_two_workers_share_a_study_in_a_journal_file(tiny_pipeline, tmp_path):
    """Two workers started at once against one journal file finish the study together: exactly `trials` complete
    trials, each trained by one worker only (its record is in that worker's run directory alone)."""
    journal = SWEEP.replace("  heartbeat_seconds: 1\n", "")  # a journal has no heartbeats: the field is refused
    path = tiny_pipeline(teacher_epochs=0, distill_epochs=1, limit_train=96, extra=journal)
    storage = f"journal://{tmp_path / 'study.log'}"
    workers = [_worker(path, storage, tmp_path / w) for w in "ab"]
    outs = [p.communicate(timeout=300)[0] for p in workers]
    assert [p.returncode for p in workers] == [0, 0], outs
    cfg = load_pipeline(path)
    optuna = optuna_module()
    (summary,) = optuna.get_all_study_summaries(open_storage(storage, tmp_path, cfg.sweep))
    trials = optuna.load_study(study_name=summary.study_name, storage=open_storage(storage, tmp_path, cfg.sweep))
    complete = {t.number: t.params for t in trials.get_trials() if t.state.name == "COMPLETE"}
    assert len(complete) == cfg.sweep.n_trials, outs
    ran = {w: {n for n in complete if RunDir(tmp_path / w).trial_record(summary.study_name, n).is_file()} for w in "ab"}
    assert not ran["a"] & ran["b"] and ran["a"] | ran["b"] == set(complete), ran
    for w, numbers in ran.items():
        for n in numbers:
            assert SweepTrial.read(RunDir(tmp_path / w).trial_record(summary.study_name, n)).settings == complete[n]
