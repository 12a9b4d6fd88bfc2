"""`edgekd scout PIPELINE --device NAME` over a real sshd: the candidates shipped in one bundle to the device-like
venv (no torch, no onnxruntime, old numpy), engines built there by the TensorRT stand-in at the device's
tensorrt.precisions (int8 from Q/DQ copies calibrated on random images), each candidate judged on its fastest
engine as the report judges a device's deployable artifacts, labelled as the stand-in; a rerun is served from the
scout's cache."""

from __future__ import annotations

import json

import pytest
import yaml
from fleet_helpers import device_python
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import TensorRTConfig
from edgekd.run_records import ScoutTable
from edgekd.rundir import RunDir

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.tensorrt, pytest.mark.usefixtures("engine_cache_dir")]

CANDIDATES = ["resnet8", "prune/0.5", "squeezenet1_1"]  # squeezenet's pooling needs more than 16x16: it fails


def scout(*args):
    result = CliRunner().invoke(app, ["scout", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
    return result


def test_candidates_are_timed_as_engines_on_the_device_and_a_rerun_is_cached(
    sshd, device_venv, tiny_pipeline, tmp_path
):
    python = device_python(tmp_path / "py", device_venv, "8.5.2")
    device = sshd.device(tmp_path / "remote", python, ["tensorrt"], name="orin")
    device.tensorrt = TensorRTConfig(precisions=["fp16", "int8"], opt_batch=1, max_batch=1)
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"devices": {"orin": device.model_dump(mode="json")}}))
    pipeline = tiny_pipeline()  # 16x16 digits, teacher resnet8
    pipeline.write_text(
        pipeline.read_text().replace("  repeats: 1\n", "  repeats: 1\n  budget:\n    latency_ms: {orin: 1000}\n")
        + f"scout:\n  candidates: {json.dumps(CANDIDATES)}\n"
    )
    run = RunDir(tmp_path / "run")
    args = [pipeline, "--device", "orin", "--devices", devices, "--run-dir", run.root]

    first = scout(*args)
    table = ScoutTable.from_dict(json.loads(run.scout_table("orin").read_text()))
    assert table.device == "orin" and table.batch_size == 1
    assert table.runtime == "tensorrt-standin 8.5.2-standin"  # the stand-in's figures, never TensorRT's
    assert "scout · orin · tensorrt-standin" in first.output
    ok, pruned, bad = table.entries
    for entry in (ok, pruned):
        assert entry.status == "done" and entry.p50_ms > 0 and entry.within_budget and not entry.cached
        assert entry.artifact in ("onnx_file_trt_fp16", "onnx_file_trt_int8")  # the fastest engine is judged
        assert entry.runtime == "tensorrt-standin 8.5.2-standin" and entry.macs and entry.params
    assert bad.status == "failed" and "Output size is too small" in bad.reason, bad.reason  # kept, with its reason
    assert table.settings["warmup"] == 1 and table.settings["repeats"] == 1  # the device's benchmark settings

    shipped = run.scout_device_dir("orin")  # its own folder: the run's bench/ stays the run's
    bench = json.loads((shipped / "bench" / "orin.json").read_text())
    rows = sorted((a["name"], a["id"], a["status"]) for a in bench["artifacts"])
    assert rows == [
        (name, f"onnx_file_trt_{p}", "done") for name in ("prune-0.5", "resnet8") for p in ("fp16", "int8")
    ], rows
    assert not (run.root / "bench").exists()
    assert len(list((tmp_path / "host-cache" / "engines").glob("*.engine"))) == 4  # the host's engine cache
    log = (shipped / "tensorrt" / "orin" / "bench.log").read_text()
    assert "building" in log

    scout(*args)  # again: every figure from the cache, nothing shipped
    again = ScoutTable.from_dict(json.loads(run.scout_table("orin").read_text()))
    timed = [e for e in again.entries if e.status == "done"]
    assert [e.candidate for e in timed] == ["resnet8", "prune/0.5"] and all(e.cached for e in timed)
    assert [e.latency for e in timed] == [ok.latency, pruned.latency]
    assert again.runtime == table.runtime
    assert (shipped / "tensorrt" / "orin" / "bench.log").read_text() == log  # no bench ran on the device
