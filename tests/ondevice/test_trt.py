"""Real TensorRT builds and runs (need TensorRT >= 8.5, pycuda and a CUDA GPU; skipped elsewhere)."""

import json

import numpy as np
import onnxruntime as ort
import pytest

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]
trt = pytest.importorskip("tensorrt")
pytest.importorskip("pycuda.driver")

from edgekd.ondevice import measure, trt_options  # noqa: E402
from edgekd.ondevice.trt_build import BuildError, build_engine  # noqa: E402
from edgekd.ondevice.trt_options import BuildOptions  # noqa: E402
from edgekd.ondevice.trt_runtime import EngineMismatch, TrtRunner, gpu_identity, sm_count  # noqa: E402


@pytest.fixture(autouse=True)
def gpu():
    try:
        return gpu_identity()
    except Exception as e:  # pycuda's errors when there is no driver or device
        pytest.skip(f"no CUDA GPU: {e}")


def ort_logits(path, images):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]


def build(tmp_path, onnx_path, opts, name="engine"):
    engine = tmp_path / "engines" / f"{name}.engine"
    sidecar = build_engine(str(onnx_path), str(engine), opts, "test-gpu", str(tmp_path / "cache"))
    return engine, sidecar


def test_fp32_engine_matches_onnxruntime_and_writes_its_files(tmp_path, fp32_onnx, images, gpu):
    engine, sidecar = build(tmp_path, fp32_onnx, BuildOptions("fp32", max_batch=16))
    assert sidecar == json.loads(engine.with_suffix(".json").read_text())
    assert (sidecar["tensorrt"], sidecar["gpu"], sidecar["compute_capability"]) == (trt.__version__, gpu[0], gpu[1])
    assert sidecar["source_sha256"] == trt_options.sha256_file(str(fp32_onnx))
    assert sidecar["engine_sha256"] == trt_options.sha256_file(str(engine))
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
        stats = measure.time_runs(
            runner.prepare(images), len(images), warmup=2, min_runs=5, min_seconds=0, repeats=1, timer=runner.timer
        )
        assert stats["runs"] >= 5 and stats["min_ms"] > 0
        assert runner.describe()["provider"] == f"GPU {gpu[0]}"


def test_fp16_engine_and_timing_cache_reuse(tmp_path, fp32_onnx, images):
    build(tmp_path, fp32_onnx, BuildOptions("fp32"), "first")
    cache = tmp_path / "cache" / "timing" / f"test-gpu-trt{trt.__version__}.cache"
    assert cache.is_file()
    engine, sidecar = build(tmp_path, fp32_onnx, BuildOptions("fp16"), "second")
    assert sidecar["precision"] == "fp16" and cache.is_file()
    with TrtRunner(str(engine)) as runner:
        np.testing.assert_allclose(runner.run(images), ort_logits(fp32_onnx, images), atol=5e-2, rtol=5e-2)


def test_static_shape_engine_has_a_fixed_batch(tmp_path, fp32_onnx, images):
    engine, sidecar = build(tmp_path, fp32_onnx, BuildOptions("fp16", static_shapes=True, opt_batch=5))
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
    with pytest.raises(BuildError, match="int8 needs a Q/DQ ONNX"):
        build(tmp_path, fp32_onnx, BuildOptions("int8"))


def test_invalid_options_fail_before_building(tmp_path, fp32_onnx):
    with pytest.raises(BuildError, match="DLA needs static shapes"):
        build(tmp_path, fp32_onnx, BuildOptions("fp16", dla_core=0))


def test_engine_from_another_tensorrt_version_is_refused(tmp_path, fp32_onnx):
    engine, sidecar = build(tmp_path, fp32_onnx, BuildOptions("fp32"))
    sidecar["tensorrt"] = "0.0.1"
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(EngineMismatch, match=f"built with TensorRT 0.0.1, this device has TensorRT {trt.__version__}"):
        TrtRunner(str(engine)).load()


def test_engine_without_sidecar_is_refused(tmp_path, fp32_onnx):
    engine, _ = build(tmp_path, fp32_onnx, BuildOptions("fp32"))
    engine.with_suffix(".json").unlink()
    with pytest.raises(EngineMismatch, match="no sidecar"):
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
    sidecar["engine_sha256"] = trt_options.sha256_file(str(engine))
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    failing = TrtRunner(str(engine))
    with pytest.raises(EngineMismatch, match="could not deserialize"):
        failing.load()
    assert current_context() == before
    failing.close()
    assert current_context() == before


def test_a_corrupt_timing_cache_is_discarded_with_a_warning(tmp_path, fp32_onnx):
    cache = tmp_path / "cache" / "timing" / f"test-gpu-trt{trt.__version__}.cache"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"garbage" * 100)
    _, sidecar = build(tmp_path, fp32_onnx, BuildOptions("fp32"))
    assert any("timing cache" in w and "discarded" in w for w in sidecar["warnings"])
    assert cache.stat().st_size > 0 and cache.read_bytes() != b"garbage" * 100


def test_dla_on_a_gpu_without_dla_cores_is_refused(tmp_path, fp32_onnx):
    if trt.Builder(trt.Logger()).num_DLA_cores:
        pytest.skip("this GPU has DLA cores")
    with pytest.raises(BuildError, match="dla_core 0 does not exist here"):
        build(tmp_path, fp32_onnx, BuildOptions("fp16", dla_core=0, static_shapes=True))
