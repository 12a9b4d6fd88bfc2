import importlib.util
from pathlib import Path

import pytest

from edgekd.errors import EdgekdError
from edgekd.runtimes import backend_for, runtime_for


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
