"""The TensorRT runtime behind the runtimes interface (needs TensorRT, pycuda and a CUDA GPU)."""

import numpy as np
import onnxruntime as ort
import pytest

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]
pytest.importorskip("tensorrt")
pytest.importorskip("pycuda.driver")

from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.fleet.local import local_gpu  # noqa: E402
from edgekd.ondevice.trt_build import build_engine  # noqa: E402
from edgekd.ondevice.trt_options import BuildOptions  # noqa: E402
from edgekd.runtimes import runtime_for  # noqa: E402


@pytest.fixture
def engine(tmp_path, onnx_path):
    if local_gpu()[0] is None:
        pytest.skip(local_gpu()[1])
    path = tmp_path / "tiny.engine"
    build_engine(str(onnx_path), str(path), BuildOptions("fp32", max_batch=8), "test-gpu", str(tmp_path / "cache"))
    return path


def test_runs_like_onnxruntime_and_times_on_the_gpu(engine, onnx_path, images):
    with runtime_for(engine) as runtime:
        check_runtime(runtime, onnx_path, images)
    runtime.close()  # idempotent
    assert runtime.cuda_context is None


def check_runtime(runtime, onnx_path, images):
    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]
    np.testing.assert_allclose(runtime.run(images), want, atol=1e-4, rtol=1e-4)
    assert runtime.describe()["name"] == "tensorrt" and runtime.fixed_batch is None
    np.testing.assert_allclose(runtime.prepare(images)(), want, atol=1e-4, rtol=1e-4)  # output on the host
    assert runtime.timer is None and runtime.compute_ms[-1] > 0  # wall clock; GPU compute time beside it


def test_mismatched_engine_is_an_edgekd_error(engine):
    engine.with_suffix(".json").unlink()
    with pytest.raises(EdgekdError, match="no sidecar"):
        runtime_for(engine)
