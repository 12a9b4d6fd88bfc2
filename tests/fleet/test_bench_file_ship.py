"""`edgekd bench FILE.onnx --device NAME` over a real sshd: a bundle with just that file (and what edgekd makes from
it), engines built on the device by the TensorRT stand-in in the device-like venv (no torch, no onnxruntime, old
numpy), the file timed in ONNX Runtime on a device that has it, the record brought back, checked and reported; a
second bench takes its engines from the device's engine cache, and the host's engine cache keeps them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from fleet_helpers import device_python
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import TensorRTConfig
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.records import BenchDoc

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.usefixtures("engine_cache_dir")]


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory) -> Path:
    """torchvision's mobilenet_v3_small (random weights, 10 classes) exported at 32x32 by plain torch.onnx.export."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("given") / "mobilenet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torchvision.models.mobilenet_v3_small(num_classes=10).eval(),
            (torch.randn(1, 3, 32, 32),),
            str(path),
            dynamic_axes={"input": {0: "batch"}},
            input_names=["input"],
            dynamo=False,
        )
    return path


def devices_yaml(path: Path, device) -> Path:
    """A devices.yaml holding `device` (what a user would write for it)."""
    path.write_text(yaml.safe_dump({"devices": {device.name: device.model_dump(mode="json")}}))
    return path


def bench(*args) -> BenchDoc:
    result = CliRunner().invoke(app, ["bench", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.tensorrt
def test_a_file_is_built_and_timed_on_a_tensorrt_device(sshd, device_venv, mobilenet, tmp_path):
    python = device_python(tmp_path / "py", device_venv, "10.3.0")  # strongly typed: fp16 from the fp16 twin
    device = sshd.device(tmp_path / "remote", python, ["tensorrt"], name="orin")
    device.tensorrt = TensorRTConfig(precisions=["fp16"], opt_batch=4, max_batch=8)
    devices = devices_yaml(tmp_path / "devices.yaml", device)
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "out"
    args = [mobilenet, "--device", "orin", "--devices", devices, "--batch", "1,4", "--calib", calib, "--out", out]
    result = bench(*args, "--precision", "fp32,fp16,int8")

    doc = BenchDoc.from_dict(json.loads((out / "bench" / "orin.json").read_text()))
    assert (
        doc.device == "orin"
        and doc.reference == "onnx_file"
        and doc.system["libraries"]["tensorrt"] == "10.3.0-standin"
    )
    by_key = {a.key: a for a in doc.artifacts}
    engines = [f"mobilenet/onnx_file_trt_{p}" for p in ("fp32", "fp16", "int8")]
    assert list(by_key) == engines  # the device has no onnxruntime: engines only
    for key in engines:
        rec = by_key[key]
        assert rec.status == "done", (key, rec.reason)
        assert rec.runtime.name == "tensorrt-standin" and rec.accuracy is None
        assert [lat.batch_size for lat in rec.latency] == [1, 4] and all(lat.gpu_compute_ms for lat in rec.latency)
        engine = out / rec.path
        assert engine.parent == out / "tensorrt" / "orin" and engine.is_file() and rec.sha256 == sha256_file(engine)
        sidecar = json.loads(engine.with_suffix(".json").read_text())
        assert sidecar["precision"] == key.rsplit("_", 1)[1] and sidecar["tensorrt"] == "10.3.0-standin"
    assert json.loads((out / "tensorrt" / "orin" / "mobilenet_trt_fp16.json").read_text())["source_onnx"] == (
        "mobilenet_fp16.onnx"  # TensorRT 10 builds fp16 strongly typed from the fp16 twin edgekd made
    )
    assert json.loads((out / "tensorrt" / "orin" / "mobilenet_trt_int8.json").read_text())["source_onnx"] == (
        "mobilenet_int8_qdq.onnx"  # from the Q/DQ copy calibrated on --calib
    )
    assert (out / "tensorrt" / "orin" / "ship.json").is_file()  # what the ship machinery records
    assert len(list((tmp_path / "host-cache" / "engines").glob("*.engine"))) == 3  # kept in the host's engine cache
    report = (out / "report" / "report.md").read_text()
    assert "## orin (" in report and report.count("| `mobilenet` | onnx_file_trt_") == 6
    assert "tensorrt-standin 10.3.0-standin" in report and "bench: " in result.output

    bench(*args)  # the device's own precisions (fp16), again: the engine comes from the device's cache
    log = (out / "tensorrt" / "orin" / "bench.log").read_text()
    assert "building" not in log and "mobilenet_trt_fp16: engine from the cache" in log
    (again,) = BenchDoc.from_dict(json.loads((out / "bench" / "orin.json").read_text())).artifacts
    assert (again.key, again.status) == ("mobilenet/onnx_file_trt_fp16", "done")


def test_a_file_is_timed_in_onnxruntime_on_a_device(sshd, isolated_python, mobilenet, tmp_path):
    """A device with ONNX Runtime (and no TensorRT backend) times the shipped copy; asked precisions it cannot run are
    listed with their reasons; the device's figures come back beside this machine's in one report."""
    device = sshd.device(tmp_path / "remote", isolated_python, ["onnxruntime"], name="cpu-box")
    devices = devices_yaml(tmp_path / "devices.yaml", device)
    out = tmp_path / "out"
    bench(
        mobilenet,
        "--device",
        "local",
        "--device",
        "cpu-box",
        "--devices",
        devices,
        "--batch",
        "2",
        "--precision",
        "fp32,int8",
        "--out",
        out,
    )
    doc = BenchDoc.from_dict(json.loads((out / "bench" / "cpu-box.json").read_text()))
    ort, int8 = doc.artifacts
    assert (ort.key, ort.status, ort.runtime.name) == ("mobilenet/onnx_file", "done", "onnxruntime")
    assert ort.sha256 == sha256_file(mobilenet) and [lat.batch_size for lat in ort.latency] == [2]
    assert int8.status == "skipped" and "no QuantizeLinear nodes" in int8.reason
    report = (out / "report" / "report.md").read_text()
    assert "## local (" in report and "## cpu-box (" in report and "- SKIPPED: `mobilenet/onnx_file_int8`" in report
