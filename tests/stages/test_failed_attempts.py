"""A failed check loses no finished work, and what failed never becomes an artifact that ships."""

from __future__ import annotations

import pytest

from edgekd.config import load_pipeline
from edgekd.errors import EdgekdError
from edgekd.fleet.bundle import shippable
from edgekd.manifest import Manifest
from edgekd.pipeline import Runner
from edgekd.stages.distill import DistillStage
from edgekd.stages.export import ExportStage
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow

STAGES = [TeacherStage(), DistillStage(), ExportStage()]
NO_QUANT = "qat:\n  enabled: false\ndynamic_quant:\n  enabled: false\n"


def _runner(path, run_dir):
    return Runner(load_pipeline(path), STAGES, run_dir)


def test_a_failed_attempt_keeps_the_last_done_record(tiny_pipeline, tmp_path):
    run_dir = tmp_path / "run"
    good = tiny_pipeline(distill_epochs=1, extra=NO_QUANT)
    first = _runner(good, run_dir).run()
    done = first.stage("export").to_dict()
    onnx = run_dir / done["artifacts"]["student_onnx"]["path"]
    before = onnx.read_bytes()

    bad = tiny_pipeline(distill_epochs=1, name="bad.yaml", extra=NO_QUANT + "export:\n  atol: 1.0e-12\n  rtol: 0.0\n")
    with pytest.raises(EdgekdError):
        _runner(bad, run_dir).run()
    record = Manifest(run_dir, "tiny").stage("export").to_dict()
    assert record["status"] == "failed" and "> atol 1e-12" in record["error"]
    assert record["last_done"]["key"] == done["key"]
    assert onnx.read_bytes() == before  # the failed attempt wrote beside it, not over it
    assert "student_onnx" in shippable(run_dir)  # the last done export is still vouched for

    again = _runner(good, run_dir)
    assert [e.action for e in again.plan()] == ["cached", "cached", "cached"]
    assert [again.run().stage(s.name).to_dict()["status"] for s in STAGES] == ["cached", "cached", "cached"]
