"""ONNX -> TensorRT engine on TensorRT 8.5, 10.x and 11.x: fp32, fp16, int8, optional DLA with GPU fallback.

How each precision is built on each release is trt_options.build_plan (builder flags on 8.5,
strongly typed networks on 10.x and later, a calibrator for int8 on the DLA); the release-specific
steps are the functions named in trt_options.TRT_PATHS, called through STEPS.

Each build writes, beside `<stem>.engine`: `<stem>.json` (sidecar), `<stem>.build.log`
(TensorRT's log), `<stem>.trtexec.txt` (the equivalent trtexec line), `<stem>.layers.json`
(the engine inspector's per-layer view) and, for a calibrated engine, `<stem>.calib.cache`.
"""

import datetime
import json
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import tensorrt as trt

from . import trt_options
from .calibrate import CalibrationBatches, CalibrationCache, entropy_calibrator, load_calibration_set
from .files import write_bytes_atomic, write_json_atomic
from .trt_options import BuildOptions, BuildPlan
from .trt_runtime import gpu_identity, process_logger, sm_count


class BuildError(Exception):
    """A build that cannot succeed (bad options, unparsable ONNX, TensorRT refused); the message says why."""


def _dims(shape: "trt.Dims") -> List[int]:
    return [int(d) for d in shape]


def _explicit_batch_network(builder: "trt.Builder") -> "trt.INetworkDefinition":
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))


def _strongly_typed_network(builder: "trt.Builder") -> "trt.INetworkDefinition":
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def _weakly_typed_network(builder: "trt.Builder") -> "trt.INetworkDefinition":
    return builder.create_network(0)  # explicit batch is the only mode from 10.x on


def _set_precision_flags(config: "trt.IBuilderConfig", plan: BuildPlan) -> None:
    if "FP16" in plan.flags:
        config.set_flag(trt.BuilderFlag.FP16)  # int8 engines keep fp16 for layers without int8 scales
    if "INT8" in plan.flags:
        config.set_flag(trt.BuilderFlag.INT8)  # scales from the Q/DQ nodes, or from the calibrator
    if "PREFER_PRECISION_CONSTRAINTS" in plan.flags:
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)  # DLA builds, as trtexec --useDLACore sets


def _attach_calibrator(config: "trt.IBuilderConfig", calibrator: object, profile: object) -> None:
    config.int8_calibrator = calibrator
    if profile is not None and not config.set_calibration_profile(profile):
        raise BuildError("TensorRT refused the calibration profile (set_calibration_profile returned False)")


STEPS = {
    "_explicit_batch_network": _explicit_batch_network,
    "_strongly_typed_network": _strongly_typed_network,
    "_weakly_typed_network": _weakly_typed_network,
    "_set_precision_flags": _set_precision_flags,
    "_attach_calibrator": _attach_calibrator,
    "entropy_calibrator": entropy_calibrator,
}  # type: Dict[str, Callable]


def _parse(network: "trt.INetworkDefinition", onnx_path: str) -> "trt.OnnxParser":
    """The parser, which owns weights the network refers to: keep it alive as long as the network."""
    parser = trt.OnnxParser(network, process_logger())
    with open(onnx_path, "rb") as f:
        ok = parser.parse(f.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(
            "{}: TensorRT cannot parse this ONNX: {}".format(onnx_path, errors[0] if errors else "see the build log")
        )
    return parser


def _layer_types(network: "trt.INetworkDefinition") -> List[object]:
    return [network.get_layer(i).type for i in range(network.num_layers)]


def _has_qdq(network: "trt.INetworkDefinition") -> bool:
    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return any(t in kinds for t in _layer_types(network))


def _has_half(network: "trt.INetworkDefinition") -> bool:
    """Whether any layer of a strongly typed network produces fp16 tensors (an fp16 ONNX)."""
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if any(layer.get_output(j).dtype == trt.DataType.HALF for j in range(layer.num_outputs)):
            return True
    return False


def _check_source(network: "trt.INetworkDefinition", plan: BuildPlan, onnx_path: str, trt_version: str) -> None:
    if plan.source == "qdq" and not _has_qdq(network):
        raise BuildError(
            f"{onnx_path}: int8 on the GPU needs a Q/DQ ONNX (explicit quantization), this one has no QuantizeLinear nodes"
        )
    if plan.source == "fp16" and not _has_half(network):
        raise BuildError(
            f"{onnx_path}: fp16 on TensorRT {trt_version} builds a strongly typed network, so it needs an fp16 ONNX; "
            "this one has no fp16 tensors (build from the student_onnx_fp16 artifact)"
        )
    if plan.source == "fp32" and plan.calibrate and _has_qdq(network):
        raise BuildError(f"{onnx_path}: calibrated int8 is built from an fp32 ONNX; this one has Q/DQ nodes")


def _timing_cache(config: "trt.IBuilderConfig", cache_path: str, warnings: List[str]) -> "trt.ITimingCache":
    """Read the timing cache at `cache_path` into `config`; a corrupt or mismatched one is discarded with a warning."""
    data = b""
    if os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            data = f.read()
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if not data:
        raise BuildError("TensorRT could not create an empty timing cache")
    why = "is corrupt" if cache is None else "was made on another GPU or TensorRT version"
    warnings.append(f"timing cache {cache_path} {why}: discarded, rebuilt by this build")
    os.remove(cache_path)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise BuildError("TensorRT could not create an empty timing cache")
    return cache


def _profile(
    builder: "trt.Builder", network: "trt.INetworkDefinition", opts: BuildOptions
) -> Optional["trt.IOptimizationProfile"]:
    lo, opt, hi = opts.batch_profile()
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if not any(-1 in _dims(t.shape) for t in inputs):
        return None
    profile = builder.create_optimization_profile()
    for t in inputs:
        dims = _dims(t.shape)
        if -1 in dims[1:]:
            raise BuildError(f"input {t.name!r} has dynamic axes other than the batch: {dims}")
        profile.set_shape(t.name, [lo] + dims[1:], [opt] + dims[1:], [hi] + dims[1:])
    return profile


def _configure(
    builder: "trt.Builder", opts: BuildOptions, plan: BuildPlan, profile: Optional["trt.IOptimizationProfile"]
) -> "trt.IBuilderConfig":
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if plan.flags:
        STEPS["_set_precision_flags"](config, plan)
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if profile is not None and config.add_optimization_profile(profile) < 0:
        raise BuildError(
            "TensorRT refused the optimization profile {} (add_optimization_profile returned -1)".format(
                "/".join(str(b) for b in opts.batch_profile())
            )
        )
    return config


def _dla_layers(network: "trt.INetworkDefinition", config: "trt.IBuilderConfig") -> Dict[str, object]:
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    return trt_options.dla_summary(
        [layer.name for layer in layers], [bool(config.can_run_on_DLA(layer)) for layer in layers]
    )


def _inspect(serialized: bytes, dla_core: Optional[int], warnings: List[str]) -> Optional[dict]:
    """The engine inspector's JSON, or None with a warning: the engine is written and usable without it."""
    runtime = trt.Runtime(process_logger())
    if dla_core is not None:
        runtime.DLA_core = dla_core
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        warnings.append("the built engine did not deserialize for inspection: no layers.json")
        return None
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        doc = json.loads(text)
    except ValueError as e:
        warnings.append(f"the engine inspector's JSON does not parse ({e}): no layers.json")
        return None
    if not isinstance(doc, dict):
        warnings.append("the engine inspector's JSON is not an object: no layers.json")
        return None
    return doc


def _tensors(network: "trt.INetworkDefinition", count: int, get: Callable) -> List[Dict[str, object]]:
    return [
        {"name": t.name, "shape": _dims(t.shape), "dtype": str(t.dtype).split(".")[-1]}
        for t in (get(i) for i in range(count))
    ]


def _calibration_batch(
    network: "trt.INetworkDefinition", opts: BuildOptions, images_shape: Tuple[int, ...], path: str
) -> int:
    """The batch size the calibrator feeds: the network's own batch when the ONNX fixes it, else opt_batch; a
    calibration set whose images are not the input's C x H x W is refused (the calibrator would read past its buffer)."""
    if network.num_inputs != 1:
        raise BuildError(f"int8 calibration feeds one image input; the network has {network.num_inputs}")
    dims = _dims(network.get_input(0).shape)
    if list(images_shape[1:]) != dims[1:]:
        raise BuildError(
            "{}: calibration images are {}, the network input {!r} takes {}".format(
                path, "x".join(map(str, images_shape[1:])), network.get_input(0).name, "x".join(map(str, dims[1:]))
            )
        )
    return opts.batch_profile()[1] if dims[0] == -1 else dims[0]


def _calibrator(
    plan: BuildPlan,
    opts: BuildOptions,
    calibration_images: Optional[str],
    engine_path: str,
    network: "trt.INetworkDefinition",
) -> object:
    import pycuda.driver as cuda

    if not calibration_images or not os.path.exists(calibration_images):
        raise BuildError(
            f"{engine_path}: calibrated int8 needs training images, and there is no calibration set "
            f"({calibration_images or 'none given'}); the export stage writes export/calib.npz"
        )
    try:
        images = load_calibration_set(calibration_images)
    except ValueError as e:
        raise BuildError(str(e)) from None
    batches = CalibrationBatches(images, _calibration_batch(network, opts, images.shape, str(calibration_images)))
    return STEPS["entropy_calibrator"](trt, cuda, batches, CalibrationCache.beside(engine_path))


def build_engine(
    onnx_path: str,
    engine_path: str,
    opts: BuildOptions,
    device_kind: str,
    cache_dir: str,
    shown_paths: Optional[Tuple[str, str]] = None,
    calibration_images: Optional[str] = None,
) -> Dict[str, object]:
    """Build `onnx_path` into `engine_path` with `opts`; returns the sidecar (also written beside the engine).

    The timing cache under `cache_dir` is read before and updated after the build, one file
    per device kind and TensorRT version. `shown_paths` (onnx, engine) replace the real paths
    in the trtexec line, e.g. with run-directory paths. `calibration_images` (a calib.npz) feeds
    the calibrator of a DLA int8 build. Raises BuildError when the build cannot succeed.
    """
    problems = trt_options.validate_options(opts)
    plan = trt_options.build_plan(opts, trt.__version__)
    if plan.refused:
        problems.append(plan.refused)
    if problems:
        raise BuildError("{}: {}".format(engine_path, "; ".join(problems)))
    stem = os.path.splitext(engine_path)[0]
    os.makedirs(os.path.dirname(os.path.abspath(engine_path)), exist_ok=True)
    cache_path = trt_options.timing_cache_path(cache_dir, device_kind, trt.__version__)
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    warnings = []  # type: List[str]
    calibrator = None
    cuda_context = None
    log = process_logger().open(stem + ".build.log")
    try:
        builder = trt.Builder(process_logger())
        if opts.dla_core is not None and opts.dla_core >= builder.num_DLA_cores:
            raise BuildError(
                f"{engine_path}: dla_core {opts.dla_core} does not exist here: this GPU has "
                f"{builder.num_DLA_cores} DLA cores"
            )
        steps = plan.steps()
        network = STEPS[steps[0]](builder)
        _parser = _parse(network, onnx_path)
        _check_source(network, plan, onnx_path, trt.__version__)
        profile = _profile(builder, network, opts)
        config = _configure(builder, opts, plan, profile)
        timing = _timing_cache(config, cache_path, warnings)
        for warning in warnings:
            log.note("edgekd: " + warning)
        inputs = _tensors(network, network.num_inputs, network.get_input)
        outputs = _tensors(network, network.num_outputs, network.get_output)
        dla = _dla_layers(network, config) if opts.dla_core is not None else None
        if plan.calibrate:
            import pycuda.driver as cuda

            cuda.init()
            cuda_context = cuda.Device(0).retain_primary_context()
            cuda_context.push()
            calibrator = _calibrator(plan, opts, calibration_images, engine_path, network)
            STEPS["_attach_calibrator"](config, calibrator, profile)
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if serialized is None:
            detail = log.errors[0] if log.errors else "see " + stem + ".build.log"  # the first: TensorRT's cause
            raise BuildError(f"{onnx_path}: TensorRT could not build a {opts.precision} engine: {detail}")
        data = bytes(serialized)
        write_bytes_atomic(cache_path, bytes(timing.serialize()))
        timing_cache = {"file": os.path.basename(cache_path), "sha256": trt_options.sha256_file(cache_path)}
        write_bytes_atomic(engine_path, data)
        layers = _inspect(data, opts.dla_core, warnings)
    finally:
        if calibrator is not None:
            calibrator.free()  # type: ignore[attr-defined]
        if cuda_context is not None:
            cuda_context.pop()
        log.close()

    if layers is not None:
        write_json_atomic(stem + ".layers.json", layers)
        if dla is not None:
            dla["engine"] = trt_options.engine_dla_summary(layers)
    calibration = None
    if calibrator is not None:
        calibration = {
            "images": trt_options.sha256_file(calibration_images),  # type: ignore[arg-type]
            "batches": calibrator.used,  # type: ignore[attr-defined]  # 0 when the cache held the scales
            "cache": os.path.basename(CalibrationCache.beside(engine_path).path),
        }
    with open(stem + ".trtexec.txt", "w") as f:
        shown_onnx, shown_engine = shown_paths or (onnx_path, engine_path)
        calib_shown = os.path.splitext(shown_engine)[0] + ".calib.cache" if plan.calibrate else None
        f.write(
            trt_options.trtexec_command(
                shown_onnx,
                shown_engine,
                opts,
                inputs,
                cache_path,
                trt_version=trt.__version__,
                calibration_cache=calib_shown,
            )
            + "\n"
        )
    gpu_name, capability = gpu_identity()
    sidecar = trt_options.make_sidecar(
        opts,
        trt.__version__,
        gpu_name,
        capability,
        device_kind,
        source_onnx=os.path.basename(onnx_path),
        source_sha256=trt_options.sha256_file(onnx_path),
        engine_sha256=trt_options.sha256_file(engine_path),
        inputs=inputs,
        outputs=outputs,
        dla=dla,
        build_seconds=seconds,
        created=datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        sm_count=sm_count(),
        plan=plan,
        calibration=calibration,
        warnings=warnings + log.warnings,
        timing_cache=timing_cache,
    )
    write_json_atomic(stem + ".json", sidecar)
    return sidecar
