"""ONNX -> TensorRT engine (TensorRT >= 8.5): fp32, fp16, int8 from a Q/DQ ONNX, optional DLA with GPU fallback.

Each build writes, beside `<stem>.engine`: `<stem>.json` (sidecar), `<stem>.build.log`
(TensorRT's log), `<stem>.trtexec.txt` (the equivalent trtexec line) and, when TensorRT
can describe it, `<stem>.layers.json` (the engine inspector's per-layer view).
"""

import datetime
import json
import os
import time
from typing import Dict, List, Optional, Tuple

import tensorrt as trt

from . import trt_options
from .measure import write_bytes_atomic, write_json_atomic
from .trt_options import BuildOptions
from .trt_runtime import gpu_identity


class BuildError(Exception):
    """A build that cannot succeed (bad options, unparsable ONNX, TensorRT refused); the message says why."""


class FileLogger(trt.ILogger):
    """A TensorRT logger that appends every message at `min_severity` or worse to a file."""

    def __init__(self, path: str, min_severity: "trt.ILogger.Severity" = trt.ILogger.Severity.INFO) -> None:
        trt.ILogger.__init__(self)
        self.file = open(path, "w")  # noqa: SIM115 -- the logger holds it until close()
        self.min_severity = min_severity
        self.errors = []  # type: List[str]

    def log(self, severity: "trt.ILogger.Severity", msg: str) -> None:
        if int(severity) <= int(self.min_severity):
            self.file.write("[{}] {}\n".format(str(severity).split(".")[-1], msg))
            self.file.flush()
        if int(severity) <= int(trt.ILogger.Severity.ERROR):
            self.errors.append(msg)

    def close(self) -> None:
        self.file.close()


def _dims(shape: "trt.Dims") -> List[int]:
    return [int(d) for d in shape]


def _parse(builder: "trt.Builder", logger: FileLogger, onnx_path: str) -> tuple:
    """(network, parser): the network refers to weights the parser owns, so both must stay alive."""
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        ok = parser.parse(f.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(
            "{}: TensorRT cannot parse this ONNX: {}".format(onnx_path, errors[0] if errors else "see the build log")
        )
    return network, parser


def _has_qdq(network: "trt.INetworkDefinition") -> bool:
    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


def _configure(
    builder: "trt.Builder", network: "trt.INetworkDefinition", opts: BuildOptions, timing_cache_bytes: bytes
) -> "trt.IBuilderConfig":
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if opts.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 engines keep fp16 for layers without Q/DQ scales
    if opts.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the Q/DQ nodes, no calibrator
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache = config.create_timing_cache(timing_cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    lo, opt, hi = opts.batch_profile()
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if any(-1 in _dims(t.shape) for t in inputs):
        profile = builder.create_optimization_profile()
        for t in inputs:
            dims = _dims(t.shape)
            if -1 in dims[1:]:
                raise BuildError(f"input {t.name!r} has dynamic axes other than the batch: {dims}")
            profile.set_shape(t.name, [lo] + dims[1:], [opt] + dims[1:], [hi] + dims[1:])
        config.add_optimization_profile(profile)
    return config


def _dla_layers(network: "trt.INetworkDefinition", config: "trt.IBuilderConfig") -> Dict[str, object]:
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    return trt_options.dla_summary(
        [layer.name for layer in layers], [bool(config.can_run_on_DLA(layer)) for layer in layers]
    )


def _inspect(runtime: "trt.Runtime", serialized: bytes) -> Optional[dict]:
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        return None
    inspector = engine.create_engine_inspector()
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def build_engine(
    onnx_path: str,
    engine_path: str,
    opts: BuildOptions,
    device_kind: str,
    cache_dir: str,
    shown_paths: Optional[Tuple[str, str]] = None,
) -> Dict[str, object]:
    """Build `onnx_path` into `engine_path` with `opts`; returns the sidecar (also written beside the engine).

    The timing cache under `cache_dir` is read before and updated after the build, one file
    per device kind and TensorRT version. `shown_paths` (onnx, engine) replace the real paths
    in the trtexec line, e.g. with run-directory paths. Raises BuildError when the build cannot succeed.
    """
    problems = trt_options.validate_options(opts)
    if problems:
        raise BuildError("{}: {}".format(engine_path, "; ".join(problems)))
    stem = os.path.splitext(engine_path)[0]
    folder = os.path.dirname(os.path.abspath(engine_path))
    os.makedirs(folder, exist_ok=True)
    cache_path = trt_options.timing_cache_path(cache_dir, device_kind, trt.__version__)
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    cache_bytes = b""
    if os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            cache_bytes = f.read()

    logger = FileLogger(stem + ".build.log")
    try:
        builder = trt.Builder(logger)
        network, _parser = _parse(builder, logger, onnx_path)
        if opts.precision == "int8" and not _has_qdq(network):
            raise BuildError(
                f"{onnx_path}: int8 needs a Q/DQ ONNX (explicit quantization), this one has no QuantizeLinear nodes"
            )
        config = _configure(builder, network, opts, cache_bytes)
        inputs = [
            {"name": t.name, "shape": _dims(t.shape), "dtype": str(t.dtype).split(".")[-1]}
            for t in (network.get_input(i) for i in range(network.num_inputs))
        ]
        outputs = [
            {"name": t.name, "shape": _dims(t.shape), "dtype": str(t.dtype).split(".")[-1]}
            for t in (network.get_output(i) for i in range(network.num_outputs))
        ]
        dla = _dla_layers(network, config) if opts.dla_core is not None else None
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if serialized is None:
            detail = logger.errors[-1] if logger.errors else "see " + stem + ".build.log"
            raise BuildError(f"{onnx_path}: TensorRT could not build a {opts.precision} engine: {detail}")
        data = bytes(serialized)
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
        write_bytes_atomic(engine_path, data)
        layers = _inspect(trt.Runtime(logger), data)
    finally:
        logger.close()

    if layers is not None:
        write_json_atomic(stem + ".layers.json", layers)
    with open(stem + ".trtexec.txt", "w") as f:
        shown_onnx, shown_engine = shown_paths or (onnx_path, engine_path)
        f.write(trt_options.trtexec_command(shown_onnx, shown_engine, opts, inputs, cache_path) + "\n")
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
    )
    write_json_atomic(stem + ".json", sidecar)
    return sidecar
