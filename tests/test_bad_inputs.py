"""Bad inputs and the one-line error each must give: exit code 2, `error: ...` naming the field/file/layer, no traceback.

Cheap commands (`validate`, `devices list`) run as real `python -m edgekd.cli` subprocesses; `run` cases, which
need torch (seconds to import), go through the same Typer app in-process (typer's CliRunner), or through the
library where only a library call reaches the input.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from edgekd.bench.benchmark import Planned, benchmark_artifacts
from edgekd.cli import app
from edgekd.errors import EdgekdError
from edgekd.models import build_model
from edgekd.ondevice.measure import Settings
from edgekd.runtimes import runtime_for

BASE = {
    "name": "bad",
    "data": {"dataset": "digits", "image_size": 16, "batch_size": 32, "limit_train": 64, "limit_val": 32},
    "teacher": {"model": "resnet8", "epochs": 1},
    "student": {"model": "resnet8"},
    "distill": {"epochs": 1, "features": [{"teacher": "layer2", "student": "layer2"}], "augment": {"hflip": False}},
    "export": {"opset": 17},
    "qat": {"epochs": 1},
    "tensorrt": {"enabled": False},
    "benchmark": {"budget": {"max_drop_vs_teacher": 3.0}},
}


def _pipeline(tmp_path: Path, *edits: tuple[tuple, object], name: str = "p.yaml") -> Path:
    """BASE with each (key path, value) set (value None for a path's last key deletes it), written as YAML."""
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in edits:
        node = doc
        for key in path[:-1]:
            node = node[key]
        if value is None and isinstance(node, dict):
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    out = tmp_path / name
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _check_error(code: int, stderr: str, stdout: str, *fragments: str) -> str:
    """Exit 2, exactly one non-empty stderr line `error: ...` holding every fragment, no traceback anywhere."""
    assert "Traceback" not in stderr + stdout, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert code == 2, f"exit {code}: {stderr}"
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *args], capture_output=True, text=True, timeout=timeout)


def cli_error(*args: str, fragments: tuple[str, ...] = (), timeout: float = 120) -> str:
    proc = cli(*args, timeout=timeout)
    return _check_error(proc.returncode, proc.stderr, proc.stdout, *fragments)


def inproc_error(*args: str, fragments: tuple[str, ...] = ()) -> str:
    """The CLI in this process: same app, same error path, without paying torch's import per case."""
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return _check_error(result.exit_code, result.stderr, result.stdout, *fragments)


# --------------------------------------------------------------------------- pipeline.yaml


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ndata: {dataset: digits\nteacher:\n  model: resnet8\n")
    cli_error("validate", str(bad), fragments=(f"{bad}:3: malformed YAML",))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("name: t\n\tdata: 1\n", ":2: malformed YAML: found character '\\t'"),
        ("", "expected a mapping of sections (name, data, teacher, student, ...), got an empty document"),
        ("- a\n- b\n", "got list"),
        (
            "name: t\nx: !!python/object/apply:os.system ['true']\n",
            ":2: malformed YAML: could not determine a constructor",
        ),
        (
            "name: t\nteacher: {model: resnet8}\nstudent: {model: resnet8}\nteacher: {model: resnet20}\n",
            ":4: duplicate key 'teacher' (first given on line 2)",
        ),
    ],
)
def test_unreadable_pipeline_documents(tmp_path, text, fragment):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    inproc_error("validate", str(path), fragments=(str(path), fragment))


def test_a_pipeline_file_of_50_mb_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + "# padding\n" * 5_000_000)
    inproc_error("validate", str(path), fragments=("big.yaml: the pipeline file holds 50000010 bytes", "refused"))


def test_missing_and_binary_pipeline_files(tmp_path):
    inproc_error("validate", str(tmp_path / "nope.yaml"), fragments=("nope.yaml: pipeline file not found",))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    inproc_error("validate", str(binary), fragments=("bin.yaml: cannot read the pipeline file", "utf-8"))


UNKNOWN_KEYS = [  # (path of the misspelt key, value, dotted name in the message, suggestion)
    (("nmae",), "x", "'nmae'", "did you mean 'name'?"),
    (("data", "imgsize"), 16, "'data.imgsize'", "did you mean 'image_size'?"),
    (("teacher", "epoch"), 1, "'teacher.epoch'", "did you mean 'epochs'?"),
    (("distill", "augment", "mixup"), 0.2, "'distill.augment.mixup'", "did you mean 'mixup_alpha'?"),
    (("distill", "features", 0, "wieght"), 1.0, "'distill.features.0.wieght'", "did you mean 'weight'?"),
    (("export", "opsett"), 17, "'export.opsett'", "did you mean 'opset'?"),
    (("qat", "epoch"), 1, "'qat.epoch'", "did you mean 'epochs'?"),
    (("tensorrt", "precision"), ["fp16"], "'tensorrt.precision'", "did you mean 'precisions'?"),
    (
        ("benchmark", "budget", "max_drop_vs_techer"),
        1,
        "'benchmark.budget.max_drop_vs_techer'",
        "did you mean 'max_drop_vs_teacher'?",
    ),
    (("phases",), 1, "'phases'", "valid keys here: baseline"),  # a top-level key that is also a schedule tag
]


@pytest.mark.parametrize(
    "path, value, dotted, hint", UNKNOWN_KEYS, ids=[".".join(map(str, c[0])) for c in UNKNOWN_KEYS]
)
def test_unknown_key_at_every_level(tmp_path, path, value, dotted, hint):
    p = _pipeline(tmp_path, (path, value))
    line = next(
        i
        for i, text in enumerate(p.read_text().splitlines(), 1)
        if text.strip().removeprefix("- ").startswith(f"{path[-1]}:")
    )
    inproc_error("validate", str(p), fragments=(f"{p}:{line}: unknown key {dotted}", hint, "valid keys here:"))


def test_unknown_key_through_the_real_cli(tmp_path):
    p = _pipeline(tmp_path, (("distill", "augment", "mixup"), 0.2))
    cli_error("validate", str(p), fragments=("unknown key 'distill.augment.mixup'", "did you mean 'mixup_alpha'?"))


def test_misspelt_required_key_reports_the_typo_not_the_missing_key(tmp_path):
    p = _pipeline(tmp_path, (("teacher",), {"modle": "resnet8"}))
    inproc_error(
        "validate", str(p), fragments=("unknown key 'teacher.modle'", "did you mean 'model'?", "(and 1 more error)")
    )


BAD_VALUES = [  # (path, value, fragments of the message)
    # issue 22: values that were taken silently or raised later
    (("benchmark", "device_name"), "../../../../elsewhere/x", ("benchmark.device_name: String should match pattern",)),
    (("benchmark", "device_name"), "/abs", ("benchmark.device_name: String should match pattern",)),
    (("benchmark", "device_name"), "x\n", ("benchmark.device_name: String should match pattern",)),
    (("name",), "..", ("name: String should match pattern",)),
    (("teacher", "epochs"), True, ("teacher.epochs: expected a number, got the boolean true",)),
    (("data", "num_workers"), 100000, ("data.num_workers: Input should be less than or equal to 256",)),
    (("data", "eval_batch_size"), 1e12, ("data.eval_batch_size: Input should be less than or equal to 65536",)),
    (("benchmark", "batch_sizes"), [1e9], ("benchmark.batch_sizes.0: Input should be less than or equal to 4096",)),
    (("distill", "lr"), float("inf"), ("distill.lr: Input should be a finite number",)),
    (("seed",), 2**70, ("seed: Input should be less than or equal to 4294967295",)),
    (("data", "image_size"), "big", ("data.image_size: Input should be a valid integer", "(got 'big')")),
    (("teacher", "epochs"), [1], ("teacher.epochs: Input should be a valid integer",)),
    (("distill", "features"), "layer2", ("distill.features: Input should be a valid list",)),
    (("teacher",), "resnet8", ("teacher: Input should be a valid dictionary",)),
    (("export", "onnx"), "maybe", ("export.onnx: Input should be a valid boolean",)),
    (("data", "image_size"), 4, ("data.image_size: Input should be greater than or equal to 8", "(got 4)")),
    (("distill", "lr"), -1, ("distill.lr: Input should be greater than 0",)),
    (("distill", "temperature"), 0, ("distill.temperature: temperature must be > 0",)),
    (("export", "opset"), 9, ("export.opset: Input should be greater than or equal to 13", "(got 9)")),
    (("data", "val_fraction"), 1.5, ("data.val_fraction: Input should be less than 1",)),
    (("data", "dataset"), "imagenet", ("data.dataset: Input should be 'digits'", "(got 'imagenet')")),
    (("tensorrt", "precisions"), ["int4"], ("tensorrt.precisions.0: Input should be 'fp32', 'fp16' or 'int8'",)),
    (("tensorrt", "min_batch"), 64, ("tensorrt: need 1 <= min_batch <= opt_batch <= max_batch",)),
    (
        ("benchmark", "budget", "max_drop_vs_teacher"),
        -2,
        ("benchmark.budget.max_drop_vs_teacher: Input should be greater than or equal to 0",),
    ),
    (("data", "mean"), [0.1, 0.2], ("data.mean needs 1 or 3 values, got 2",)),
    (("data", "dataset"), "imagefolder", ("data.root is required for dataset 'imagefolder'",)),
    (("distill", "temperature"), {"kind": "exp", "start": 1}, ("distill.temperature: Input tag 'exp'", "'linear'")),
    (
        ("distill", "soft_weight"),
        {"kind": "phases", "phases": [{"fraction": 0.5, "value": 1}]},
        ("distill.soft_weight: phase fractions must add up to 1, got 0.5",),
    ),
    (
        ("distill", "temperature"),
        {"kind": "linear", "start": 0, "end": 4},
        ("distill.temperature: every value of a temperature schedule must be > 0",),
    ),
]


@pytest.mark.parametrize(
    "path, value, fragments", BAD_VALUES, ids=[f"{'.'.join(map(str, c[0]))}={c[1]}" for c in BAD_VALUES]
)
def test_wrong_types_and_out_of_range_values(tmp_path, path, value, fragments):
    p = _pipeline(tmp_path, (path, value))
    message = inproc_error("validate", str(p), fragments=(str(p),) + fragments)
    assert "constrained-float" not in message and "tagged-union" not in message  # pydantic's internals stay hidden


def test_out_of_range_through_the_real_cli(tmp_path):
    p = _pipeline(tmp_path, (("export", "opset"), 9))
    cli_error("validate", str(p), fragments=("export.opset: Input should be greater than or equal to 13",))


# --------------------------------------------------------------------------- devices.yaml


DEVICE = {"host": "127.0.0.1", "kind": "jetson-agx-xavier"}
DEVICE_KEYS = [
    ({"devics": {}}, "unknown key 'devics'", "did you mean 'devices'?"),
    ({"devices": {"x": {**DEVICE, "hostname": "h"}}}, "unknown key 'devices.x.hostname'", "valid keys here:"),
    (
        {"devices": {"x": {"kind": "jetson", "hostname": "h"}}},
        "unknown key 'devices.x.hostname'",
        "did you mean 'host'?",
    ),
    (
        {"devices": {"x": {**DEVICE, "tensorrt": {"precison": ["fp16"]}}}},
        "unknown key 'devices.x.tensorrt.precison'",
        "did you mean 'precisions'?",
    ),
    (
        {"devices": {"x": {**DEVICE, "benchmark": {"warmpu": 1}}}},
        "unknown key 'devices.x.benchmark.warmpu'",
        "did you mean 'warmup'?",
    ),
    (
        {"devices": {"x": {**DEVICE, "port": 99999}}},
        "devices.x.port: Input should be less than or equal to 65535",
        "(got 99999)",
    ),
    (
        {"devices": {"x": {**DEVICE, "connect_timeout_s": "soon"}}},
        "devices.x.connect_timeout_s: Input should be a valid integer",
        "soon",
    ),
    ({"devices": {"x": [1, 2]}}, "devices.x: Input should be a valid dictionary", ""),
]


@pytest.mark.parametrize("doc, fragment, hint", DEVICE_KEYS, ids=[c[1].split(":")[0] for c in DEVICE_KEYS])
def test_devices_yaml_errors(tmp_path, doc, fragment, hint):
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump(doc))
    inproc_error("devices", "list", "--devices", str(path), fragments=(str(path), fragment, hint))


def test_devices_yaml_through_the_real_cli(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": {"x": {**DEVICE, "tensorrt": {"precison": ["fp16"]}}}}))
    cli_error(
        "devices", "list", "--devices", str(path), fragments=(f"{path}:", "unknown key 'devices.x.tensorrt.precison'")
    )
    path.write_text("devices:\n  x: {host: a\n")
    cli_error("devices", "list", "--devices", str(path), fragments=(f"{path}:3: malformed YAML",))
    cli_error(
        "devices", "list", "--devices", str(tmp_path / "none.yaml"), fragments=("none.yaml: devices file not found",)
    )


# --------------------------------------------------------------------------- data folders and images


def _image_folder(root: Path, classes=("a", "b"), per_class: int = 2) -> Path:
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (12, 12), (40 * i, 90, 0)).save(root / split / c / f"{i}.png")
    return root


def _folder_pipeline(tmp_path: Path, root: Path, num_workers: int = 0) -> Path:
    return _pipeline(
        tmp_path,
        (
            ("data",),
            {
                "dataset": "imagefolder",
                "root": str(root),
                "image_size": 16,
                "batch_size": 4,
                "num_workers": num_workers,
            },
        ),
        (("distill", "features"), []),
    )


def _run(tmp_path: Path, pipeline: Path, *more: str) -> list[str]:
    return ["run", str(pipeline), "--run-dir", str(tmp_path / "run"), *more]


@pytest.mark.parametrize(
    "layout, fragment",
    [
        ("missing", "images is not found; expected the folder holding the imagefolder data"),
        ("empty", "train is not found; expected train/<class>/<images> under"),
        ("no_classes", "train has no class folders"),
        ("no_images", "train/a has no usable image (2 empty class folders: a, b)"),
        ("class_mismatch", "train/ and val/ under"),
    ],
)
def test_missing_or_empty_image_folders(tmp_path, layout, fragment):
    root = tmp_path / "images"
    if layout != "missing":
        root.mkdir()
    if layout == "no_classes":
        (root / "train").mkdir()
        (root / "val").mkdir()
    if layout == "no_images":
        for split in ("train", "val"):
            for c in ("a", "b"):
                (root / split / c).mkdir(parents=True)
    if layout == "class_mismatch":
        _image_folder(root)
        (root / "val" / "c").mkdir()
        Image.new("RGB", (12, 12)).save(root / "val" / "c" / "0.png")
    msg = inproc_error(*_run(tmp_path, _folder_pipeline(tmp_path, root)), fragments=("data.root", fragment))
    assert str(root) in msg
    assert not (tmp_path / "run" / "teacher" / "model.pt").exists()


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_names_the_file(tmp_path, damage, num_workers):
    root = _image_folder(tmp_path / "images")
    good = (root / "train" / "a" / "0.png").read_bytes()
    bad = root / "train" / "b" / "broken.png"
    bad.write_bytes(b"not an image at all" if damage == "garbage" else good[: len(good) // 3])
    inproc_error(
        *_run(tmp_path, _folder_pipeline(tmp_path, root, num_workers)),
        fragments=(f"1 bad file under {root}: train/b/broken.png: ", "data.on_bad_image: skip"),
    )
    assert not (tmp_path / "run" / "teacher" / "model.pt").exists()  # found by the scan before any training


# --------------------------------------------------------------------------- checkpoints


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state(classes: int = 10, in_channels: int = 1, model: str = "resnet8") -> dict:
    torch.manual_seed(0)
    return build_model(model, classes, in_channels).state_dict()


def _teacher_ckpt(tmp_path: Path, path: Path) -> Path:
    return _pipeline(tmp_path, (("teacher", "checkpoint"), str(path)), (("distill", "features"), []))


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("garbage", ("refused to load: not a torch.save file of tensors and plain data",)),
        ("garbage_pickle", ("not a readable PyTorch checkpoint",)),
        ("truncated", ("not a readable PyTorch checkpoint", "failed reading zip archive")),
        ("empty", ("not a readable PyTorch checkpoint",)),
        ("list", ("expected a state_dict (a mapping of tensor names to tensors)",)),
        (
            "other_arch",
            (
                "tensor 'layer1.1.conv1.weight' in the checkpoint has no place in model CifarResNet",
                "is it a checkpoint of another architecture?",
            ),
        ),
        ("missing_tensor", ("tensor 'fc.bias' is missing from the checkpoint",)),
        (
            "channels",
            ("tensor 'conv1.weight' has shape (16, 3, 3, 3) in the checkpoint, the model needs (16, 1, 3, 3)",),
        ),
        (
            "classes",
            (
                "tensor 'fc.weight' has shape (100, 64) in the checkpoint, the model needs (10, 64)",
                "the checkpoint has 100 classes, the data has 10",
            ),
        ),
    ],
)
def test_bad_teacher_checkpoint(tmp_path, kind, fragments):
    path = tmp_path / "teacher.pt"
    if kind == "garbage":
        path.write_bytes(b"garbage" * 20)
    elif kind == "garbage_pickle":
        path.write_bytes(b"\x80garbage" * 20)  # a pickle protocol byte, then nonsense
    elif kind == "truncated":
        torch.save(_state(), path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "other_arch":
        torch.save(_state(model="resnet20"), path)
    elif kind == "missing_tensor":
        torch.save({k: v for k, v in _state().items() if k != "fc.bias"}, path)
    elif kind == "channels":
        torch.save(_state(in_channels=3), path)
    elif kind == "classes":
        torch.save(
            {"state_dict": {f"module.{k}": v for k, v in _state(classes=100).items()}}, path
        )  # DDP-style wrapper
    inproc_error(*_run(tmp_path, _teacher_ckpt(tmp_path, path)), fragments=(str(path),) + fragments)
    assert not (tmp_path / "run" / "teacher" / "model.pt").exists()


def test_missing_teacher_checkpoint(tmp_path):
    path = tmp_path / "nope.pt"
    inproc_error(
        *_run(tmp_path, _teacher_ckpt(tmp_path, path)),
        fragments=(f"teacher.checkpoint: {path}: a checkpoint file (.pt/.pth) not found",),
    )


def test_student_init_checkpoint_with_other_class_count(tmp_path):
    teacher = tmp_path / "teacher.pt"
    torch.save(_state(), teacher)
    student = tmp_path / "student.pt"
    torch.save(_state(classes=7), student)
    p = _pipeline(
        tmp_path,
        (("teacher", "checkpoint"), str(teacher)),
        (("teacher", "allow_weak"), True),  # an untrained stand-in teacher
        (("student", "init_checkpoint"), str(student)),
        (("distill", "features"), []),
    )
    inproc_error(
        *_run(tmp_path, p),
        fragments=(str(student), "tensor 'fc.weight'", "the checkpoint has 7 classes, the data has 10"),
    )
    assert not (tmp_path / "run" / "distill" / "student.pt").exists()


@pytest.mark.parametrize("wrapped", [True, False], ids=["torch.save", "plain-pickle"])
def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, wrapped):
    marker = tmp_path / "PWNED"
    path = tmp_path / "teacher.pt"
    if wrapped:
        torch.save({"state_dict": _state(), "extra": _RunsCode(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_RunsCode(marker)))
    inproc_error(*_run(tmp_path, _teacher_ckpt(tmp_path, path)), fragments=(str(path), "refused to load"))
    assert not marker.exists()


def test_pickle_checkpoint_through_the_real_cli(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": _state(), "extra": _RunsCode(marker)}, path)
    msg = cli_error(
        *_run(tmp_path, _teacher_ckpt(tmp_path, path)), fragments=(str(path), "refused to load"), timeout=300
    )
    assert (
        "posix.system" in msg and "weights_only=False" not in msg
    )  # says what it found; never suggests the unsafe load
    assert not marker.exists()


# --------------------------------------------------------------------------- feature layers


@pytest.mark.parametrize(
    "side, name, nearest", [("teacher", "layer9", "'layer1'"), ("student", "layer2.0.cnv1", "'layer2.0.conv1'")]
)
def test_unknown_feature_layer_lists_nearest_names_before_training(tmp_path, side, name, nearest):
    teacher = tmp_path / "teacher.pt"
    torch.save(_state(), teacher)
    pair = {"teacher": "layer2", "student": "layer2", side: name}
    p = _pipeline(tmp_path, (("teacher", "checkpoint"), str(teacher)), (("distill", "features"), [pair]))
    inproc_error(
        *_run(tmp_path, p),
        fragments=(
            f"{side} resnet8 (CifarResNet) has no layer '{name}'",
            "did you mean",
            nearest,
            "top-level layers: conv1",
        ),
    )
    distill = tmp_path / "run" / "distill"
    assert not (distill / "checkpoint-last.pt").exists() and not (distill / "metrics.jsonl").exists()


# --------------------------------------------------------------------------- ONNX files


@pytest.mark.parametrize("content", [b"", b"\x08\x07not a protobuf at all" * 4], ids=["empty", "garbage"])
def test_unparsable_onnx_through_runtime_for(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(EdgekdError, match=r"model\.onnx: onnxruntime cannot load this file: ") as info:
        runtime_for(path)
    assert "\n" not in str(info.value)


def test_unparsable_onnx_in_the_benchmark_fails_only_that_artifact(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    (run_dir / "export" / "student.onnx").write_bytes(b"\x08\x07not a protobuf" * 4)
    torch.manual_seed(0)
    good = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            good,
            (torch.randn(1, 1, 16, 16),),
            str(run_dir / "export" / "teacher.onnx"),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
            dynamo=False,
        )
    planned = [Planned("student_onnx", "export/student.onnx"), Planned("teacher_onnx", "export/teacher.onnx")]
    images = np.random.default_rng(0).standard_normal((8, 1, 16, 16)).astype(np.float32)
    settings = Settings(batch_sizes=(1,), warmup=0, min_runs=1, min_seconds=0.0, repeats=1, threads=1)
    doc = benchmark_artifacts(planned, images, np.zeros(8, np.int64), None, settings, "local", run_dir)
    bad, ok = doc.get("student_onnx"), doc.get("teacher_onnx")
    assert bad.status == "failed" and bad.reason.startswith("export/student.onnx: onnxruntime cannot load this file:")
    assert "\n" not in bad.reason and bad.sha256 and not bad.latency
    assert ok.status == "done" and ok.latency and ok.accuracy is not None
    assert (run_dir / "bench" / "local.json").is_file()


# --------------------------------------------------------------------------- odd characters in what errors quote


@pytest.mark.parametrize("folder", ["runs[/x]", "b[red]"])
def test_paths_with_brackets_are_quoted_verbatim(tmp_path, folder):
    missing = tmp_path / folder / "p.yaml"
    cli_error("validate", str(missing), fragments=(f"{missing}: pipeline file not found",))  # not eaten as Rich markup
    good = _pipeline(tmp_path, name="ok.yaml")
    (tmp_path / folder).mkdir(parents=True)
    target = tmp_path / folder / "p.yaml"
    target.write_text(good.read_text())
    result = CliRunner().invoke(app, ["validate", str(target)])
    assert result.exit_code == 0 and f"ok {target}:" in result.stdout, result.output


# --------------------------------------------------------------------------- run directories


@pytest.mark.parametrize(
    "content", ["{not json", "[1, 2]", '{"stages": [1]}', "\udcff"], ids=["syntax", "list", "stages-list", "binary"]
)
def test_corrupt_manifest(tmp_path, content):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    manifest = run_dir / "manifest.json"
    if content == "\udcff":
        manifest.write_bytes(b"\xff\xfe{")
    else:
        manifest.write_text(content)
    inproc_error(
        "plan",
        str(_pipeline(tmp_path)),
        "--run-dir",
        str(run_dir),
        fragments=(f"{manifest}: corrupt manifest", "delete it to start the run afresh"),
    )


def test_run_dir_that_is_a_file(tmp_path):
    in_the_way = tmp_path / "run"
    in_the_way.write_text("x")
    inproc_error(
        "run",
        str(_pipeline(tmp_path)),
        "--run-dir",
        str(in_the_way),
        fragments=(f"{in_the_way}: cannot create the run directory",),
    )


def test_a_keep_float_layer_the_student_lacks_is_named_before_anything_trains(tmp_path):
    """Issue 22 item 9: found by `validate` and before `run` trains the teacher, not at the qat stage."""
    path = _pipeline(tmp_path, (("qat", "keep_float"), ["layer9.conv"]))
    fragments = ("qat.keep_float: 'layer9.conv' is not a Conv2d or Linear of", "valid: conv1")
    inproc_error("validate", str(path), fragments=fragments)
    inproc_error("run", str(path), "--run-dir", str(tmp_path / "run"), fragments=fragments)
    assert not (tmp_path / "run" / "teacher").exists()


def test_bench_on_a_device_says_it_cannot_repeat_only_the_unstable_figures(tmp_path):
    """Issue 22 item 9: `--device` with `--repeat-unstable` silently measured everything; now it says so first."""
    inproc_error(
        "bench",
        str(tmp_path),
        "--device",
        "xavier",
        "--repeat-unstable",
        fragments=("re-measures on this machine only",),
    )


def test_a_folder_the_machine_will_not_let_edgekd_write_is_one_line(tmp_path):
    """Issue 22 item 8: a read-only place (here /sys, refused even to root) is an error naming it, not a traceback."""
    if not Path("/sys").is_dir():
        pytest.skip("needs /sys (Linux)")
    run = tmp_path / "run"
    run.mkdir()
    (run / "pipeline.yaml").write_text(_pipeline(tmp_path).read_text())
    inproc_error(
        "report", str(run), "--out", "/sys/edgekd-report", fragments=("/sys/edgekd-report: Operation not permitted",)
    )


@pytest.mark.parametrize("flag", ["--from", "--only", "--force", "--require"])
def test_unknown_stage_names(tmp_path, flag):
    inproc_error(
        "run",
        str(_pipeline(tmp_path)),
        "--run-dir",
        str(tmp_path / "run"),
        flag,
        "distil",
        fragments=(f"{flag} distil: no such stage; stages are: teacher, scout, prune, distill",),
    )


def test_plan_quotes_bracketed_run_dirs_and_reasons_verbatim(tmp_path):
    run_dir = tmp_path / "runs[/x]"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(
        '{"stages": {"teacher": {"status": "failed", "error": "boom [/x] [red]here"}}}'
    )
    result = CliRunner().invoke(app, ["plan", str(_pipeline(tmp_path)), "--run-dir", str(run_dir)])
    assert result.exit_code == 0 and result.exception is None, repr(result.exception)
    assert "last attempt failed" in result.stdout
