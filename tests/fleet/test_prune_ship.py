"""`student.prune.target.device: <device>` over a real sshd: each pruning step's candidate is shipped to the
device-like venv (no torch, no onnxruntime, old numpy), built there by the TensorRT stand-in and timed; each step's
record names the device, the row it was judged on and the stand-in as what ran it, never TensorRT; the stage's key
covers the TensorRT release the device reports. The stand-in's timings prove the flow, never a figure: nothing
here depends on how fast it runs."""

from __future__ import annotations

import json

import pytest
import yaml
from fleet_helpers import device_python

from edgekd.config import TensorRTConfig, load_pipeline
from edgekd.errors import EdgekdError
from edgekd.pipeline import Runner
from edgekd.report.layout import pruning_blocks
from edgekd.report.model import RunSection
from edgekd.run_records import prune_steps
from edgekd.rundir import RunDir
from edgekd.stages.prune import PruneStage
from edgekd.stages.teacher import TeacherStage

pytest.importorskip("torch_pruning")

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.tensorrt, pytest.mark.usefixtures("engine_cache_dir")]

STANDIN = "tensorrt-standin 8.5.2-standin"


def _pipeline(tiny_pipeline, target: str, name: str):
    path = tiny_pipeline(distill_epochs=1, limit_train=128, name=name)
    prune = f"{{target: {target}, steps: 1, round_to: 2, recover_epochs: 0}}"
    path.write_text(path.read_text().replace("student:\n  model: resnet8\n", f"student:\n  prune: {prune}\n"))
    return path


def _devices(sshd, device_venv, tmp_path, release: str):
    python = device_python(tmp_path / f"py-{release}", device_venv, release)
    device = sshd.device(tmp_path / "remote", python, ["tensorrt"], name="orin")
    device.tensorrt = TensorRTConfig(precisions=["fp16"], opt_batch=1, max_batch=1)
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": {"orin": device.model_dump(mode="json")}}))
    return path


def test_each_step_is_timed_on_the_device_and_its_record_names_the_device_row_and_the_standin(
    sshd, device_venv, tiny_pipeline, tmp_path
):
    devices = _devices(sshd, device_venv, tmp_path, "8.5.2")
    run = RunDir(tmp_path / "run")
    stages = [TeacherStage(), PruneStage()]

    # a latency target any device meets: the teacher's own figure, taken on the device, already meets it
    loose = _pipeline(tiny_pipeline, f"{{latency_ms: 1000000, device: orin, devices_file: {devices}}}", "l.yaml")
    with pytest.raises(EdgekdError) as failed:
        Runner(load_pipeline(loose), stages, run.root).run()
    message = str(failed.value)
    assert "\n" not in message and message.startswith("student.prune.target.latency_ms: the unpruned teacher")
    assert f"on orin ({STANDIN} fp16) (<= 1e+06)" in message, message

    # a size target, every step timed on the device: the records say where, as what and what ran it
    sized = _pipeline(tiny_pipeline, f"{{macs: 0.8, device: orin, devices_file: {devices}}}", "s.yaml")
    m = Runner(load_pipeline(sized), stages, run.root).run()
    steps = prune_steps(m.stage("prune").metrics)
    assert [s.step for s in steps] == [0, 1] and steps[1].met_target and steps[1].macs_share <= 0.8
    for s in steps:
        assert (s.device, s.artifact, s.precision, s.runtime) == ("orin", "onnx_file_trt_fp16", "fp16", STANDIN)
        assert s.latency_ms > 0 and s.latency_spread is not None
    bench = json.loads((run.prune_device_dir("orin") / "bench" / "orin.json").read_text())
    rows = [(a["name"], a["id"], a["status"], a["runtime"]["name"]) for a in bench["artifacts"]]
    # step 1's candidate shipped with the teacher's file, both timed in the same rounds there
    assert sorted(rows) == [(f"step{k}", "onnx_file_trt_fp16", "done", "tensorrt-standin") for k in (0, 1)], rows
    assert steps[1].teacher_ms > 0 and steps[1].of_teacher == steps[1].latency_ms / steps[1].teacher_ms
    assert not (run.root / "bench").exists()  # the run's own bench files are never the steps'

    text = " ".join(str(b) for b in pruning_blocks(RunSection("run", str(run.root), pruning=steps), ""))
    assert f"orin: {STANDIN} fp16" in text and "timed at batch 1 on orin" in text
    assert "tests' TensorRT stand-in (`tensorrt-standin`" in text and "TensorRT fp16" not in text

    # the key covers the TensorRT release the device reports: the same device on another release prunes again
    assert {e.stage: e.action for e in Runner(load_pipeline(sized), stages, run.root).plan()}["prune"] == "cached"
    _devices(sshd, device_venv, tmp_path, "10.3.0")
    plan = {e.stage: (e.action, e.why) for e in Runner(load_pipeline(sized), stages, run.root).plan()}
    assert plan["prune"] == ("run", "this machine changed") and plan["teacher"][0] == "cached"
