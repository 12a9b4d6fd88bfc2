"""TensorRT builds and runs: on real TensorRT (>= 8.5, pycuda, a CUDA GPU) where it is installed, else on the
stand-ins of tests/standins behaving as TensorRT 8.5 and 10.x (CPU; the flow, never a figure)."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgekd.ondevice import measure, trt_options
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.trt_options import BuildOptions


def _real_tensorrt() -> bool:
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt
    except ImportError:
        return False
    return not tensorrt.__version__.endswith(trt_options.STANDIN_SUFFIX)


REAL = _real_tensorrt()
pytestmark = [pytest.mark.tensorrt] + ([pytest.mark.gpu] if REAL else [])


@pytest.fixture(params=["installed"] if REAL else ["8.5.2", "10.3.0"], autouse=True)
def trt(request, load_standin):
    """The tensorrt module these tests run on: the installed one, or the stand-in as each release family."""
    if request.param == "installed":
        import tensorrt

        return tensorrt
    return load_standin(request.param)


@pytest.fixture(autouse=True)
def gpu(trt):
    from edgekd.ondevice.trt_runtime import gpu_identity

    try:
        return gpu_identity()
    except Exception as e:  # pycuda's errors when there is no driver or device
        pytest.skip(f"no CUDA GPU: {e}")


@pytest.fixture
def fp16_source(trt, tmp_path, fp32_onnx):
    """The ONNX an fp16 engine is built from on this release: the fp32 one on 8.5, an fp16 one from 10.x on
    (strongly typed networks take their precision from the ONNX; issue 21 fault 5)."""
    if trt_options.build_plan(BuildOptions("fp16"), trt.__version__).source != "fp16":
        return fp32_onnx
    from edgekd.export.fp16 import write_fp16_onnx

    return write_fp16_onnx(fp32_onnx, tmp_path / "student_fp16.onnx")


def ort_logits(path, images):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]


def build(tmp_path, onnx_path, opts, name="engine"):
    from edgekd.ondevice.trt_build import build_engine

    engine = tmp_path / "engines" / f"{name}.engine"
    sidecar = build_engine(str(onnx_path), str(engine), opts, "test-gpu", str(tmp_path / "cache"))
    return engine, sidecar


def TrtRunner(path):
    from edgekd.ondevice.trt_runtime import TrtRunner as runner

    return runner(path)


def BuildError():
    from edgekd.ondevice.trt_build import BuildError as error

    return error


def EngineMismatch():
    from edgekd.ondevice.trt_runtime import EngineMismatch as error

    return error


def test_fp32_engine_matches_onnxruntime_and_writes_its_files(trt, tmp_path, fp32_onnx, images, gpu):
    from edgekd.ondevice.trt_runtime import sm_count

    engine, sidecar = build(tmp_path, fp32_onnx, BuildOptions("fp32", max_batch=16))
    assert sidecar == json.loads(engine.with_suffix(".json").read_text())
    assert (sidecar["tensorrt"], sidecar["gpu"], sidecar["compute_capability"]) == (trt.__version__, gpu[0], gpu[1])
    assert sidecar["source_sha256"] == sha256_file(str(fp32_onnx))
    assert sidecar["engine_sha256"] == sha256_file(str(engine))
    assert sidecar["inputs"][0]["shape"] == [-1, 1, 8, 8] and sidecar["dla"] is None
    assert sidecar["sm_count"] == sm_count() and sidecar["strongly_typed"] == (
        trt_options.api_family(trt.__version__) != "8.5"
    )
    assert "--profilingVerbosity=detailed" in engine.with_suffix(".trtexec.txt").read_text()
    assert engine.with_suffix(".build.log").stat().st_size > 0
    assert engine.with_suffix(".trtexec.txt").read_text().startswith("trtexec --onnx=")
    assert json.loads(engine.with_suffix(".layers.json").read_text())
    assert (tmp_path / "cache" / "timing" / f"test-gpu-trt{trt.__version__}.cache").stat().st_size > 0

    with TrtRunner(str(engine)) as runner:
        assert (runner.min_batch, runner.max_batch, runner.fixed_batch) == (1, 16, None)
        np.testing.assert_allclose(runner.run(images), ort_logits(fp32_onnx, images), atol=1e-4, rtol=1e-4)
        call = runner.prepare(images)  # timed like every runtime: input on the host to logits on the host
        np.testing.assert_allclose(call(), ort_logits(fp32_onnx, images), atol=1e-4, rtol=1e-4)
        stats = measure.time_runs(call, len(images), warmup=2, min_runs=5, min_seconds=0, repeats=1)
        assert stats["runs"] >= 5 and stats["min_ms"] > 0
        assert len(runner.compute_ms) == 1 + 2 + stats["runs"] and min(runner.compute_ms) > 0
        assert runner.describe()["provider"] == f"GPU {gpu[0]}"


def test_fp16_engine_and_timing_cache_reuse(trt, tmp_path, fp32_onnx, fp16_source, images):
    build(tmp_path, fp32_onnx, BuildOptions("fp32"), "first")
    cache = tmp_path / "cache" / "timing" / f"test-gpu-trt{trt.__version__}.cache"
    assert cache.is_file()
    engine, sidecar = build(tmp_path, fp16_source, BuildOptions("fp16"), "second")
    assert sidecar["precision"] == "fp16" and cache.is_file()
    with TrtRunner(str(engine)) as runner:
        np.testing.assert_allclose(runner.run(images), ort_logits(fp32_onnx, images), atol=5e-2, rtol=5e-2)


def test_static_shape_engine_has_a_fixed_batch(tmp_path, fp16_source, images):
    engine, sidecar = build(tmp_path, fp16_source, BuildOptions("fp16", static_shapes=True, opt_batch=5))
    with TrtRunner(str(engine)) as runner:
        assert runner.fixed_batch == 5
        assert runner.run(images).shape == (5, 10)
        with pytest.raises(ValueError, match="outside the engine's profile 5..5"):
            runner.run(images[:2])


def test_int8_from_qdq_onnx(tmp_path, qdq_onnx, images):
    engine, sidecar = build(tmp_path, qdq_onnx, BuildOptions("int8"))
    with TrtRunner(str(engine)) as runner:
        got, want = runner.run(images), ort_logits(qdq_onnx, images)
        assert (got.argmax(1) == want.argmax(1)).mean() >= 0.8


def test_int8_needs_a_qdq_onnx(tmp_path, fp32_onnx):
    with pytest.raises(BuildError(), match="int8 on the GPU needs a Q/DQ ONNX"):
        build(tmp_path, fp32_onnx, BuildOptions("int8"))


def test_invalid_options_fail_before_building(tmp_path, fp32_onnx):
    with pytest.raises(BuildError(), match="DLA needs static shapes"):
        build(tmp_path, fp32_onnx, BuildOptions("fp16", dla_core=0))


def test_engine_from_another_tensorrt_version_is_refused(trt, tmp_path, fp32_onnx):
    engine, sidecar = build(tmp_path, fp32_onnx, BuildOptions("fp32"))
    sidecar["tensorrt"] = "0.0.1"
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(
        EngineMismatch(), match=f"built with TensorRT 0.0.1, this device has TensorRT {trt.__version__}"
    ):
        TrtRunner(str(engine)).load()


def test_engine_without_sidecar_is_refused(tmp_path, fp32_onnx):
    engine, _ = build(tmp_path, fp32_onnx, BuildOptions("fp32"))
    engine.with_suffix(".json").unlink()
    with pytest.raises(EngineMismatch(), match="no sidecar"):
        TrtRunner(str(engine)).load()


def current_context():
    import pycuda.driver as cuda

    return cuda.Context.get_current()


def test_close_pops_the_context_once_and_a_failed_load_pops_it_too(tmp_path, fp32_onnx):
    engine, sidecar = build(tmp_path, fp32_onnx, BuildOptions("fp32"))
    before = current_context()
    runner = TrtRunner(str(engine)).load()
    assert current_context() is not None
    runner.close()
    runner.close()
    assert current_context() == before
    engine.write_bytes(b"not an engine")
    sidecar["engine_sha256"] = sha256_file(str(engine))
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    failing = TrtRunner(str(engine))
    with pytest.raises(EngineMismatch(), match="could not deserialize"):
        failing.load()
    assert current_context() == before
    failing.close()
    assert current_context() == before


def test_a_corrupt_timing_cache_is_discarded_with_a_warning(trt, tmp_path, fp32_onnx):
    cache = tmp_path / "cache" / "timing" / f"test-gpu-trt{trt.__version__}.cache"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"garbage" * 100)
    _, sidecar = build(tmp_path, fp32_onnx, BuildOptions("fp32"))
    assert any("timing cache" in w and "discarded" in w for w in sidecar["warnings"])
    assert cache.stat().st_size > 0 and cache.read_bytes() != b"garbage" * 100


def test_dla_on_a_gpu_without_dla_cores_is_refused(trt, tmp_path, fp32_onnx):
    if trt.Builder(trt.Logger()).num_DLA_cores:
        pytest.skip("this GPU has DLA cores")
    with pytest.raises(BuildError(), match="dla_core 0 does not exist here"):
        build(tmp_path, fp32_onnx, BuildOptions("fp16", dla_core=0, static_shapes=True))
