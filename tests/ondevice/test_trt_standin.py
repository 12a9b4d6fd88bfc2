"""The TensorRT and pycuda stand-ins (tests/standins): TensorRT's names, refusing what TensorRT refuses, and
edgekd's build and runtime code running on them with figures labelled `tensorrt-standin`."""

import importlib
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator
from test_trt_api_surface import release_names

from edgekd.ondevice import trt_options
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.trt_options import BuildOptions

STANDINS = Path(__file__).resolve().parents[1] / "standins"

VERSIONS = ("8.5.2", "10.3.0", "11.1.0")


def _family(version: str) -> str:
    return trt_options.api_family(version)


def _public_names(trt) -> set[str]:
    """Every name the stand-in module offers: module attributes, class members and enum members."""
    names = set()
    for name, value in vars(trt).items():
        if name.startswith("_") or inspect.ismodule(value) or name in ("annotations",):
            continue
        if getattr(value, "__module__", trt.__name__) != trt.__name__:
            continue  # imported helpers (enum, json, numpy): not part of the API
        names.add(name)
        if inspect.isclass(value):
            for cls in value.__mro__:
                if cls.__module__ != trt.__name__:
                    continue
                for member in vars(cls):
                    if not member.startswith("_"):
                        names.add(member)
            if hasattr(value, "__members__"):
                names.update(value.__members__)
    instance = trt.IBuilderConfig()  # attributes set in __init__ are API names too (int8_calibrator, DLA_core)
    names.update(n for n in vars(instance) if not n.startswith("_"))
    names.update(n for n in vars(trt.Builder(trt.Logger())) if not n.startswith("_"))
    return names


@pytest.mark.parametrize("version", VERSIONS)
def test_every_name_the_standin_defines_exists_in_the_release_it_claims(load_standin, version):
    trt = load_standin(version)
    assert trt.__version__ == version + "-standin"
    missing = sorted(_public_names(trt) - release_names(_family(version)) - {"__version__"})
    assert missing == []


def test_the_name_check_sees_release_differences(load_standin):
    assert "STRONGLY_TYPED" not in load_standin("8.5.2").NetworkDefinitionCreationFlag.__members__
    trt11 = load_standin("11.1.0")
    assert not hasattr(trt11, "IInt8EntropyCalibrator2")  # 11.x removed calibrators
    assert (
        "FP16" not in trt11.BuilderFlag.__members__
        and "EXPLICIT_BATCH" not in trt11.NetworkDefinitionCreationFlag.__members__
    )
    assert not hasattr(trt11.IBuilderConfig(), "int8_calibrator")


def test_signatures_match_the_typed_10_13_stubs(load_standin):
    """Parameter names of each stand-in method equal one overload of the same method in tensorrt-stubs 10.13."""
    declared = json.loads((Path(__file__).parent / "tensorrt-api" / "tensorrt-10.13.signatures.json").read_text())
    declared = {tuple(key.split(".", 1)): value for key, value in declared.items()}
    trt = load_standin("10.3.0")
    checked, problems = 0, []
    for cls_name, cls in vars(trt).items():
        if not inspect.isclass(cls) or cls.__module__ != trt.__name__ or cls_name.startswith("_"):
            continue
        for name, fn in vars(cls).items():
            if name.startswith("_") and name != "__init__" or not inspect.isfunction(fn):
                continue
            overloads = declared.get((cls_name, name))
            if overloads is None:
                if name != "__init__":
                    problems.append(f"{cls_name}.{name} is not in the stubs")
                continue
            params = list(inspect.signature(fn).parameters)[1:]
            checked += 1
            if params not in overloads:
                problems.append(f"{cls_name}.{name}{tuple(params)}: stubs have {overloads}")
    assert checked > 30 and problems == []


def _network(trt, onnx_path, flags=0):
    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes())
    return builder, network, builder.create_builder_config()


def test_fp16_flag_on_a_strongly_typed_network_is_refused(load_standin, fp32_onnx, capsys):
    trt = load_standin("10.3.0")
    builder, network, config = _network(trt, fp32_onnx, 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    profile = builder.create_optimization_profile()
    profile.set_shape("input", [1, 1, 8, 8], [2, 1, 8, 8], [4, 1, 8, 8])
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None  # fp32, strongly typed: fine
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    assert "not allowed for strongly typed networks" in capsys.readouterr().out


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_dla_refuses_dynamic_shapes_and_fp32(load_standin, fp32_onnx, version):
    trt = load_standin(version)
    builder, network, config = _network(trt, fp32_onnx, 0)
    config.default_device_type, config.DLA_core = trt.DeviceType.DLA, 0
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", [1, 1, 8, 8], [2, 1, 8, 8], [4, 1, 8, 8])
    config.add_optimization_profile(profile)
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None  # dynamic
    builder, network, config = _network(trt, fp32_onnx, 0)
    config.default_device_type, config.DLA_core = trt.DeviceType.DLA, 0
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", [2, 1, 8, 8], [2, 1, 8, 8], [2, 1, 8, 8])
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is None  # fp32
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is not None  # static fp16: what the DLA takes


def test_a_parser_error_leaves_nothing_to_build(load_standin, tmp_path):
    trt = load_standin("8.5.2")
    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    assert not parser.parse(b"not an onnx file")
    assert parser.num_errors == 1 and str(parser.get_error(0))
    assert builder.build_serialized_network(network, builder.create_builder_config()) is None


def test_an_engine_from_another_version_does_not_deserialize(load_standin, fp32_onnx, tmp_path):
    load_standin("8.5.2")
    from edgekd.ondevice.trt_build import build_engine

    build_engine(str(fp32_onnx), str(tmp_path / "e.engine"), BuildOptions("fp32"), "test", str(tmp_path / "cache"))
    data = (tmp_path / "e.engine").read_bytes()
    trt10 = load_standin("10.3.0")
    assert trt10.Runtime(trt10.Logger()).deserialize_cuda_engine(data) is None
    from edgekd.ondevice.trt_runtime import EngineMismatch, TrtRunner

    with pytest.raises(EngineMismatch, match="built with TensorRT 8.5.2-standin, this device has TensorRT 10.3.0"):
        TrtRunner(str(tmp_path / "e.engine")).load()


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_edgekd_builds_and_runs_on_the_standin_labelled_as_such(load_standin, fp32_onnx, images, tmp_path, version):
    load_standin(version)
    from edgekd.ondevice.trt_build import build_engine
    from edgekd.ondevice.trt_runtime import TrtRunner

    engine = tmp_path / "e.engine"
    sidecar = build_engine(str(fp32_onnx), str(engine), BuildOptions("fp32", max_batch=8), "test", str(tmp_path / "c"))
    assert sidecar["tensorrt"] == version + "-standin"
    with TrtRunner(str(engine)) as runner:
        assert (runner.min_batch, runner.max_batch) == (1, 8)
        expected = ReferenceEvaluator(str(fp32_onnx)).run(None, {"input": images})[0]
        np.testing.assert_allclose(runner.run(images), expected, rtol=1e-5, atol=1e-5)
        assert runner.describe()["name"] == "tensorrt-standin"
    assert "pycuda" in sys.modules and sys.modules["pycuda"].VERSION_TEXT.endswith("-standin")
    assert importlib.import_module("pycuda.driver").__file__.startswith(str(STANDINS))


def test_calibrators_are_driven_through_their_protocol(load_standin, fp32_onnx, tmp_path):
    """DLA int8 on 8.5: the calibrator's batches are read from "device" memory and its cache is written, then reused."""
    load_standin("8.5.2")
    from edgekd.ondevice.calibrate import write_calibration_set
    from edgekd.ondevice.trt_build import build_engine

    calib = tmp_path / "calib.npz"
    write_calibration_set(str(calib), np.random.default_rng(0).normal(size=(20, 1, 8, 8)), 0)
    opts = BuildOptions("int8", dla_core=0, static_shapes=True, opt_batch=4)
    first = build_engine(str(fp32_onnx), str(tmp_path / "a.engine"), opts, "t", str(tmp_path / "c"), None, str(calib))
    assert first["calibration"]["batches"] == 5  # 20 images in batches of 4
    assert (tmp_path / "a.calib.cache").read_text().startswith("TRT-852-EntropyCalibration2\ninput: ")
    again = build_engine(str(fp32_onnx), str(tmp_path / "a.engine"), opts, "t", str(tmp_path / "c"), None, str(calib))
    assert again["calibration"]["batches"] == 0  # the cache held the scales
    assert json.loads((tmp_path / "a.layers.json").read_text())["Layers"][1]["Name"].startswith("{ForeignNode[")


def test_dla_fp16_on_tensorrt_10_builds_weakly_typed_with_flags(load_standin, fp32_onnx, tmp_path):
    """JetPack 6.1/6.2 (TensorRT 10.3): a strongly typed network is refused on the DLA (issue 21 fault 3)."""
    load_standin("10.3.0")
    from edgekd.ondevice.trt_build import build_engine

    opts = BuildOptions("fp16", dla_core=0, static_shapes=True, opt_batch=4)
    sidecar = build_engine(str(fp32_onnx), str(tmp_path / "d.engine"), opts, "orin", str(tmp_path / "c"))
    assert sidecar["strongly_typed"] is False and sidecar["dla"]["engine"]["dla_subgraphs"]
    line = (tmp_path / "d.trtexec.txt").read_text()
    assert "--fp16" in line and "--precisionConstraints=prefer" in line and "--stronglyTyped" not in line


def test_tensorrt_warnings_are_kept_in_the_sidecar(load_standin, fp32_onnx, tmp_path):
    """A DLA build's fallback warnings reach the sidecar and the build log (issue 21 fault 4)."""
    load_standin("8.5.2")
    from edgekd.ondevice.trt_build import build_engine

    opts = BuildOptions("fp16", dla_core=0, static_shapes=True, opt_batch=4)
    sidecar = build_engine(str(fp32_onnx), str(tmp_path / "d.engine"), opts, "xavier", str(tmp_path / "c"))
    fallback = [w for w in sidecar["warnings"] if "falling back to GPU" in w]
    assert len(fallback) == len(sidecar["dla"]["gpu_fallback"]) > 0
    assert all(w in (tmp_path / "d.build.log").read_text() for w in fallback)


def test_engines_are_timed_host_to_host_with_gpu_compute_beside(load_standin, fp32_onnx, images, tmp_path):
    """TensorRT's figure is wall clock from input on the host to logits on the host, like ONNX Runtime's; its GPU
    compute time is an extra column (issue 21 fault 6)."""
    load_standin("8.5.2")
    from edgekd.ondevice import measure
    from edgekd.ondevice.trt_build import build_engine
    from edgekd.ondevice.trt_runtime import TrtRunner

    engine = tmp_path / "e.engine"
    build_engine(str(fp32_onnx), str(engine), BuildOptions("fp32", max_batch=8), "test", str(tmp_path / "c"))
    subject = measure.Subject("student_trt_fp32", "e.engine", lambda: TrtRunner(str(engine)))
    settings = measure.Settings(batch_sizes=(1, 4), warmup=1, min_runs=4, min_seconds=0.0, repeats=2)
    labels = np.zeros(len(images), dtype=np.int64)
    (record,), _ = measure.bench_artifacts([subject], images, labels, None, settings)
    assert record.status == "done" and record.runtime.name == "tensorrt-standin"
    for lat in record.latency:
        assert lat.gpu_compute_ms is not None and 0 < lat.gpu_compute_ms < lat.p50_ms  # copies are in the latency
    with TrtRunner(str(engine)) as runner:
        assert runner.timer is None  # the harness's wall clock, as for ONNX Runtime
        np.testing.assert_array_equal(runner.prepare(images[:4])(), runner.run(images[:4]))


def test_calibration_follows_the_networks_fixed_batch_and_refuses_other_image_shapes(load_standin, make_onnx, tmp_path):
    """A fixed-batch ONNX calibrates on every image, and images of another C x H x W are refused (fault 7)."""
    load_standin("8.5.2")
    from edgekd.ondevice.calibrate import write_calibration_set
    from edgekd.ondevice.trt_build import BuildError, build_engine

    fixed = make_onnx("fixed.onnx", batch=2)
    calib = tmp_path / "calib.npz"
    write_calibration_set(str(calib), np.random.default_rng(0).normal(size=(20, 1, 8, 8)), 0)
    opts = BuildOptions("int8", dla_core=0, static_shapes=True, opt_batch=4, max_batch=4)
    sidecar = build_engine(str(fixed), str(tmp_path / "f.engine"), opts, "t", str(tmp_path / "c"), None, str(calib))
    assert sidecar["calibration"]["batches"] == 10  # batches of the network's 2, not opt_batch's 4
    wrong = tmp_path / "rgb.npz"
    write_calibration_set(str(wrong), np.random.default_rng(0).normal(size=(8, 3, 8, 8)), 0)
    with pytest.raises(
        BuildError, match=r"rgb.npz: calibration images are 3x8x8, the network input 'input' takes 1x8x8"
    ):
        build_engine(str(fixed), str(tmp_path / "g.engine"), opts, "t", str(tmp_path / "c"), None, str(wrong))


def test_a_refused_profile_and_a_failing_inspector(load_standin, fp32_onnx, tmp_path, monkeypatch):
    """add_optimization_profile's -1 is a build error; an inspector failure leaves an engine with its sidecar (fault 7)."""
    trt = load_standin("10.3.0")
    from edgekd.ondevice.trt_build import BuildError, build_engine

    monkeypatch.setattr(trt.EngineInspector, "get_engine_information", lambda self, format: "{not json")
    sidecar = build_engine(str(fp32_onnx), str(tmp_path / "e.engine"), BuildOptions("fp32"), "t", str(tmp_path / "c"))
    assert (tmp_path / "e.json").is_file() and not (tmp_path / "e.layers.json").exists()
    assert any("inspector's JSON does not parse" in w for w in sidecar["warnings"])
    monkeypatch.setattr(trt.IBuilderConfig, "add_optimization_profile", lambda self, profile: -1)
    with pytest.raises(BuildError, match="refused the optimization profile 1/8/32"):
        build_engine(str(fp32_onnx), str(tmp_path / "f.engine"), BuildOptions("fp32"), "t", str(tmp_path / "c"))


def test_the_sidecar_records_the_timing_cache_it_was_built_with(load_standin, fp32_onnx, tmp_path):
    """Builds differ from run to run (NVIDIA/TensorRT #4730): the sidecar pins which timing cache was used."""
    trt = load_standin("8.5.2")
    from edgekd.ondevice.trt_build import build_engine

    sidecar = build_engine(
        str(fp32_onnx), str(tmp_path / "e.engine"), BuildOptions("fp32"), "xavier", str(tmp_path / "c")
    )
    cache = Path(trt_options.timing_cache_path(str(tmp_path / "c"), "xavier", trt.__version__))
    assert sidecar["timing_cache"] == {"file": cache.name, "sha256": sha256_file(str(cache))}


@pytest.mark.parametrize("version", VERSIONS)
def test_calibrated_gpu_int8_the_fallback_of_a_failed_qdq_build(load_standin, fp32_onnx, tmp_path, version):
    """The fallback engine: int8 on the GPU calibrated from the fp32 ONNX, weakly typed with flags on 8.5 and 10.x
    (a key of its own), refused before building on 11.x, which has no calibrators."""
    load_standin(version)
    from edgekd.ondevice.calibrate import write_calibration_set
    from edgekd.ondevice.trt_build import BuildError, build_engine

    calib = tmp_path / "calib.npz"
    write_calibration_set(str(calib), np.random.default_rng(0).normal(size=(8, 1, 8, 8)), 0)
    opts = BuildOptions("int8", opt_batch=4, max_batch=8, calibrated=True)
    args = (str(fp32_onnx), str(tmp_path / "e.engine"), opts, "t", str(tmp_path / "c"), None, str(calib))
    if version.startswith("11"):
        with pytest.raises(BuildError, match="int8 calibrated on the GPU needs a calibrator and TensorRT 11"):
            build_engine(*args)
        return
    sidecar = build_engine(*args)
    assert sidecar["calibration"]["batches"] == 2 and sidecar["strongly_typed"] is False
    assert sidecar["options"]["calibrated"] is True and sidecar["dla_core"] is None
    line = (tmp_path / "e.trtexec.txt").read_text()
    assert "--int8" in line and "--calib=" in line and "--stronglyTyped" not in line
    assert (
        opts.variant().endswith("-cal") and BuildOptions("int8", opt_batch=4, max_batch=8).variant() != opts.variant()
    )
