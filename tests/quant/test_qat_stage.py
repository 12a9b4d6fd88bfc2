"""qat stage: residual Q/DQ in both files, sensitivity in the manifest, a failed PTQ file does not fail QAT,
the distill stage's teacher cache reused."""

import pytest

import edgekd.stages.qat as qat_stage
from edgekd.config import load_pipeline
from edgekd.errors import EdgekdError
from edgekd.pipeline import Runner
from edgekd.quant import inspect_qdq
from edgekd.stages.distill import DistillStage
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow


def test_ptq_failure_is_recorded_and_qat_goes_on(tiny_pipeline, tmp_path, monkeypatch):
    real = qat_stage.check_qdq_parity

    def parity(model, path, images):
        if "ptq" in path.name:
            raise EdgekdError(f"{path}: top-1 agreement 50.0% < 97% on 16 validation images")
        return real(model, path, images)

    monkeypatch.setattr(qat_stage, "check_qdq_parity", parity)
    extra = "qat: {epochs: 1, calibration_batches: 2, sensitivity: true, sensitivity_images: 64}\nexport: {parity_batch: 16}\n"
    path = tiny_pipeline(distill_epochs=1, extra=extra)
    run_dir = tmp_path / "run"
    manifest = Runner(load_pipeline(path), [TeacherStage(), DistillStage(), qat_stage.QatStage()], run_dir).run()
    qat = manifest.stage("qat").to_dict()
    assert qat["status"] == "done"
    ptq = qat["metrics"]["artifacts"]["student_ptq_onnx"]
    assert ptq["status"] == "failed" and "top-1 agreement 50.0%" in ptq["reason"]
    assert "student_ptq_onnx" not in qat["artifacts"]
    # QAT distils with the distill stage's teacher cache instead of building a second one
    assert qat["metrics"]["teacher_cache"].startswith("reused (distill/teacher_cache.pt")
    assert not (run_dir / "qat" / "teacher_cache.pt").exists()
    assert 0.0 <= qat["metrics"]["artifacts"]["student_qat_onnx"]["agreement_vs_fp32"] <= 100.0
    layout = inspect_qdq(run_dir / qat["artifacts"]["student_qat_onnx"]["path"])
    assert layout.quantized_layers == 10 and layout.residual_adds == 3
    sens = qat["metrics"]["sensitivity"]
    assert sens["split"] == "train" and sens["images"] == 64
    assert len(sens["layers"]) == 10
    gains = [row["top1"] for row in sens["layers"]]
    assert gains == sorted(gains, reverse=True)
