"""Bring your own model and data, through the CLI: pretrained weights from local files, bad images, the teacher gate."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision.models as tvm
import yaml
from PIL import Image
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import DataConfig, OptimConfig
from edgekd.data.datasets import load_data
from edgekd.distill.objectives import CrossEntropy
from edgekd.distill.trainer import TrainEnv, train
from edgekd.models import build_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache: nothing pretrained is here
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEKD_ALLOW_DOWNLOAD", raising=False)


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def image_folder(root: Path, classes=("ant", "bee", "cow"), n_train=6, n_val=3) -> Path:
    """JPEGs of mixed sizes whose colour says the class, plus the three bad files of the issue."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(24, 60, size=2)
                img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
                img[..., k] += 150
                Image.fromarray(img).save(root / split / c / f"{i}.jpg")
    return root


def damage(root: Path) -> list[str]:
    (root / "train" / "ant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    good = (root / "train" / "bee" / "0.jpg").read_bytes()
    (root / "train" / "bee" / "cut.jpg").write_bytes(good[: len(good) // 2])
    (root / "val" / "cow" / "readme.txt").write_text("labels by hand")
    return ["train/ant/broken.png", "train/bee/cut.jpg", "val/cow/readme.txt"]


def pretrained_variant(tmp_path: Path, root: Path, **data) -> Path:
    """pipelines/pretrained.yaml made small: resnet18/mobilenet_v2 with weights from local files, 32 px, 1 epoch."""
    cfg = yaml.safe_load((ROOT / "pipelines" / "pretrained.yaml").read_text())
    teacher_w, student_w = tmp_path / "resnet18.pth", tmp_path / "mobilenet_v2.pth"
    torch.manual_seed(0)
    torch.save(tvm.resnet18(weights=None).state_dict(), teacher_w)  # random weights, ImageNet's 1000 classes
    torch.save(tvm.mobilenet_v2(weights=None).state_dict(), student_w)
    cfg["data"].update(root=str(root), image_size=32, batch_size=8, num_workers=0, **data)
    cfg["teacher"].update(model="resnet18", weights=str(teacher_w), epochs=2, freeze_backbone_epochs=1, allow_weak=True)
    cfg["student"]["weights"] = str(student_w)
    cfg["distill"].update(epochs=1, amp="off", channels_last=False)
    cfg["qat"].update(epochs=1, calibration_batches=1, ptq=False)
    cfg["export"].update(teacher=False, parity_batch=4)
    cfg["benchmark"] = {"batch_sizes": [1], "warmup": 0, "min_runs": 2, "min_seconds": 0.0, "repeats": 1}
    path = tmp_path / "pretrained.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pretrained_pipeline_validates(tmp_path):
    cfg = yaml.safe_load((ROOT / "pipelines" / "pretrained.yaml").read_text())
    cfg["data"]["root"] = str(image_folder(tmp_path / "img", n_train=1, n_val=1))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    result = cli("validate", str(tmp_path / "p.yaml"))
    assert result.exit_code == 0, result.output
    assert "teacher resnet50, student mobilenet_v2" in result.output


def test_missing_pretrained_weights_stop_before_any_training(tmp_path, tiny_pipeline):
    path = tiny_pipeline("", name="w.yaml")
    cfg = yaml.safe_load(path.read_text())
    cfg["teacher"] = {"model": "resnet18", "weights": "IMAGENET1K_V1", "epochs": 1}
    path.write_text(yaml.safe_dump(cfg))
    result = cli("run", str(path), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 2
    msg = " ".join(result.stderr.split())
    cache = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg and str(cache) in msg
    assert "--allow-download" in msg
    assert not (tmp_path / "run" / "teacher" / "checkpoint-last.pt").exists()


def test_bad_images_stop_the_run_before_the_teacher(tmp_path):
    root = image_folder(tmp_path / "img", n_train=2, n_val=1)
    bad = damage(root)
    result = cli("run", str(pretrained_variant(tmp_path, root)), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 2
    msg = " ".join(result.stderr.split())
    assert "3 bad files" in msg and all(b in msg for b in bad)
    assert not (tmp_path / "run" / "teacher" / "model.pt").exists()


@pytest.mark.slow
def test_pretrained_variant_with_skipped_images_runs_to_the_end(tmp_path):
    root = image_folder(tmp_path / "img")
    bad = damage(root)
    run_dir = tmp_path / "run"
    result = cli("run", str(pretrained_variant(tmp_path, root, on_bad_image="skip")), "--run-dir", str(run_dir))
    assert result.exit_code == 0, result.output[-3000:]
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    teacher = stages["teacher"]["metrics"]
    assert [s.split(":")[0] for s in teacher["skipped_images"]] == bad
    assert teacher["head"] == "fc: new, 1000 -> 3 classes (freshly initialised)"
    assert teacher["first_conv"] == "conv1: kept (3 input channels)" and teacher["weights"].endswith("resnet18.pth")
    assert teacher["source"].startswith("fine-tuned from")
    assert stages["distill"]["metrics"]["student_init"]["head"].startswith("classifier.1: new, 1000 -> 3")
    for name in ("qat", "export", "benchmark"):
        assert stages[name]["status"] == "done", (name, stages[name])
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(run_dir / "export" / "student.onnx")).metadata_props}
    assert meta["edgekd.input_shape"] == [3, 32, 32] and meta["edgekd.resize_size"] == 37
    assert meta["edgekd.class_names"] == ["ant", "bee", "cow"]


@pytest.mark.slow
def test_teacher_trained_without_normalisation_trips_the_gate_until_its_mean_std_are_given(tmp_path, tiny_pipeline):
    """The issue's case: a teacher trained on raw [0, 1] pixels, loaded into a pipeline normalising with
    ImageNet-like statistics, sits near chance; with teacher.mean/std set to what it was trained with it runs."""
    raw = load_data(DataConfig(image_size=16, mean=[0.0], std=[1.0], limit_train=512), 0)
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1)
    env = TrainEnv(work_dir=tmp_path / "t", key="raw", seed=0, batch_size=32)
    train(model, raw.train, raw.val, OptimConfig(epochs=3, lr=0.1), CrossEntropy(), env)
    torch.save(model.state_dict(), tmp_path / "raw_teacher.pt")
    path = tiny_pipeline("", name="gate.yaml")
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(mean=[0.485], std=[0.229])
    cfg["teacher"] = {"model": "resnet8", "checkpoint": str(tmp_path / "raw_teacher.pt")}
    path.write_text(yaml.safe_dump(cfg))
    result = cli("run", str(path), "--run-dir", str(tmp_path / "run"), "--only", "teacher")
    assert result.exit_code == 2
    msg = " ".join(result.stderr.split())
    # which gate trips depends on how far under chance this CPU's training left it (both name the fix):
    # under 2x chance (Intel VM), or above it but far better on raw pixels (AMD EPYC)
    assert ("under 2x chance (10.0% for 10 classes" in msg and "mean/std" in msg and "class order" in msg) or (
        "set teacher.mean: [0.0] and teacher.std: [1.0]" in msg
    ), msg
    # issue 22 item 10: under mean 0.2, std 0.5 the same teacher clears the gate (about 30%), and is far better
    # fed raw pixels: the run stops and names the setting
    cfg["data"].update(mean=[0.2], std=[0.5])
    path.write_text(yaml.safe_dump(cfg))
    result = cli("run", str(path), "--run-dir", str(tmp_path / "run"), "--only", "teacher")
    assert result.exit_code == 2, result.output[-2000:]
    msg = " ".join(result.stderr.split())
    assert "under mean [0.2], std [0.5] but" in msg and "under mean 0, std 1 (pixels in [0, 1]) on 96 validation" in msg
    assert "set teacher.mean: [0.0] and teacher.std: [1.0]" in msg
    cfg["teacher"].update(mean=[0.0], std=[1.0])
    path.write_text(yaml.safe_dump(cfg))
    result = cli("run", str(path), "--run-dir", str(tmp_path / "run"), "--only", "teacher")
    assert result.exit_code == 0, result.output[-2000:]
    metrics = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["teacher"]["metrics"]
    assert metrics["val_top1"] > 80 and metrics["inputs"]["teacher_adapted"]
