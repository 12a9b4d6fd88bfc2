"""Shared fixtures: a tiny digits pipeline that trains in seconds, and a tiny real ONNX classifier; the cores
each test process may use, and the order tests are handed out in (slow first) when pytest-xdist runs them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def cores_per_process() -> int:
    """This process's share of the cores: all of them, or under `pytest -n N` (pytest-xdist) 1/N of them each."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker's torch, and the CLI subprocesses its tests start, use the worker's share of the cores:
    N workers with a thread per core each would time-slice every OpenMP region N ways."""
    if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
        share = str(cores_per_process())
        os.environ.setdefault("OMP_NUM_THREADS", share)
        import torch

        torch.set_num_threads(int(share))


# The longest tests and about what each costs, in seconds on one of CI's two workers (`.ci/run`'s --durations on a
# 2-core AMD EPYC VM, 2026-12-07, one that ran CI in 1,304 s). The longest prefix that matches a test gives its cost.
PTQ = "tests/quant/test_ptq_agreement.py::test_ptq_onnx_picks_the_fake_quant_class"
LONGEST: dict[str, float] = {
    f"{PTQ}[resnet101]": 199,
    f"{PTQ}[efficientnet_b1]": 180,
    "tests/test_quickstart.py": 141,
    f"{PTQ}[convnext_tiny]": 108,
    f"{PTQ}[resnet50]": 107,
    f"{PTQ}[efficientnet_b0]": 92,
    "tests/test_distributed.py::test_one_node_two_processes_and_two_nodes_train_alike": 82,
    "tests/fleet/test_bench_file_ship.py": 74,
    "tests/hardening/test_kill_resume.py": 68,
    "tests/search/test_scout_cli.py::test_the_quickstart_lists_at_least_eight_timed_candidates": 61,
    "tests/test_keys.py::test_each_change_reruns_exactly_its_downstream_stages": 59,
    f"{PTQ}[resnet32x4]": 53,
    f"{PTQ}[mnasnet0_5]": 53,
    f"{PTQ}[resnet34]": 52,
    "tests/quant/test_sensitivity_cli.py": 47,
    "tests/test_distributed.py::test_a_node_that_dies_mid_epoch": 45,
    f"{PTQ}[regnet_x_400mf]": 40,
    "tests/fleet/test_ship_standin.py": 39,
    f"{PTQ}[resnet110]": 39,
    "tests/test_pipeline.py::test_killed_run_resumes_to_the_same_student": 36,
    "tests/search/test_workers.py::test_workers_share_a_study_on_a_real_postgresql_server": 35,
    "tests/stages/test_sweep.py::test_a_sweep_under_nproc": 33,
    "tests/test_distributed.py": 25,
    PTQ: 20,
}


def expected_cost(nodeid: str) -> float:
    """The cost LONGEST gives a test (its longest matching prefix), 0 for the rest."""
    matches = [prefix for prefix in LONGEST if nodeid.startswith(prefix)]
    return LONGEST[max(matches, key=len)] if matches else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the costliest tests first, then the other `slow` ones, then the rest (a stable sort:
    they keep their order). `.ci/run` hands tests out one at a time (--dist load --maxschedchunk 1) to whichever
    worker is free, so the long ones start early on both workers and the workers end together on short ones
    (longest processing time first) instead of one worker finishing a long test alone."""
    if hasattr(config, "workerinput"):  # an xdist worker: the order the controller hands tests out in
        items.sort(key=lambda item: (-expected_cost(item.nodeid), item.get_closest_marker("slow") is None))


@pytest.fixture
def cores() -> int:
    """How many threads a test may give torch: cores_per_process()."""
    return cores_per_process()


TINY = """\
name: tiny
seed: 0
data:
  dataset: digits
  image_size: 16
  batch_size: 32
  limit_train: {limit_train}
  limit_val: 96
teacher:
  model: resnet8
  epochs: {teacher_epochs}
  lr: 0.1
  allow_weak: true  # a 1-epoch teacher may sit near 2x chance; the gate has its own tests
student:
  model: resnet8
benchmark:
  batch_sizes: [1]
  warmup: 1
  min_runs: 3
  min_seconds: 0.0
  repeats: 1
distill:
  epochs: {distill_epochs}
  lr: 0.1
  temperature: 4.0
"""


@pytest.fixture
def tiny_pipeline(tmp_path: Path):
    """Write a tiny pipeline.yaml (extra YAML appended) and return its path."""

    def make(
        extra: str = "", teacher_epochs: int = 1, distill_epochs: int = 2, name: str = "p.yaml", limit_train: int = 256
    ) -> Path:
        path = tmp_path / name
        path.write_text(
            TINY.format(teacher_epochs=teacher_epochs, distill_epochs=distill_epochs, limit_train=limit_train) + extra
        )
        return path

    return make


def _tiny_onnx(path: Path, batch: int | str = "N", seed: int = 0) -> Path:
    """Conv(1->4, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->10) on 1x8x8 images."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(size=(10, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(size=10).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def build_tiny_onnx():
    """The function that writes the tiny ONNX model: build_tiny_onnx(path, batch="N", seed=0) -> path."""
    return _tiny_onnx


@pytest.fixture
def onnx_path(tmp_path: Path) -> Path:
    return _tiny_onnx(tmp_path / "tiny.onnx")


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(5, 1, 8, 8)).astype(np.float32)


@pytest.fixture
def make_onnx(tmp_path: Path):
    """make_onnx(name, batch="N") -> path of a tiny ONNX model in tmp_path."""
    return lambda name, batch="N": _tiny_onnx(tmp_path / name, batch)


STANDINS = Path(__file__).resolve().parent / "standins"
"""tests/standins: the `tensorrt` and `pycuda` stand-ins (CPU, numpy; see their docstrings)."""

_STANDIN_MODULES = ("edgekd.ondevice.trt_build", "edgekd.ondevice.trt_runtime", "edgekd.runtimes.tensorrt")


def _purge() -> None:
    import sys

    for name in list(sys.modules):
        if name.split(".")[0] in ("tensorrt", "pycuda") or name in _STANDIN_MODULES:
            del sys.modules[name]


@pytest.fixture
def load_standin(monkeypatch: pytest.MonkeyPatch):
    """load_standin(version) -> the stand-in `tensorrt` module behaving as that release (8.5.2, 10.3.0, 11.1.0).

    Imports it afresh, with edgekd's TensorRT modules, so that they bind to it; undone after the test.
    """
    import importlib

    def load(version: str):
        monkeypatch.syspath_prepend(str(STANDINS))
        monkeypatch.setenv("EDGEKD_TRT_STANDIN", version)
        _purge()
        return importlib.import_module("tensorrt")

    yield load
    _purge()
