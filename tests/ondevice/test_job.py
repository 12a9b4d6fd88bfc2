"""The typed device job: what the bundle writes is what the device reads back, and defaults are the bench's own."""

import json

import pytest

from edgekd.ondevice import measure, trt_options
from edgekd.ondevice.job import (
    JOB_SCHEMA,
    EngineEntry,
    Job,
    JobDevice,
    JobError,
    JobSettings,
    OnnxEntry,
    TensorRTOptions,
)

SHA = "a" * 64


def full_job() -> Job:
    return Job(
        device=JobDevice("xav", "jetson-agx-xavier", record_power_mode=False, lock_clocks=True),
        val="bench/val.npz",
        calibration="bench/calib.npz",
        settings=JobSettings([1, 8], 2, 5, 0.5, 3, 4),
        ort_providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        tensorrt=TensorRTOptions(dla_core=0, static_shapes=True, workspace_mb=256),
        onnx=[OnnxEntry("student_onnx", "export/student.onnx")],
        engines=[
            EngineEntry("student_trt_fp16", "fp16", "export/student.onnx", SHA, "export/student_fp16.onnx", "b" * 64),
            EngineEntry("student_trt_int8", "int8", "export/student.onnx", SHA, prebuilt="engines/s.engine"),
        ],
    )


def test_a_job_reads_back_as_itself(tmp_path):
    job = full_job()
    doc = json.loads(job.to_json())
    assert doc["schema"] == JOB_SCHEMA
    assert Job.from_dict(doc, str(tmp_path)) == job == Job.from_dict(doc, None)
    assert Job.from_dict(doc, None).to_json() == job.to_json()
    assert "fp16_onnx" not in doc["engines"][1] and doc["engines"][1]["prebuilt"] == "engines/s.engine"


def test_left_out_fields_take_the_bench_and_build_defaults(tmp_path):
    job = Job.from_dict({"schema": JOB_SCHEMA, "device": {"name": "d", "kind": "k"}, "val": "v.npz"}, str(tmp_path))
    assert job.device.record_power_mode is True and job.device.lock_clocks is False
    assert measure.Settings.from_dict(job.settings.to_dict()) == measure.Settings()
    assert job.tensorrt.build_options("fp16").as_dict() == trt_options.BuildOptions("fp16").as_dict()
    assert job.ort_providers == ["CPUExecutionProvider"] and job.onnx == [] and job.engines == []


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda d: d["settings"].update(min_seconds=float("inf")), "settings.min_seconds is inf"),
        (lambda d: d["settings"].update(min_seconds=float("nan")), "settings.min_seconds is nan"),
        (lambda d: d["settings"].update(warmup=-1), "settings.warmup is -1"),
        (lambda d: d["tensorrt"].update(max_batch=2**40), "tensorrt.max_batch is 1099511627776"),
        (lambda d: d["engines"][0].update(fp16_onnx_sha256=None), "engines[0].fp16_onnx_sha256 is None"),
        (lambda d: d["engines"][1].update(id="student_onnx"), "engines[1].id is 'student_onnx'"),
        (lambda d: d["onnx"][0].update(id="x" * 500), "onnx[0].id is 'xxxxxxx"),  # shortened in the message
        (lambda d: d.update(device=[[[[[[[[[[[[1]]]]]]]]]]]]), "device is [[[[[[[...]]]]]]]"),
    ],
    ids=["inf", "nan", "negative", "huge", "fp16-sha-missing", "onnx-id-as-engine", "long", "deep"],
)
def test_bad_fields_are_named_in_one_short_line(change, says):
    doc = json.loads(full_job().to_json())
    change(doc)
    with pytest.raises(JobError) as e:
        Job.from_dict(doc, None)
    message = str(e.value)
    assert message.startswith("job.json: ") and says in message and "\n" not in message and len(message) < 300


def test_a_missing_job_file_is_a_job_error(tmp_path):
    with pytest.raises(JobError, match="cannot read the job file"):
        Job.read(str(tmp_path / "job.json"))
