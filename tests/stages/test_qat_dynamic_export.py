"""qat, dynamic_quant and export stages on the tiny digits pipeline: artifacts, parity and accuracy recorded."""

import onnx
import pytest
import torch

from edgekd.config import load_pipeline
from edgekd.export import read_metadata
from edgekd.models import build_model
from edgekd.ondevice.calibrate import load_calibration_set
from edgekd.pipeline import Runner
from edgekd.quant import check_qdq, quantizable_copy
from edgekd.stages.distill import DistillStage
from edgekd.stages.dynamic_quant import DynamicQuantStage
from edgekd.stages.export import ExportStage
from edgekd.stages.qat import QatStage
from edgekd.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow

STAGES = [TeacherStage(), DistillStage(), QatStage(), DynamicQuantStage(), ExportStage()]


def test_quantize_and_export_the_distilled_student(tiny_pipeline, tmp_path, one_thread):
    run_dir = tmp_path / "run"
    path = tiny_pipeline(
        distill_epochs=1, extra="qat: {epochs: 1, calibration_batches: 2}\nexport: {parity_batch: 16}\n"
    )
    manifest = Runner(load_pipeline(path), STAGES, run_dir).run()
    status = {name: manifest.stage(name).to_dict()["status"] for name in ("qat", "dynamic_quant", "export")}
    assert status == {"qat": "done", "dynamic_quant": "done", "export": "done"}

    qat = manifest.stage("qat").to_dict()
    for name in ("student_qat_onnx", "student_ptq_onnx"):
        onnx_path = run_dir / qat["artifacts"][name]["path"]
        assert check_qdq(onnx_path) == 10  # 9 convolutions and the fc of resnet8
        record = qat["metrics"]["artifacts"][name]
        assert 0 <= record["val_top1"] <= 100 and record["parity"]["top1_agreement"] >= 0.97
    saved = torch.load(run_dir / qat["artifacts"]["student_qat"]["path"], weights_only=True)
    quantizable_copy(build_model("resnet8", 10, 1)).load_state_dict(saved["state_dict"])  # reloads exactly

    dyn = manifest.stage("dynamic_quant").to_dict()["metrics"]["artifacts"]
    assert dyn["student_dynamic_int8_ts"]["layers"] == ["fc"] and dyn["student_dynamic_int8_onnx"]["status"] == "done"
    for name in ("student_dynamic_int8_ts", "student_dynamic_int8_onnx"):  # scored at each benchmark batch size
        by_batch = {int(bs): top1 for bs, top1 in dyn[name]["val_top1_by_batch"].items()}
        assert set(by_batch) == {1} and 0 <= by_batch[1] <= 100 and dyn[name]["val_top1_batch"] == 256

    export = manifest.stage("export").to_dict()
    fp16 = {"student_onnx_fp16", "teacher_onnx_fp16"}
    exported = {"student_ts", "student_onnx", "teacher_ts", "teacher_onnx", *fp16}
    assert set(export["artifacts"]) == {*exported, "calib_set"}  # before the tensorrt stage builds int8 engines
    calib = load_calibration_set(str(run_dir / export["artifacts"]["calib_set"]["path"]))
    dims = onnx.load(str(run_dir / "export" / "student.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert calib.shape[1:] == tuple(d.dim_value for d in dims[1:])  # training images the engines' input takes
    for name, record in export["metrics"]["artifacts"].items():
        assert record["parity"]["max_abs_diff"] < (0.05 if name in fp16 else 1e-3), name  # fp16: vs the fp32 ONNX
        assert record["parity"]["top1_agreement"] == 1.0
    assert export["metrics"]["artifacts"]["student_onnx_fp16"]["val_top1"] == pytest.approx(
        export["metrics"]["artifacts"]["student_onnx"]["val_top1"], abs=1.1
    )
    assert export["metrics"]["artifacts"]["student_onnx"]["val_top1"] == pytest.approx(
        manifest.stage("distill").to_dict()["metrics"]["val_top1"], abs=1.1
    )
    student_onnx = run_dir / export["artifacts"]["student_onnx"]["path"]
    assert read_metadata(student_onnx)["class_names"] == [str(i) for i in range(10)]
    assert {o.domain: o.version for o in onnx.load(str(student_onnx)).opset_import}[""] == 17

    again = Runner(load_pipeline(path), STAGES, run_dir).plan()
    assert [e.action for e in again] == ["cached"] * 5
