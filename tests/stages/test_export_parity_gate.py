"""The export stage's parity gate: an ONNX that disagrees with the eager model fails the stage and never ships."""

import json
import re
import subprocess
import sys

import pytest

from edgekd.fleet.bundle import shippable

pytestmark = pytest.mark.slow


def test_an_export_that_fails_parity_fails_the_stage_and_ships_nothing(tiny_pipeline, tmp_path):
    extra = (
        "qat: {enabled: false}\ndynamic_quant: {enabled: false}\nexport: {atol: 1.0e-30, rtol: 0.0, teacher: false}\n"
    )
    path = tiny_pipeline(distill_epochs=1, extra=extra)  # no exporter matches eager logits to 1e-30
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "edgekd.cli", "run", str(path), "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "> atol 1e-30" in proc.stderr, proc.stderr[-2000:]
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert stages["export"]["status"] == "failed" and stages["distill"]["status"] == "done"
    assert not (run_dir / "export" / "student.onnx").exists()  # quarantined, not left where a later step looks
    assert (run_dir / "export" / "failed" / "student.onnx").is_file()  # kept for inspection, and named so
    assert re.search(r"export/failed/student\.(ts\.pt|onnx): max \|Δlogit\|", proc.stderr), proc.stderr[-2000:]
    assert not any(p.suffix == ".onnx" for p in shippable(run_dir).values())
