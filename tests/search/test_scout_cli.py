"""`edgekd scout PIPELINE`: the quickstart's default candidates timed on this machine, then again from the cache;
a device devices.yaml does not define is one line, exit 2 (remote scouting: tests/fleet/test_scout_ship.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.run_records import ScoutTable
from edgekd.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_quickstart_lists_at_least_eight_timed_candidates_and_a_rerun_is_cached(tmp_path):
    cmd = [sys.executable, "-m", "edgekd.cli", "scout", str(ROOT / "pipelines" / "quickstart.yaml")]
    cmd += ["--run-dir", str(tmp_path / "run")]
    tables = []
    for _ in range(2):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "scout · local · onnxruntime" in done.stdout and "saved: " in done.stdout
        tables.append(ScoutTable.from_dict(json.loads(RunDir(tmp_path / "run").scout_table("local").read_text())))
    first, table = tables
    timed = first.timed()
    assert len(timed) >= 8 and all(e.p50_ms > 0 and e.macs and e.params for e in timed)
    assert {"prune/0.5", "prune/0.25"} <= {e.candidate for e in timed}  # the defaults: smaller models, pruned teachers
    assert not any(e.cached for e in timed) and all(e.cached for e in table.timed())  # the rerun timed nothing
    assert [(e.candidate, e.latency) for e in table.timed()] == [(e.candidate, e.latency) for e in timed]


def test_a_device_devices_yaml_does_not_define_is_one_line(tiny_pipeline, tmp_path):
    devices = tmp_path / "devices.yaml"
    devices.write_text("devices: {orin: {host: 10.0.0.2, kind: jetson-orin-nano}}\n")
    args = ["scout", str(tiny_pipeline()), "--device", "xavier", "--devices", str(devices), "--run-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert "error: scout device 'xavier': " in message and "no device named 'xavier'" in message
    assert "defined devices: orin" in message


def test_a_misspelt_candidate_is_one_line_naming_its_place_before_anything_is_built(tiny_pipeline, tmp_path):
    """A name the scout cannot build is the user's typo, not a candidate that failed: `edgekd scout`, `validate`
    and a run of `student.model: auto` all stop on it (a candidate that fails to build stays in the table)."""
    path = tiny_pipeline(extra="scout:\n  candidates: [resnet8, prune/0.5, timm/resnet18, resnet88]\n")
    for args in (["scout", str(path), "--run-dir", str(tmp_path / "run")], ["validate", str(path)]):
        result = CliRunner().invoke(app, args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
        assert message.startswith("error: scout.candidates[3]: unknown model 'resnet88'; did you mean"), message
        assert "`timm/<name>` (timm installed) or `prune/<share>`" in message
    assert not (tmp_path / "run" / "scout").exists()  # nothing was built or timed
