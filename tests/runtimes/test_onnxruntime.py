from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from edgekd.errors import EdgekdError
from edgekd.runtimes import runtime_for
from edgekd.runtimes.onnxruntime import choose_providers


def test_runs_like_the_onnx_reference_evaluator(onnx_path: Path, images: np.ndarray) -> None:
    rt = runtime_for(onnx_path, threads=1)
    expected = ReferenceEvaluator(onnx.load(str(onnx_path))).run(None, {"input": images})[0]
    out = rt.run(images)
    assert out.shape == (5, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rt.prepare(images)()[0], expected, rtol=1e-5, atol=1e-5)


def test_describe_and_pinned_threads(onnx_path: Path) -> None:
    rt = runtime_for(onnx_path, threads=1)
    assert rt.describe() == {
        "name": "onnxruntime",
        "version": ort.__version__,
        "provider": "CPUExecutionProvider",
        "threads": 1,
    }
    assert rt.session.get_session_options().intra_op_num_threads == 1
    assert rt.fixed_batch is None


def test_static_batch_is_detected(make_onnx) -> None:
    assert runtime_for(make_onnx("b4.onnx", batch=4)).fixed_batch == 4


def test_unavailable_providers_fall_back_to_cpu() -> None:
    assert choose_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"])[-1] == "CPUExecutionProvider"
    with pytest.raises(EdgekdError, match="unknown name 'cuda'"):
        choose_providers(["cuda"])


def test_corrupt_onnx_names_file_and_backend(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x00garbage, not protobuf")
    with pytest.raises(EdgekdError, match=r"broken\.onnx: onnxruntime cannot load") as err:
        runtime_for(path)
    assert "\n" not in str(err.value)
