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
        "--profilingVerbosity=detailed",
        "--exportLayerInfo=tensorrt/xav/student_trt_fp16.layers.json",
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


def test_trtexec_line_on_tensorrt_10_and_11_is_strongly_typed_without_precision_flags():
    for version in ("10.16.0", "11.1.0"):
        args = shlex.split(
            trt_options.trtexec_command("s.onnx", "s.engine", BuildOptions("fp16"), INPUTS, trt_version=version)
        )
        assert "--stronglyTyped" in args and "--fp16" not in args and "--int8" not in args


def test_trtexec_line_of_a_calibrated_dla_int8_build_reads_the_calibration_cache():
    opts = BuildOptions("int8", dla_core=0, static_shapes=True, opt_batch=4)
    for version in ("8.5.2.2", "10.16.0"):
        args = shlex.split(
            trt_options.trtexec_command(
                "s.onnx", "e/s.engine", opts, INPUTS, trt_version=version, calibration_cache="e/s.calib.cache"
            )
        )
        assert {"--int8", "--fp16", "--calib=e/s.calib.cache", "--useDLACore=0"} <= set(args)
        assert "--stronglyTyped" not in args


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


@pytest.mark.parametrize(
    "version, family", [("8.5.2.2", "8.5"), ("8.6.1.6", "8.5"), ("10.3.0", "10"), ("10.16.0.1", "10"), ("11.1.0", "11")]
)
def test_api_family_of_each_release(version, family):
    assert trt_options.api_family(version) == family


@pytest.mark.parametrize("version", ["8.4.1", "9.2.0", "7.1.3", "garbage"])
def test_unsupported_releases_are_named(version):
    with pytest.raises(ValueError, match=f"TensorRT {version} is not supported"):
        trt_options.api_family(version)


def plan(precision, version, dla=None):
    return trt_options.build_plan(BuildOptions(precision, dla_core=dla, static_shapes=dla is not None), version)


def test_tensorrt_8_5_builds_with_flags_and_calibrates_dla_int8():
    assert (plan("fp32", "8.5.2").flags, plan("fp16", "8.5.2").flags) == ((), ("FP16",))
    gpu_int8, dla_int8 = plan("int8", "8.5.2"), plan("int8", "8.5.2", dla=0)
    assert (gpu_int8.source, gpu_int8.calibrate, gpu_int8.flags) == ("qdq", False, ("FP16", "INT8"))
    assert (dla_int8.source, dla_int8.calibrate) == ("fp32", True)
    assert not any(p.strongly_typed for p in (gpu_int8, dla_int8, plan("fp16", "8.5.2")))


def test_tensorrt_10_is_strongly_typed_on_the_gpu_and_weakly_typed_with_flags_on_the_dla():
    for precision, source in (("fp32", "fp32"), ("fp16", "fp16"), ("int8", "qdq")):
        p = plan(precision, "10.16.0")
        assert (p.strongly_typed, p.source, p.flags, p.calibrate) == (True, source, (), False)
    prefer = "PREFER_PRECISION_CONSTRAINTS"
    dla = plan("int8", "10.16.0", dla=0)
    assert (dla.strongly_typed, dla.calibrate, dla.flags, dla.refused) == (False, True, ("FP16", "INT8", prefer), None)
    fp16 = plan("fp16", "10.3.0", dla=0)  # JetPack 6.1/6.2: the DLA takes no strongly typed network before 11.4
    assert (fp16.strongly_typed, fp16.source, fp16.flags, fp16.refused) == (False, "fp32", ("FP16", prefer), None)
    assert fp16.steps() == ["_weakly_typed_network", "_set_precision_flags"]


@pytest.mark.parametrize("version", ["8.5.2.2", "10.3.0"])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_trtexec_line_of_a_dla_build_sets_what_the_python_build_sets(version, precision):
    opts = BuildOptions(precision, dla_core=0, static_shapes=True, opt_batch=4)
    inputs = [{"name": "input", "shape": [4, 1, 8, 8]}]
    args = trt_options.trtexec_command("m.onnx", "e.engine", opts, inputs, trt_version=version).split()
    flags = trt_options.build_plan(opts, version).flags
    assert "--stronglyTyped" not in args and "--fp16" in args and "--precisionConstraints=prefer" in args
    assert [a for a in args if a in trt_options.TRTEXEC_FLAGS.values()] == [trt_options.TRTEXEC_FLAGS[f] for f in flags]


def test_tensorrt_11_refuses_dla_int8_and_the_dla_before_11_4_in_one_line():
    why = plan("int8", "11.1.0", dla=1).refused
    assert why and "\n" not in why and "TensorRT 11.1.0 takes no network" in why
    assert plan("int8", "11.1.0", dla=1).steps() == []
    assert "strongly typed ones run on the DLA from 11.4" in plan("fp16", "11.1.0", dla=0).refused
    assert plan("int8", "11.1.0").refused is None and plan("fp16", "11.4.0", dla=0).refused is None
    assert "needs a calibrator and TensorRT 11.4.0 has none" in plan("int8", "11.4.0", dla=0).refused


def test_dtype_map_covers_engine_io_types_without_nptype():
    assert trt_options.numpy_dtype_name("DataType.HALF") == "float16"
    assert trt_options.numpy_dtype_name("DataType.FLOAT") == "float32"
    assert trt_options.numpy_dtype_name("DataType.BOOL") == "bool"
    with pytest.raises(ValueError, match="TensorRT type BF16 has no numpy dtype"):
        trt_options.numpy_dtype_name("DataType.BF16")


def test_sidecar_tells_apart_gpus_with_the_same_name_by_sm_count():
    agx = sidecar(sm_count=8)
    assert trt_options.sidecar_mismatch(agx, "8.5.2.2", "Xavier", "7.2", 8) is None
    assert trt_options.sidecar_mismatch(agx, "8.5.2.2", "Xavier", "7.2", 6) == (
        "built for a Xavier with 8 SMs, this one has 6 SMs"
    )
    assert "unknown number" in trt_options.sidecar_mismatch(sidecar(), "8.5.2.2", "Xavier", "7.2", 6)


def test_dla_coverage_from_the_engine_inspector():
    info = {
        "Layers": [
            {"Name": "images to nvm"},
            {"Name": "{ForeignNode[conv1...relu3]}"},
            {"Name": "logits from nvm"},
            {"Name": "logits copy finish"},
            {"Name": "gemm"},
        ]
    }
    assert trt_options.engine_dla_summary(info) == {
        "engine_layers": 5,
        "dla_subgraphs": ["{ForeignNode[conv1...relu3]}"],
        "dla_transfers": 3,
        "gpu_layers": ["gemm"],
    }
    assert trt_options.engine_dla_summary({"Layers": ["a", "b"]})["gpu_layers"] == ["a", "b"]


def test_a_calibrated_engine_is_keyed_by_its_calibration_set_too():
    onnx = "f" * 64
    assert trt_options.calibrated_source(onnx, None) == onnx
    a, b = trt_options.calibrated_source(onnx, "a" * 64), trt_options.calibrated_source(onnx, "b" * 64)
    assert len({onnx, a, b}) == 3 and len(a) == 64
