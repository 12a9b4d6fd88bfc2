"""`edgekd bench FILE.onnx` on this machine: a torchvision model exported with plain torch.onnx.export, timed through
the CLI with the benchmark's harness; its record, its report, the rows a precision cannot have, and the one-line
errors of a file or device that is not there."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.records import BENCH_SCHEMA, BenchDoc

pytestmark = pytest.mark.slow


def export(model: torch.nn.Module, path: Path, dynamic: dict | None = None, side: int = 32) -> Path:
    """`model` (random weights) written by plain torch.onnx.export, as a user outside edgekd would."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.randn(1, 3, side, side),),
            str(path),
            input_names=["pixels"],
            output_names=["scores"],
            dynamic_axes=dynamic,
            dynamo=False,
        )
    return path


@pytest.fixture(scope="session")
def mobilenet(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    folder = tmp_path_factory.mktemp("given")
    return export(model, folder / "mobilenet_v3_small.onnx", {"pixels": {0: "batch"}, "scores": {0: "batch"}})


@pytest.fixture(scope="session")
def tiny_fixed(tmp_path_factory) -> Path:
    """A small CNN exported with its batch fixed at 1 (torch.onnx.export's default)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )
    return export(model, tmp_path_factory.mktemp("fixed") / "tiny.onnx")


def cli(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def read_bench(out: Path, device: str = "local") -> BenchDoc:
    return BenchDoc.from_dict(json.loads((out / "bench" / f"{device}.json").read_text()))


def test_a_torchvision_file_is_timed_with_the_harness_and_reported(mobilenet, tmp_path):
    out = tmp_path / "out"
    result = cli("bench", mobilenet, "--batch", "1,2", "--precision", "fp32,fp16,int8", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report' / 'report.md'}" in result.output and "Accuracy is not measured" in result.output

    doc = read_bench(out)
    assert (doc.schema, doc.device, doc.kind, doc.reference) == (BENCH_SCHEMA, "local", "host", "onnx_file")
    assert doc.settings["batch_sizes"] == [1, 2] and doc.settings["order"].startswith("interleaved rounds")
    fp32, fp16, int8 = doc.artifacts
    assert [a.key for a in doc.artifacts] == [
        f"mobilenet_v3_small/{i}" for i in ("onnx_file", "onnx_file_fp16", "onnx_file_int8")
    ]
    assert fp32.status == "done" and fp32.path == "models/mobilenet_v3_small.onnx"
    assert fp32.sha256 == sha256_file(mobilenet) == sha256_file(out / fp32.path)  # the file as given, copied
    assert fp32.runtime.name == "onnxruntime" and fp32.accuracy is None  # no labels: nothing scored
    assert [lat.batch_size for lat in fp32.latency] == [1, 2]
    for lat in fp32.latency:  # the harness's figures and stability marks
        assert 0 < lat.min_ms <= lat.p50_ms <= lat.p99_ms and len(lat.round_p50_ms) == 3 and lat.runs >= 90
        assert lat.stable == (lat.unstable is None) and lat.others_cores is not None
    assert fp16.status == "skipped" and "the file is fp32" in fp16.reason and "--device" in fp16.reason
    assert int8.status == "skipped" and "no QuantizeLinear nodes" in int8.reason and "--calib" in int8.reason

    report = (out / "report" / "report.md").read_text()
    assert "| `mobilenet_v3_small` | mobilenet_v3_small.onnx | Nx3x32x32 | fp32 |" in report
    assert report.count("| `mobilenet_v3_small` | onnx_file | onnxruntime ") == 2  # batch 1 and 2
    assert "- SKIPPED: `mobilenet_v3_small/onnx_file_fp16`: the file is fp32" in report
    assert "- SKIPPED: `mobilenet_v3_small/onnx_file_int8`: the file has no QuantizeLinear" in report
    assert "Accuracy is not measured" in report and "Measured under: 3 interleaved round(s)" in report


def test_a_qdq_file_gets_an_int8_row_and_a_fixed_batch_is_noted(tiny_fixed, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class One(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"pixels": np.random.default_rng(0).standard_normal((1, 3, 32, 32), np.float32)}])

        def get_next(self):
            return next(self.feeds, None)

    qdq = tmp_path / "tiny_qdq.onnx"
    quantize_static(str(tiny_fixed), str(qdq), One(), quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8)
    out = tmp_path / "out"
    result = cli("bench", qdq, "--batch", "1,4", "--out", out)
    assert result.exit_code == 0, result.output
    (int8,) = read_bench(out).artifacts  # by default: what the file is
    assert (int8.key, int8.status, int8.path) == ("tiny_qdq/onnx_file_int8", "done", "models/tiny_qdq_int8_qdq.onnx")
    assert [lat.batch_size for lat in int8.latency] == [1]
    assert int8.note == "not timed at batch 4: the file fixes batch 1"
    assert "| `tiny_qdq` | tiny_qdq.onnx | 1x3x32x32 | int8 |" in (out / "report" / "report.md").read_text()
    assert "- NOTE: `tiny_qdq/onnx_file_int8`: not timed at batch 4" in (out / "report" / "report.md").read_text()


def test_calibration_images_make_a_qdq_copy_that_is_timed(tiny_fixed, tmp_path):
    """--calib with a folder of images: resized, scaled, normalised (ImageNet's by default for 3 channels), and
    ONNX Runtime's static quantization makes the int8 Q/DQ copy, timed beside the file."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    out = tmp_path / "out"
    result = cli("bench", tiny_fixed, "--batch", "1", "--calib", folder, "--out", out)
    assert result.exit_code == 0, result.output
    fp32, int8 = read_bench(out).artifacts
    assert (fp32.status, int8.status) == ("done", "done") and int8.path == "models/tiny_int8_qdq.onnx"
    assert b"QuantizeLinear" in (out / int8.path).read_bytes()
    report = (out / "report" / "report.md").read_text()
    assert "calibrated on 3 images from images/ (resized to 32x32, scaled to [0, 1], normalised with mean" in report


@pytest.mark.parametrize(
    "args, says",
    [
        (["missing.onnx"], "missing.onnx: file not found; give an .onnx file"),
        (["notes.txt"], "notes.txt: not an ONNX model ("),
        (["{model}", "--device", "xavier", "--devices", "{devices}"], "no device named 'xavier'; defined devices: jet"),
        (["{dynamic}"], "input 'pixels' has a dynamic axis 2 (batchx3xheightxwidth); export it with a fixed shape"),
        (["{model}", "--precision", "fp8"], "--precision fp8: expected one or more of fp32, fp16, int8"),
        (["{model}", "--calib", "{model}"], "not a folder of images or an .npz file"),
    ],
    ids=["missing", "not-onnx", "unknown-device", "dynamic-height", "bad-precision", "bad-calib"],
)
def test_what_cannot_be_benchmarked_is_one_line_exit_2(mobilenet, tmp_path, monkeypatch, args, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "devices.yaml").write_text("devices:\n  jet:\n    host: 192.0.2.1\n    kind: jetson-orin\n")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    dynamic = {"pixels": {0: "batch", 2: "height", 3: "width"}}
    places = {"model": mobilenet, "devices": tmp_path / "devices.yaml"}
    if "{dynamic}" in args:
        places["dynamic"] = export(net, tmp_path / "dynamic.onnx", dynamic)
    result = cli("bench", *(a.format(**places) for a in args))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.output
    assert not (tmp_path / "bench-mobilenet_v3_small").exists()


def test_a_device_that_can_build_none_of_the_asked_precisions_says_why_before_connecting(tiny_fixed, tmp_path):
    """Every precision a device cannot have is named with its reason (here before any SSH: nothing would run)."""
    from edgekd.config import DeviceConfig, TensorRTConfig
    from edgekd.errors import EdgekdError
    from edgekd.fleet.files import prepare_files, time_files

    device = DeviceConfig(
        host="192.0.2.1",
        kind="jetson-agx-xavier",
        tensorrt=TensorRTConfig(precisions=["fp16"], dla_core=0, static_shapes=True, opt_batch=1),
    )
    device.name = "xavier-dla"
    given = prepare_files({"tiny": tiny_fixed}, tmp_path / "out")
    with pytest.raises(EdgekdError) as e:
        time_files(given, tmp_path / "out", device, ["fp32", "int8"])
    message = str(e.value)
    assert message.startswith("nothing to time on device 'xavier-dla': tiny/onnx_file_trt_fp32: DLA runs fp16 or int8")
    assert "tiny/onnx_file_trt_int8: int8 on the DLA is calibrated from an fp32 ONNX on the device" in message
