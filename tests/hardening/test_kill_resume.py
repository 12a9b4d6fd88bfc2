"""A real `edgekd run` SIGKILLed at seeded random points in teacher, distill, qat and export, resumed each time,
ends with the same artifacts as an uninterrupted run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PIPELINE = """\
name: killed
seed: 0
data: {dataset: digits, image_size: 16, batch_size: 32, limit_train: 256, limit_val: 96}
teacher: {model: resnet8, epochs: 3, lr: 0.1}
student: {model: resnet8}
distill: {epochs: 3, lr: 0.1}
qat: {epochs: 2, calibration_batches: 2, ptq: false}
export: {teacher: false, parity_batch: 16}
tensorrt: {enabled: false}
benchmark: {batch_sizes: [1], warmup: 0, min_runs: 2, min_seconds: 0.0, repeats: 1, threads: 1}
"""

# Byte-compared. TorchScript archives (*.ts.pt) are not byte-stable across processes: their code carries
# mangled class names (___torch_mangle_N) counted per process, so a process that traced a different
# number of modules before writes other bytes for the same model. They are left out here.
ARTIFACTS = ("teacher/model.pt", "distill/student.pt", "qat/student_qat.pt", "export/student.onnx")
KILL_IN = ("teacher", "distill", "qat", "export")


ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
}  # one thread: steady epoch times on a busy 2-core machine, same for every run


def _command(pipeline: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "edgekd.cli", "run", str(pipeline), "--run-dir", str(run_dir)]


def _stages(run_dir: Path) -> dict:
    try:  # written atomically: either the old or the new document, never half of one
        return json.loads((run_dir / "manifest.json").read_text())["stages"]
    except FileNotFoundError:
        return {}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_to_end(pipeline: Path, run_dir: Path, log: Path) -> None:
    with log.open("ab") as out:
        proc = subprocess.run(_command(pipeline, run_dir), stdout=out, stderr=subprocess.STDOUT, timeout=300, env=ENV)
    assert proc.returncode == 0, log.read_text()[-3000:]


def _run_and_kill(pipeline: Path, run_dir: Path, log: Path, stage: str, delay: float) -> str | None:
    """Start a run, wait until `stage` is running, then up to `delay` s more, SIGKILL the whole process group.

    Returns the stage that was running when the kill landed, or None when the run finished first.
    """
    with log.open("ab") as out:
        proc = subprocess.Popen(
            _command(pipeline, run_dir), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=ENV
        )
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _stages(run_dir).get(stage, {}).get("status") == "running":
                break
            time.sleep(0.02)
        with contextlib.suppress(subprocess.TimeoutExpired):  # the kill lands `delay` s into the stage, unless it ended
            proc.wait(timeout=delay)
        if proc.poll() is not None:
            assert proc.returncode == 0, log.read_text()[-3000:]
            return None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    running = [name for name, entry in _stages(run_dir).items() if entry.get("status") == "running"]
    return running[0] if running else "between stages"


def test_sigkill_at_random_points_then_resume_gives_the_same_artifacts(tmp_path):
    pipeline = tmp_path / "killed.yaml"
    pipeline.write_text(PIPELINE)
    ref_dir, run_dir, log = tmp_path / "ref", tmp_path / "run", tmp_path / "log.txt"
    _run_to_end(pipeline, ref_dir, log)

    rng = random.Random(20261123)
    interrupted = []
    for stage in KILL_IN:
        landed = _run_and_kill(
            pipeline, run_dir, log, stage, rng.uniform(0.0, 0.4)
        )  # short: on a quiet machine the tail of the run takes ~1.5 s
        if landed is not None:
            interrupted.append(landed)
            json.loads((run_dir / "manifest.json").read_text())  # still a whole document after the kill
    _run_to_end(pipeline, run_dir, log)

    assert len(interrupted) >= 3, f"only {interrupted} were interrupted: {log.read_text()[-2000:]}"
    assert len(set(interrupted) & set(KILL_IN)) >= 2, interrupted  # the kills spread over several stages
    stages = _stages(run_dir)
    assert all(
        stages[s]["status"] in ("done", "cached")
        for s in ("teacher", "distill", "qat", "dynamic_quant", "export", "benchmark", "report")
    ), stages
    for rel in ARTIFACTS:
        assert _sha(run_dir / rel) == _sha(ref_dir / rel), (
            f"{rel} differs from the uninterrupted run (kills landed in {interrupted})"
        )
    for stage, entry in stages.items():  # the manifest describes the files on disk
        for art in entry.get("artifacts", {}).values():
            assert _sha(run_dir / art["path"]) == art["sha256"], (stage, art["path"])
    ref_hist = (ref_dir / "distill" / "metrics.jsonl").read_text().splitlines()
    got_hist = (run_dir / "distill" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["val_top1"] for x in ref_hist] == [json.loads(x)["val_top1"] for x in got_hist]
