"""The qat stage with a learning rate that wrecks the model: the collapse watch stops it early naming a layer;
without the watch, the QAT file far under PTQ is recorded as failed with the reason and the PTQ file ships."""

import re

import pytest

from edgekd.config import load_pipeline
from edgekd.errors import EdgekdError
from edgekd.manifest import read_manifest
from edgekd.pipeline import Runner
from edgekd.stages.distill import DistillStage
from edgekd.stages.qat import QatStage
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow

QAT = "qat: {{epochs: 2, lr: {lr}, distill: false, calibration_batches: 2, watch_every: {every}, watch_images: 64}}\n"


def test_a_collapsing_qat_stops_early_or_ships_ptq_instead(tiny_pipeline, tmp_path):
    stages = [TeacherStage(), DistillStage(), QatStage()]
    run_dir = tmp_path / "run"
    common = "export: {parity_batch: 16}\n"
    watched = tiny_pipeline(
        distill_epochs=2, extra=common + QAT.format(lr=1e9, every=10), limit_train=512, name="w.yaml"
    )
    with pytest.raises(EdgekdError, match=r"qat collapsed at step \d+: the loss is nan \(non-finite weights first in "):
        Runner(load_pipeline(watched), stages, run_dir).run()
    qat = read_manifest(run_dir).stage("qat").to_dict()
    assert qat["status"] == "failed" and "lower qat.lr (now 1e+09)" in qat["error"] and "\n" not in qat["error"]
    assert int(re.search(r"at step (\d+)", qat["error"]).group(1)) <= 512 // 32, "stopped within the first epoch"

    unwatched = tiny_pipeline(
        distill_epochs=2, extra=common + QAT.format(lr=50.0, every=0), limit_train=512, name="u.yaml"
    )
    qat = Runner(load_pipeline(unwatched), stages, run_dir).run().stage("qat").to_dict()
    assert qat["status"] == "done"
    arts = qat["metrics"]["artifacts"]
    assert arts["student_qat_onnx"]["status"] == "failed"
    assert "points under PTQ" in arts["student_qat_onnx"]["reason"]
    assert "the PTQ file ships instead" in arts["student_qat_onnx"]["reason"]
    assert "student_ptq_onnx" in qat["artifacts"] and "student_qat_onnx" not in qat["artifacts"]
    assert (run_dir / "qat" / "failed" / "student_int8_qdq.onnx").is_file()
