"""A TensorRT stand-in for tests (tests/standins/, never installed with edgekd, never on a user's path).

It implements exactly the TensorRT calls edgekd/ondevice makes, with TensorRT's names and signatures
(tests/standins/test_standins.py checks every name against the release the stand-in claims), and runs
the network on the CPU with onnx's numpy reference evaluator, so a device-like environment needs no
onnxruntime. "Device" memory is pycuda stand-in memory (host numpy arrays). It proves the flow, never
a figure: `__version__` ends in `-standin`, and edgekd labels whatever it measures `tensorrt-standin`.

The release it behaves as comes from EDGEKD_TRT_STANDIN (default 8.5.2; also e.g. 10.3.0, 11.1.0):
names a release lacks are absent, and the builder refuses what that release refuses:
- precision flags (FP16, INT8) on a strongly typed network (10.x, 11.x);
- a strongly typed network on the DLA (before 11.4), or any DLA build that is dynamic, fp32, or weakly typed on 11.x;
- an int8 build with neither a calibrator nor Q/DQ scales;
- a network the parser could not fill (build_serialized_network returns None, errors in the log);
- an engine serialized by another version (deserialize_cuda_engine returns None).

Fault injection, for tests only: EDGEKD_TRT_STANDIN_FAULT=qdq-assert makes the builder fail every network that has
Q/DQ layers the way TensorRT 8.5.2 fails some Q/DQ models on a Xavier (NVIDIA/TensorRT #4527: an internal assertion
in the weight convertor, then build_serialized_network returns None); qdq-no-impl fails them the way 8.6 does on
some (Model-Optimizer #10, #50: "Could not find any implementation"). Real TensorRT 8.5/8.6 builds most Q/DQ
models, the stand-in without the switch too: a test sets the switch for the one device whose failure it exercises.
"""

import enum
import json
import os
import time

import numpy as np

_RELEASE = os.environ.get("EDGEKD_TRT_STANDIN", "8.5.2")
_FAULT = os.environ.get("EDGEKD_TRT_STANDIN_FAULT", "")  # test-only fault injection (see the module docstring)
_FAULTS = {
    "qdq-assert": (
        "2: [weightConvertors.cpp::quantizeBiasCommon::337] Error Code 2: Internal Error (Assertion getter(i) != 0 "
        "failed. )",
        "2: [builder.cpp::buildSerializedNetwork::751] Error Code 2: Internal Error (Assertion engine != nullptr "
        "failed. )",
    ),
    "qdq-no-impl": (
        "10: [optimizer.cpp::computeCosts::3869] Error Code 10: Internal Error (Could not find any implementation "
        "for node /conv/Conv + /relu/Relu.)",
    ),
}
if _FAULT and _FAULT not in _FAULTS:
    raise ImportError(f"EDGEKD_TRT_STANDIN_FAULT={_FAULT!r}: not a fault the stand-in injects ({', '.join(_FAULTS)})")
__version__ = _RELEASE + "-standin"


def _family(version):
    major, minor = (int(p) for p in version.split(".")[:2])
    if major == 8:
        return "8.5"
    return "10" if major == 10 else "11"


_FAMILY = _family(_RELEASE)
_MAJOR_MINOR = tuple(int(p) for p in _RELEASE.split(".")[:2])


def _members(pairs):
    """(name, value) pairs, each either for every family or for the families named after it."""
    return [(name, value) for name, value, *only in pairs if not only or _FAMILY in only[0]]


class _Enum(enum.Enum):
    """pybind11 enums: int() gives the value, str() `Type.NAME`."""

    def __int__(self):
        return self.value

    def __index__(self):
        return self.value

    def __lt__(self, other):
        return int(self) < int(other)


def _enum(name, pairs):
    return _Enum(name, _members(pairs))


DataType = _enum(
    "DataType",
    [("FLOAT", 0), ("HALF", 1), ("INT8", 2), ("INT32", 3), ("BOOL", 4), ("UINT8", 5), ("INT64", 8, ("10", "11"))],
)
TensorIOMode = _enum("TensorIOMode", [("NONE", 0), ("INPUT", 1), ("OUTPUT", 2)])
NetworkDefinitionCreationFlag = _enum(
    "NetworkDefinitionCreationFlag", [("EXPLICIT_BATCH", 0, ("8.5", "10")), ("STRONGLY_TYPED", 1, ("10", "11"))]
)
BuilderFlag = _enum(
    "BuilderFlag",
    [
        ("FP16", 0, ("8.5", "10")),
        ("INT8", 1),
        ("GPU_FALLBACK", 3),
        ("PREFER_PRECISION_CONSTRAINTS", 12, ("8.5", "10")),
        ("OBEY_PRECISION_CONSTRAINTS", 13, ("8.5", "10")),
    ],
)
DeviceType = _enum("DeviceType", [("GPU", 0), ("DLA", 1)])
MemoryPoolType = _enum("MemoryPoolType", [("WORKSPACE", 0)])
ProfilingVerbosity = _enum("ProfilingVerbosity", [("LAYER_NAMES_ONLY", 0), ("NONE", 1), ("DETAILED", 2)])
LayerInformationFormat = _enum("LayerInformationFormat", [("ONELINE", 0), ("JSON", 1)])
LayerType = _enum(
    "LayerType",
    [
        ("CONVOLUTION", 0),
        ("ACTIVATION", 2),
        ("POOLING", 3),
        ("SCALE", 5),
        ("SOFTMAX", 6),
        ("ELEMENTWISE", 9),
        ("SHUFFLE", 14),
        ("REDUCE", 17),
        ("MATRIX_MULTIPLY", 19),
        ("IDENTITY", 22),
        ("CONSTANT", 20),
        ("QUANTIZE", 33),
        ("DEQUANTIZE", 34),
        ("CAST", 46, ("10", "11")),
    ],
)

_LAYER_OF_OP = {
    "Conv": "CONVOLUTION",
    "Relu": "ACTIVATION",
    "Sigmoid": "ACTIVATION",
    "Clip": "ACTIVATION",
    "MaxPool": "POOLING",
    "AveragePool": "POOLING",
    "GlobalAveragePool": "REDUCE",
    "BatchNormalization": "SCALE",
    "Softmax": "SOFTMAX",
    "Add": "ELEMENTWISE",
    "Mul": "ELEMENTWISE",
    "Flatten": "SHUFFLE",
    "Reshape": "SHUFFLE",
    "Transpose": "SHUFFLE",
    "Gemm": "MATRIX_MULTIPLY",
    "MatMul": "MATRIX_MULTIPLY",
    "Constant": "CONSTANT",
    "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE",
    "Cast": "CAST" if _FAMILY != "8.5" else "IDENTITY",
    # what torchvision's mobilenet_v3 exports with (onnx-tensorrt imports them on every release edgekd supports)
    "Identity": "IDENTITY",
    "HardSigmoid": "ACTIVATION",
    "HardSwish": "ACTIVATION",
}
_DLA_LAYERS = {"CONVOLUTION", "ACTIVATION", "POOLING", "SCALE", "ELEMENTWISE", "REDUCE"}
_NUMPY_OF = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "BOOL": "bool", "UINT8": "uint8"}
_NUMPY_OF["INT64"] = "int64"
_MAGIC = b"TRT-STANDIN-ENGINE\n"


def nptype(trt_type):
    """TensorRT's own map; like 8.5.2's, it names np.bool, which numpy >= 1.24 removed (NVIDIA/TensorRT #2557)."""
    if _FAMILY == "8.5":
        bool_type = np.bool
    else:
        bool_type = np.bool_
    mapping = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8}
    mapping.update({DataType.INT32: np.int32, DataType.BOOL: bool_type, DataType.UINT8: np.uint8})
    return mapping[trt_type]


class Dims(tuple):
    """TensorRT's Dims: a sequence of ints."""

    def __new__(cls, shape=()):
        return tuple.__new__(cls, (int(d) for d in shape))


class ILogger:
    class Severity(_Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self):
        pass

    def log(self, severity, msg):
        raise NotImplementedError


class Logger(ILogger):
    def __init__(self, min_severity=ILogger.Severity.WARNING):
        ILogger.__init__(self)
        self.min_severity = min_severity

    def log(self, severity, msg):
        if int(severity) <= int(self.min_severity):
            print(f"[TRT] {msg}")


_LOGGERS = []  # TensorRT keeps the first logger it is given, for the whole process


def _log(severity, msg):
    if _LOGGERS:
        _LOGGERS[0].log(severity, msg)


def _keep_logger(logger):
    if not _LOGGERS:
        _LOGGERS.append(logger)


class ITensor:
    def __init__(self, name, shape, dtype):
        self.name = name
        self.shape = Dims(shape)
        self.dtype = dtype


class ILayer:
    def __init__(self, name, layer_type, outputs):
        self.name = name
        self.type = layer_type
        self._outputs = outputs

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_output(self, index):
        return self._outputs[index]


class INetworkDefinition:
    def __init__(self, flags):
        self.flags = flags
        self._layers, self._inputs, self._outputs = [], [], []
        self._onnx = None

    def get_flag(self, flag):
        return bool(self.flags & (1 << int(flag)))

    @property
    def num_layers(self):
        return len(self._layers)

    def get_layer(self, index):
        return self._layers[index]

    @property
    def num_inputs(self):
        return len(self._inputs)

    def get_input(self, index):
        return self._inputs[index]

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_output(self, index):
        return self._outputs[index]


class ParserError:
    def __init__(self, desc, node=-1):
        self._desc, self._node = desc, node

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def __str__(self):
        return f"In node {self._node} (parseGraph): INVALID_GRAPH: {self._desc}"


_TYPE_OF_ONNX = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}


class OnnxParser:
    def __init__(self, network, logger):
        _keep_logger(logger)
        self.network = network
        self._errors = []

    @property
    def num_errors(self):
        return len(self._errors)

    def get_error(self, index):
        return self._errors[index]

    def clear_errors(self):
        self._errors = []

    def parse(self, model, path=None):
        import onnx

        try:
            proto = onnx.load_from_string(bytes(model))
            onnx.checker.check_model(proto)
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
        except Exception as e:  # protobuf decode errors, checker and inference failures
            self._errors.append(ParserError(str(e).splitlines()[0] if str(e) else type(e).__name__))
            return False
        types = {}
        for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            elem = info.type.tensor_type.elem_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in info.type.tensor_type.shape.dim]
            types[info.name] = (_TYPE_OF_ONNX.get(elem), dims)
        for init in inferred.graph.initializer:
            types.setdefault(init.name, (_TYPE_OF_ONNX.get(init.data_type), list(init.dims)))
        net = self.network
        for i, node in enumerate(inferred.graph.node):
            kind = _LAYER_OF_OP.get(node.op_type)
            if kind is None:
                self._errors.append(ParserError(f"No importer registered for op: {node.op_type}", i))
                return False
            outputs = [
                ITensor(o, types.get(o, (None, []))[1], DataType[types.get(o, ("FLOAT",))[0] or "FLOAT"])
                for o in node.output
            ]
            net._layers.append(ILayer(node.name or f"/{node.op_type}_{i}", LayerType[kind], outputs))
        initializers = {init.name for init in inferred.graph.initializer}
        for value in inferred.graph.input:
            if value.name not in initializers:
                dtype, dims = types[value.name]
                net._inputs.append(ITensor(value.name, dims, DataType[dtype]))
        for value in inferred.graph.output:
            dtype, dims = types[value.name]
            net._outputs.append(ITensor(value.name, dims, DataType[dtype]))
        net._onnx = bytes(model)
        return True


class IOptimizationProfile:
    def __init__(self):
        self._shapes = {}

    def set_shape(self, input, min, opt, max):
        self._shapes[input] = [list(min), list(opt), list(max)]

    def get_shape(self, input):
        return [Dims(s) for s in self._shapes.get(input, [])]


class ITimingCache:
    def __init__(self, data):
        self._data = data

    def serialize(self):
        return IHostMemory(self._data)


class IHostMemory:
    def __init__(self, data):
        self._data = bytes(data)

    def __bytes__(self):
        return self._data

    @property
    def nbytes(self):
        return len(self._data)


class IBuilderConfig:
    def __init__(self):
        self._flags = set()
        self._profiles = []
        self._pools = {}
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.default_device_type = DeviceType.GPU
        self.DLA_core = -1
        self._timing = None
        if _FAMILY != "11":
            self.int8_calibrator = None
            self._calibration_profile = None

    def set_flag(self, flag):
        self._flags.add(flag)

    def get_flag(self, flag):
        return flag in self._flags

    def clear_flag(self, flag):
        self._flags.discard(flag)

    def set_memory_pool_limit(self, pool, pool_size):
        self._pools[pool] = pool_size

    def add_optimization_profile(self, profile):
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def can_run_on_DLA(self, layer):
        return layer.type.name in _DLA_LAYERS

    def create_timing_cache(self, serialized_timing_cache):
        data = bytes(serialized_timing_cache)
        if data and not data.startswith(b"TIMING " + __version__.encode() + b"\n"):
            _log(ILogger.Severity.WARNING, "The timing cache is corrupt or from another TensorRT version")
            return None
        return ITimingCache(data or b"TIMING " + __version__.encode() + b"\n")

    def set_timing_cache(self, cache, ignore_mismatch):
        self._timing = cache
        return True

    def get_timing_cache(self):
        return self._timing


if _FAMILY != "11":

    def _set_calibration_profile(self, profile):
        self._calibration_profile = profile
        return True

    IBuilderConfig.set_calibration_profile = _set_calibration_profile

    class IInt8Calibrator:
        def __init__(self):
            pass

    class IInt8EntropyCalibrator2(IInt8Calibrator):
        def __init__(self):
            IInt8Calibrator.__init__(self)


class Builder:
    def __init__(self, logger):
        _keep_logger(logger)
        _log(ILogger.Severity.INFO, "[MemUsageChange] Init CUDA: CPU +0, GPU +0 (MiB)")  # as TensorRT does
        self.num_DLA_cores = 2 if os.environ.get("EDGEKD_TRT_STANDIN_DLA", "1") == "1" else 0

    def create_network(self, flags=0):
        known = sum(1 << int(f) for f in NetworkDefinitionCreationFlag)
        if flags & ~known:
            _log(ILogger.Severity.ERROR, f"createNetworkV2: unknown network creation flags {flags:#x}")
        return INetworkDefinition(flags)

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def create_builder_config(self):
        return IBuilderConfig()

    def _refuse(self, why):
        _log(ILogger.Severity.ERROR, why)
        return None

    def build_serialized_network(self, network, config):
        if network._onnx is None or not network._outputs:
            return self._refuse("4: [network.cpp::validate] Network must have at least one output")
        strongly = _FAMILY != "8.5" and network.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if _FAMILY == "11" and not strongly:
            return self._refuse("4: [network.cpp::validate] weakly typed networks were removed; use STRONGLY_TYPED")
        flags = {f.name for f in config._flags}
        if strongly and flags & {"FP16", "INT8"}:
            return self._refuse(
                "4: [network.cpp::validate] Error Code 4: API Usage Error (builder flags kFP16/kINT8 are not "
                "allowed for strongly typed networks)"
            )
        dynamic = [t.name for t in network._inputs if -1 in t.shape]
        profiles = {}
        for name in dynamic:
            found = [p._shapes[name] for p in config._profiles if name in p._shapes]
            if not found:
                return self._refuse(f"4: input {name!r} has dynamic dimensions and no optimization profile sets it")
            profiles[name] = found[0]
        dla = config.default_device_type == DeviceType.DLA
        if dla:
            if config.DLA_core < 0 or config.DLA_core >= self.num_DLA_cores:
                return self._refuse(f"DLA core {config.DLA_core} does not exist ({self.num_DLA_cores} cores)")
            if strongly and _MAJOR_MINOR < (11, 4):
                return self._refuse(f"strongly typed networks are not supported on DLA in TensorRT {_RELEASE}")
            if any(lo != hi for lo, _, hi in profiles.values()):
                return self._refuse("DLA does not support dynamic shapes: every profile needs min == opt == max")
            if not strongly and not flags & {"FP16", "INT8"}:
                return self._refuse("DLA supports fp16 and int8 only: set BuilderFlag.FP16 or BuilderFlag.INT8")
        qdq = any(layer.type.name in ("QUANTIZE", "DEQUANTIZE") for layer in network._layers)
        if qdq and _FAULT in _FAULTS:  # test-only: a Q/DQ model this TensorRT cannot build (module docstring)
            for message in _FAULTS[_FAULT]:
                _log(ILogger.Severity.ERROR, message)
            return None
        half = any(t.dtype == DataType.HALF for layer in network._layers for t in layer._outputs)
        calibration = None
        if "INT8" in flags and not qdq:
            calibrator = getattr(config, "int8_calibrator", None)
            if calibrator is None:
                return self._refuse("int8: no calibrator and no Q/DQ scales: missing dynamic range for every tensor")
            calibration = self._calibrate(network, config, calibrator, profiles)
            if calibration is None:
                return None
        placed = []
        for layer in network._layers:
            on_dla = dla and config.can_run_on_DLA(layer)
            if dla and not on_dla:
                if BuilderFlag.GPU_FALLBACK not in config._flags:
                    return self._refuse(f"{layer.name}: cannot run on DLA and GPU fallback is not enabled")
                _log(
                    ILogger.Severity.WARNING,
                    f"Layer '{layer.name}' ({layer.type.name}) is not supported on DLA, falling back to GPU.",
                )
            placed.append({"name": layer.name, "type": layer.type.name, "dla": on_dla})
        precision = "int8" if "INT8" in flags or qdq else "fp16" if "FP16" in flags or half else "fp32"
        if dla and precision == "fp32":
            return self._refuse("DLA supports fp16 and int8 only: this network has neither")
        _log(ILogger.Severity.INFO, f"stand-in engine: {precision}, {'DLA' if dla else 'GPU'}, {len(placed)} layers")
        header = {
            "version": __version__,
            "precision": precision,
            "dla_core": config.DLA_core if dla else None,
            "strongly_typed": strongly,
            "layers": placed,
            "profiles": {n: s for n, s in profiles.items()},
            "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network._inputs],
            "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network._outputs],
            "calibration": calibration,
            "verbosity": config.profiling_verbosity.name,
        }
        time.sleep(0)  # the build itself: nothing to optimise on a CPU
        return IHostMemory(_MAGIC + json.dumps(header).encode() + b"\n" + network._onnx)

    def _calibrate(self, network, config, calibrator, profiles):
        """Run the calibrator's protocol: cache first, else get_batch() until None, then write the cache."""
        from pycuda import driver

        cached = calibrator.read_calibration_cache()
        if cached:
            return {"from_cache": True}
        profile = getattr(config, "_calibration_profile", None)
        shapes = {}
        for t in network._inputs:
            if t.name in profiles:
                if profile is None or t.name not in profile._shapes:
                    _log(ILogger.Severity.ERROR, "calibration of a dynamic-shape network needs set_calibration_profile")
                    return None
                shapes[t.name] = profile._shapes[t.name][1]
            else:
                shapes[t.name] = list(t.shape)
        names = [t.name for t in network._inputs]
        dtypes = {t.name: np.dtype(_NUMPY_OF[t.dtype.name]) for t in network._inputs}
        peaks, batches = {n: 0.0 for n in names}, 0
        while True:
            pointers = calibrator.get_batch(names)
            if pointers is None:
                break
            if len(pointers) != len(names):
                _log(ILogger.Severity.ERROR, f"get_batch returned {len(pointers)} pointers for {len(names)} inputs")
                return None
            for name, pointer in zip(names, pointers):
                n = int(np.prod(shapes[name])) * dtypes[name].itemsize
                data = np.frombuffer(driver.device_memory(pointer, n).tobytes(), dtype=dtypes[name])
                peaks[name] = max(peaks[name], float(np.abs(data).max()))
            batches += 1
        if batches == 0:
            _log(ILogger.Severity.ERROR, "Calibration failure: the calibrator gave no batches")
            return None
        tag = "TRT-{}-EntropyCalibration2".format(_RELEASE.replace(".", "")[:4])
        lines = [tag] + [f"{n}: {np.float32(peaks[n] / 127.0).tobytes()[::-1].hex()}" for n in names]
        calibrator.write_calibration_cache(IHostMemory(("\n".join(lines) + "\n").encode()))
        return {"from_cache": False, "batches": batches}


class EngineInspector:
    def __init__(self, engine):
        self._engine = engine

    def get_engine_information(self, format):
        layers, run = [], []

        def flush():
            if run:
                layers.append({"Name": f"{{ForeignNode[{run[0]}...{run[-1]}]}}", "LayerType": "DLA"})
                del run[:]

        for layer in self._engine._header["layers"]:
            if layer["dla"]:
                run.append(layer["name"])
                continue
            flush()
            layers.append({"Name": layer["name"], "LayerType": layer["type"]})
        flush()
        if self._engine._header["dla_core"] is not None:
            first = self._engine._header["inputs"][0][0]
            layers = [{"Name": first + " to nvm", "LayerType": "Reformat"}] + layers
            layers.append({"Name": self._engine._header["outputs"][0][0] + " from nvm", "LayerType": "Reformat"})
        if format == LayerInformationFormat.JSON:
            return json.dumps({"Layers": layers, "Bindings": [t[0] for t in self._engine._io]})
        return "\n".join(layer["Name"] for layer in layers)


class ICudaEngine:
    def __init__(self, header, onnx_bytes):
        self._header = header
        self._onnx = onnx_bytes
        self._io = [(n, s, d, TensorIOMode.INPUT) for n, s, d in header["inputs"]]
        self._io += [(n, s, d, TensorIOMode.OUTPUT) for n, s, d in header["outputs"]]

    def _find(self, name):
        for entry in self._io:
            if entry[0] == name:
                return entry
        raise KeyError(name)

    @property
    def num_io_tensors(self):
        return len(self._io)

    def get_tensor_name(self, index):
        return self._io[index][0]

    def get_tensor_mode(self, name):
        return self._find(name)[3]

    def get_tensor_shape(self, name):
        return Dims(self._find(name)[1])

    def get_tensor_dtype(self, name):
        return DataType[self._find(name)[2]]

    def get_tensor_profile_shape(self, name, profile_index):
        shapes = self._header["profiles"].get(name)
        if profile_index != 0 or shapes is None:
            shape = self._find(name)[1]
            return [Dims(shape)] * 3
        return [Dims(s) for s in shapes]

    def create_execution_context(self, strategy=None):
        return IExecutionContext(self)

    def create_engine_inspector(self):
        return EngineInspector(self)

    def serialize(self):
        return IHostMemory(_MAGIC + json.dumps(self._header).encode() + b"\n" + self._onnx)


class Runtime:
    def __init__(self, logger):
        _keep_logger(logger)
        self.DLA_core = -1

    def deserialize_cuda_engine(self, serialized_engine):
        data = bytes(serialized_engine)
        if not data.startswith(_MAGIC):
            _log(
                ILogger.Severity.ERROR,
                "1: [stdArchiveReader.cpp] Serialization assertion magicTagRead == kMAGIC_TAG failed",
            )
            return None
        line, _, onnx_bytes = data[len(_MAGIC) :].partition(b"\n")
        header = json.loads(line.decode())
        if header["version"] != __version__:
            _log(
                ILogger.Severity.ERROR,
                "1: [stdArchiveReader.cpp] The engine plan file is not compatible with this version of TensorRT, "
                "expecting library version {} got {}, please rebuild.".format(__version__, header["version"]),
            )
            return None
        if header["dla_core"] is not None and self.DLA_core != header["dla_core"]:
            _log(
                ILogger.Severity.ERROR,
                "engine was built for DLA core {}; set Runtime.DLA_core first".format(header["dla_core"]),
            )
            return None
        return ICudaEngine(header, onnx_bytes)


def _evaluator(reference_evaluator, onnx_bytes):
    """onnx's reference evaluator of the network; newer onnx releases keep only opset >= 19 Q/DQ kernels,
    so a model they cannot run as it is runs converted to opset 19 (same int8 Q/DQ semantics)."""
    try:
        return reference_evaluator(onnx_bytes)
    except RuntimeError as e:
        if "No implementation for operator" not in str(e):
            raise
    import onnx
    from onnx import version_converter

    return reference_evaluator(version_converter.convert_version(onnx.load_from_string(onnx_bytes), 19))


class IExecutionContext:
    def __init__(self, engine):
        self.engine = engine
        self._shapes = {n: list(s) for n, s, _, mode in engine._io if mode == TensorIOMode.INPUT}
        self._addresses = {}
        self._session = None

    def set_input_shape(self, name, shape):
        shape = [int(d) for d in shape]
        declared = self.engine._find(name)[1]
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        ok = len(shape) == len(declared) and all(
            (d == s if s != -1 else lo[i] <= d <= hi[i]) for i, (d, s) in enumerate(zip(shape, declared))
        )
        if not ok:
            _log(
                ILogger.Severity.ERROR,
                f"3: [executionContext.cpp::setInputShape] {name}: shape {shape} is outside the profile",
            )
            return False
        self._shapes[name] = shape
        return True

    def _batch(self):
        return [s[0] for s in self._shapes.values() if s and s[0] != -1]

    def get_tensor_shape(self, name):
        entry = self.engine._find(name)
        if entry[3] == TensorIOMode.INPUT:
            return Dims(self._shapes[name])
        batch = self._batch()
        return Dims([(batch[0] if batch else -1) if d == -1 else d for d in entry[1]])

    def set_tensor_address(self, name, memory):
        self.engine._find(name)
        self._addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle):
        from onnx.reference import ReferenceEvaluator
        from pycuda import driver

        if self._session is None:
            self._session = _evaluator(ReferenceEvaluator, self.engine._onnx)
        feeds = {}
        try:
            for name, _, dtype, mode in self.engine._io:
                if name not in self._addresses:
                    _log(ILogger.Severity.ERROR, f"3: [executionContext.cpp::enqueueV3] tensor {name} has no address")
                    return False
                if mode == TensorIOMode.INPUT:
                    shape, np_type = self._shapes[name], np.dtype(_NUMPY_OF[dtype])
                    if -1 in shape:
                        _log(ILogger.Severity.ERROR, f"3: [executionContext.cpp::enqueueV3] input {name} has no shape")
                        return False
                    raw = driver.device_memory(self._addresses[name], int(np.prod(shape)) * np_type.itemsize)
                    feeds[name] = np.frombuffer(raw.tobytes(), dtype=np_type).reshape(shape)
            results = self._session.run(None, feeds)
            for (name, _, dtype, _), value in zip([e for e in self.engine._io if e[3] == TensorIOMode.OUTPUT], results):
                out = np.ascontiguousarray(value, dtype=_NUMPY_OF[dtype]).reshape(-1).view(np.uint8)
                driver.device_memory(self._addresses[name], out.nbytes)[:] = out
        except driver.LogicError as e:
            _log(ILogger.Severity.ERROR, f"1: [executionContext.cpp::enqueueV3] {e}")
            return False
        return True
