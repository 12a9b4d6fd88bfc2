import importlib.util
import os
from pathlib import Path

import pytest

from edgekd.errors import EdgekdError
from edgekd.runtimes import backend_for, open_runtime, runtime_for


@pytest.mark.parametrize(
    "name, backend",
    [
        ("student.ts.pt", "torchscript"),
        ("model.pt", "torch_eager"),
        ("x.ONNX", "onnxruntime"),
        ("s_fp16.engine", "tensorrt"),
    ],
)
def test_backend_by_suffix(name: str, backend: str) -> None:
    assert backend_for(name) == backend


def test_unknown_suffix_names_file_and_valid_suffixes(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"x")
    with pytest.raises(EdgekdError, match=r"model\.tflite.*\.onnx"):
        runtime_for(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EdgekdError, match="not found"):
        runtime_for(tmp_path / "absent.onnx")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_engine_without_tensorrt_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "student_fp16.engine"
    path.write_bytes(b"not an engine")
    with pytest.raises(EdgekdError, match="student_fp16.engine"):
        runtime_for(path)


def test_close_is_idempotent_and_a_closed_runtime_cannot_load(onnx_path: Path, images) -> None:
    rt = open_runtime(onnx_path, "onnxruntime", threads=1)
    assert not rt.loaded and rt.session is None  # constructing loads nothing
    with rt:
        assert rt.loaded and rt.run(images).shape == (5, 10)
    assert rt.closed and rt.session is None
    rt.close()  # again: nothing happens
    with pytest.raises(RuntimeError, match="after close"):
        rt.load()


def test_a_failed_load_in_a_with_block_still_closes(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not onnx")
    rt = open_runtime(path, "onnxruntime")
    with pytest.raises(EdgekdError, match="onnxruntime cannot load"), rt:
        pass
    assert rt.closed and not rt.loaded


@pytest.mark.parametrize(("threads", "omp", "expect"), [(None, None, os.cpu_count()), (1, "3", 1), (None, "3", 3)])
def test_threads_are_always_a_number(onnx_path: Path, threads, omp, expect, monkeypatch) -> None:
    """Asked-for threads win; else OMP_NUM_THREADS where the environment limits the process; else every core."""
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    with open_runtime(onnx_path, "onnxruntime", threads=threads) as rt:
        used = rt.describe()["threads"]
        assert isinstance(used, int) and used == expect
        assert rt.session.get_session_options().intra_op_num_threads == used


def test_the_torch_runtime_gives_torchs_thread_count_back(tmp_path: Path) -> None:
    """torch's thread count is process-wide: the eager runtime sets its own while loaded and restores the caller's."""
    import torch

    from edgekd.runtimes.torch_eager import runtime

    before = torch.get_num_threads()
    with runtime(torch.nn.Linear(4, 2), threads=before + 1) as rt:
        assert torch.get_num_threads() == before + 1 and rt.describe()["threads"] == before + 1
    assert torch.get_num_threads() == before
