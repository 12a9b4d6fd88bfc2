"""The pure parts of a TensorRT build: option checks, file naming, the sidecar check, the trtexec line."""

import shlex

import pytest

from edgekd.ondevice import trt_options
from edgekd.ondevice.trt_options import BuildOptions

INPUTS = [{"name": "images", "shape": [-1, 3, 32, 32]}]


def sidecar(**overrides):
    doc = trt_options.make_sidecar(
        BuildOptions("fp16"),
        "8.5.2.2",
        "Xavier",
        "7.2",
        "jetson-agx-xavier",
        "student.onnx",
        "a" * 64,
        "b" * 64,
        inputs=INPUTS,
        outputs=[{"name": "logits", "shape": [-1, 10]}],
        dla=None,
        build_seconds=1.0,
        created="2026-11-23T18:30:00Z",
    )
    doc.update(overrides)
    return doc


def test_trtexec_line_dynamic_batch_fp16():
    cmd = trt_options.trtexec_command(
        "export/student.onnx",
        "tensorrt/xav/student_trt_fp16.engine",
        BuildOptions("fp16", workspace_mb=512),
        INPUTS,
        timing_cache="/cache/timing/x.cache",
    )
    assert shlex.split(cmd) == [
        "trtexec",
        "--onnx=export/student.onnx",
        "--saveEngine=tensorrt/xav/student_trt_fp16.engine",
        "--memPoolSize=workspace:512",
        "--fp16",
        "--timingCacheFile=/cache/timing/x.cache",
        "--minShapes=images:1x3x32x32",
        "--optShapes=images:8x3x32x32",
        "--maxShapes=images:32x3x32x32",
    ]


def test_trtexec_line_int8_on_dla_with_static_batch_and_quoting():
    opts = BuildOptions("int8", dla_core=1, static_shapes=True, opt_batch=4)
    args = shlex.split(trt_options.trtexec_command("my model.onnx", "out.engine", opts, INPUTS))
    assert args[1] == "--onnx=my model.onnx"
    assert "--int8" in args and "--fp16" in args
    assert args[args.index("--useDLACore=1") + 1] == "--allowGPUFallback"
    assert [a for a in args if a.endswith("Shapes=images:4x3x32x32")] == [
        "--minShapes=images:4x3x32x32",
        "--optShapes=images:4x3x32x32",
        "--maxShapes=images:4x3x32x32",
    ]


def test_trtexec_line_static_onnx_has_no_shapes():
    args = shlex.split(
        trt_options.trtexec_command("a.onnx", "a.engine", BuildOptions("fp32"), [{"name": "x", "shape": [1, 3, 8, 8]}])
    )
    assert not any("Shapes" in a for a in args) and "--fp16" not in args


@pytest.mark.parametrize(
    "opts, fragment",
    [
        (BuildOptions("bf16"), "precision 'bf16'"),
        (BuildOptions("fp32", dla_core=0, static_shapes=True), "DLA runs fp16 or int8 only"),
        (BuildOptions("fp16", dla_core=0), "DLA needs static shapes"),
        (BuildOptions("fp16", dla_core=2, static_shapes=True), "dla_core 2 does not exist"),
        (BuildOptions("fp16", min_batch=4, opt_batch=2), "min_batch <= opt_batch"),
        (BuildOptions("fp16", workspace_mb=8), "workspace_mb 8"),
    ],
)
def test_invalid_options_are_named(opts, fragment):
    problems = trt_options.validate_options(opts)
    assert len(problems) == 1 and fragment in problems[0]


def test_valid_dla_options():
    assert trt_options.validate_options(BuildOptions("int8", dla_core=0, static_shapes=True)) == []


def test_timing_cache_is_per_device_kind_and_tensorrt_version():
    a = trt_options.timing_cache_path("/c", "jetson-agx-xavier", "8.5.2.2")
    assert a == "/c/timing/jetson-agx-xavier-trt8.5.2.2.cache"
    assert trt_options.timing_cache_path("/c", "jetson-agx-orin", "8.5.2.2") != a
    assert trt_options.timing_cache_path("/c", "jetson-agx-xavier", "8.6.1") != a
    assert trt_options.timing_cache_path("/c", "Host GPU/H100", "10.0") == "/c/timing/host-gpu-h100-trt10.0.cache"


def test_engine_key_changes_with_every_input():
    base = trt_options.engine_key("f" * 64, BuildOptions("fp16"), "jetson-agx-xavier", "8.5.2.2")
    others = {
        trt_options.engine_key("e" * 64, BuildOptions("fp16"), "jetson-agx-xavier", "8.5.2.2"),
        trt_options.engine_key("f" * 64, BuildOptions("int8"), "jetson-agx-xavier", "8.5.2.2"),
        trt_options.engine_key("f" * 64, BuildOptions("fp16", max_batch=64), "jetson-agx-xavier", "8.5.2.2"),
        trt_options.engine_key(
            "f" * 64, BuildOptions("fp16", dla_core=0, static_shapes=True), "jetson-agx-xavier", "8.5.2.2"
        ),
        trt_options.engine_key("f" * 64, BuildOptions("fp16"), "jetson-orin-nano", "8.5.2.2"),
        trt_options.engine_key("f" * 64, BuildOptions("fp16"), "jetson-agx-xavier", "8.6.1"),
    }
    assert base not in others and len(others) == 6


def test_options_round_trip_through_the_sidecar():
    opts = BuildOptions("int8", dla_core=1, static_shapes=True, workspace_mb=256, opt_batch=4)
    assert BuildOptions.from_dict(sidecar(options=opts.as_dict())["options"]).as_dict() == opts.as_dict()


def test_sidecar_accepts_same_gpu_and_version():
    assert trt_options.sidecar_mismatch(sidecar(), "8.5.2.2", "Xavier", "7.2") is None


def test_sidecar_refuses_another_tensorrt_version():
    why = trt_options.sidecar_mismatch(sidecar(), "8.6.1", "Xavier", "7.2")
    assert why == "built with TensorRT 8.5.2.2, this device has TensorRT 8.6.1"


def test_sidecar_refuses_another_gpu():
    why = trt_options.sidecar_mismatch(sidecar(), "8.5.2.2", "Orin", "8.7")
    assert why == "built for GPU Xavier (sm 7.2), this device has Orin (sm 8.7)"


def test_sidecar_refuses_unknown_schema():
    assert "schema" in trt_options.sidecar_mismatch(sidecar(schema="other/1"), "8.5.2.2", "Xavier", "7.2")


def test_dla_summary_lists_fallback_layers():
    summary = trt_options.dla_summary(["conv1", "softmax", "conv2", "topk"], [True, False, True, False])
    assert summary == {"layers": 4, "on_dla": 2, "share_on_dla": 0.5, "gpu_fallback": ["softmax", "topk"]}
