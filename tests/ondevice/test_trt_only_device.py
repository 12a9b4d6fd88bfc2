"""A device whose Python has TensorRT and pycuda but no onnxruntime and no torch (JetPack's own set-up) runs the
device bench: each runtime is imported only where it is used (issue 21, fault 1). TensorRT and pycuda are the
stand-ins of tests/standins, so the figures are labelled `tensorrt-standin`."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekd.ondevice
from edgekd.ondevice.job import JOB_SCHEMA

STANDINS = Path(__file__).resolve().parents[1] / "standins"
REFUSE = """\
import importlib.abc, runpy, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnxruntime", "torch", "edgekd"):
            raise ImportError("No module named %r (this device has none)" % name)
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _bundle(root: Path, onnx_path: Path, images: np.ndarray) -> Path:
    shutil.copytree(
        Path(edgekd.ondevice.__file__).parent, root / "edgekd_device", ignore=shutil.ignore_patterns("__pycache__")
    )
    (root / "export").mkdir()
    shutil.copyfile(onnx_path, root / "export" / "student.onnx")
    (root / "bench").mkdir()
    np.savez(root / "bench" / "val.npz", images=images, labels=np.arange(len(images)) % 10)
    job = {
        "schema": JOB_SCHEMA,
        "device": {"name": "xavier", "kind": "test-trt", "record_power_mode": False, "lock_clocks": False},
        "val": "bench/val.npz",
        "settings": {"batch_sizes": [1, 4], "warmup": 1, "min_runs": 3, "min_seconds": 0.0, "repeats": 1},
        "tensorrt": {"static_shapes": False, "workspace_mb": 64, "min_batch": 1, "opt_batch": 4, "max_batch": 8},
        "onnx": [],
        "engines": [
            {
                "id": "student_trt_fp32",
                "precision": "fp32",
                "onnx": "export/student.onnx",
                "onnx_sha256": hashlib.sha256((root / "export" / "student.onnx").read_bytes()).hexdigest(),
                "prebuilt": None,
            }
        ],
    }
    (root / "job.json").write_text(json.dumps(job))
    return root / "job.json"


def _device_bench(tmp_path: Path, job: Path, out: str) -> subprocess.CompletedProcess:
    (tmp_path / "refuse.py").write_text(REFUSE)
    env = {"PYTHONPATH": f"{job.parent}:{STANDINS}", "EDGEKD_TRT_STANDIN": "8.5.2", "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, str(tmp_path / "refuse.py"), "edgekd_device.bench", str(job)]
    argv += ["--out", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache")]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.tensorrt
def test_tensorrt_only_device_builds_and_times_engines_without_onnxruntime(tmp_path, fp32_onnx, images):
    job = _bundle(tmp_path / "bundle", fp32_onnx, images)
    first = _device_bench(tmp_path, job, "results")
    assert first.returncode == 0, first.stderr[-2000:]
    doc = json.loads((tmp_path / "results" / "bench" / "xavier.json").read_text())
    (record,) = doc["artifacts"]
    assert record["status"] == "done", record["reason"]
    assert record["runtime"]["name"] == "tensorrt-standin" and record["runtime"]["version"] == "8.5.2-standin"
    assert "onnxruntime" not in doc["system"]["libraries"] and "torch" not in doc["system"]["libraries"]
    assert [lat["batch_size"] for lat in record["latency"]] == [1, 4]
    assert "building fp32 engine" in first.stdout

    second = _device_bench(tmp_path, job, "again")  # same engine cache: nothing is rebuilt
    assert second.returncode == 0, second.stderr[-2000:]
    assert "engine from the cache" in second.stdout and "building" not in second.stdout
