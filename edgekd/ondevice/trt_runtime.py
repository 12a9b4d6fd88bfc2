"""Run a TensorRT engine (named-tensor API, TensorRT >= 8.5) with pycuda buffers, one stream and CUDA-event timing.

An engine only loads next to its sidecar (`<stem>.json`) and only on the GPU (name, compute
capability, SM count) and TensorRT version it names: anything else is refused with the reason.
TrtRunner is a context manager like Polygraphy's runners: it pushes GPU 0's primary context
while open and pops it exactly once, on close() or when __init__ fails, so pycuda never exits
with a context left on its stack (it aborts the process then).
"""

import json
import os
import sys
from typing import Callable, Dict, Tuple

import numpy as np
import pycuda.driver as cuda
import tensorrt as trt

from .runtime import Runtime
from .trt_options import numpy_dtype_name, runtime_name, sidecar_mismatch


class EngineMismatch(Exception):
    """The engine was built for another GPU or TensorRT version, or its sidecar is missing."""


class EnqueueFailed(RuntimeError):
    """TensorRT refused to run the engine (set_input_shape or execute_async_v3 returned False)."""


class LogFile:
    """One build's log: TensorRT's messages at INFO or worse, with the errors and warnings kept for the sidecar."""

    def __init__(self, path: str, owner: "ProcessLogger") -> None:
        self.file = open(path, "w")  # noqa: SIM115 -- held until close()
        self.owner = owner
        self.errors = []  # type: List[str]
        self.warnings = []  # type: List[str]
        self.messages = 0

    def write(self, severity: "trt.ILogger.Severity", msg: str) -> None:
        self.messages += 1
        if int(severity) <= int(trt.ILogger.Severity.INFO):
            self.note("[{}] {}".format(str(severity).split(".")[-1], msg))
        if int(severity) <= int(trt.ILogger.Severity.ERROR):
            self.errors.append(msg)
        elif int(severity) == int(trt.ILogger.Severity.WARNING):
            self.warnings.append(msg)  # DLA fallbacks, fp16 overflow: the sidecar keeps them

    def note(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.owner.sink is self:
            self.owner.sink = None
        if self.messages == 0:
            why = (
                "TensorRT sent no messages to this log: another TensorRT logger was registered first in this "
                "process (TensorRT keeps one per process)"
            )
            self.warnings.append(why)
            self.note("edgekd: " + why)
        self.file.close()


class ProcessLogger(trt.ILogger):
    """The one TensorRT logger edgekd gives TensorRT in a process (TensorRT keeps the first logger it gets).

    A build routes messages to its log file with open(); otherwise warnings and errors go to stderr.
    """

    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.sink = None  # type: Optional[LogFile]

    def log(self, severity: "trt.ILogger.Severity", msg: str) -> None:
        sink = self.sink
        if sink is not None:
            sink.write(severity, msg)
        elif int(severity) <= int(trt.ILogger.Severity.WARNING):
            sys.stderr.write(f"[TensorRT] {msg}\n")

    def open(self, path: str) -> LogFile:
        self.sink = LogFile(path, self)
        return self.sink


_LOGGER = []  # type: List[ProcessLogger]


def process_logger() -> ProcessLogger:
    """This process's ProcessLogger, made on first use."""
    if not _LOGGER:
        _LOGGER.append(ProcessLogger())
    return _LOGGER[0]


def numpy_dtype(trt_dtype: "trt.DataType") -> np.dtype:
    """numpy dtype of a trt.DataType through edgekd's own map (trt.nptype breaks with numpy >= 1.24 on 8.5)."""
    return np.dtype(numpy_dtype_name(trt_dtype))


def sm_count() -> int:
    """Streaming multiprocessors of CUDA device 0 (8 on an AGX Xavier, 6 on a Xavier NX)."""
    cuda.init()
    return int(cuda.Device(0).get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT))  # pycuda, not TensorRT


def gpu_identity() -> Tuple[str, str]:
    """(GPU name, compute capability `major.minor`) of CUDA device 0."""
    cuda.init()
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    return device.name(), f"{major}.{minor}"


def read_sidecar(engine_path: str) -> Dict[str, object]:
    path = os.path.splitext(engine_path)[0] + ".json"
    if not os.path.exists(path):
        raise EngineMismatch(
            f"{engine_path}: no sidecar {os.path.basename(path)} beside the engine; rebuild it with edgekd"
        )
    with open(path) as f:
        return json.load(f)


def check_engine(engine_path: str) -> Dict[str, object]:
    """The engine's sidecar, after checking it was built for this GPU and TensorRT version."""
    sidecar = read_sidecar(engine_path)
    name, capability = gpu_identity()
    why = sidecar_mismatch(sidecar, trt.__version__, name, capability, sm_count())
    if why:
        raise EngineMismatch(f"{engine_path}: {why}; rebuild the engine on this device")
    return sidecar


class TrtRunner(Runtime):
    """One engine with one image input and logits as its first output, on the primary CUDA context of GPU 0.

    The lifecycle of edgekd.ondevice.runtime.Runtime (Polygraphy's runners): constructing only
    records the path; `load()` checks the sidecar, pushes the context and loads (on a failure it
    frees what it took and pops the context before raising); `close()` frees the buffers and pops
    the context exactly once, and later calls do nothing. `with TrtRunner(path) as r:` loads and closes.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str) -> None:
        super().__init__()
        self.engine_path = engine_path
        self.buffers = {}  # type: Dict[str, cuda.DeviceAllocation]
        self.context = None  # type: Optional[trt.IExecutionContext]
        self.engine = None  # type: Optional[trt.ICudaEngine]
        self.stream = None  # type: Optional[cuda.Stream]
        self.cuda_context = None  # type: Optional[cuda.Context]
        self.sidecar = {}  # type: Dict[str, object]
        self.compute_ms = []  # type: List[float]  # GPU compute time of each prepared call (see prepare)

    def _load(self) -> None:
        self.sidecar = check_engine(self.engine_path)
        primary = cuda.Device(0).retain_primary_context()
        primary.push()
        self.cuda_context = primary  # set once pushed: _release() pops only what was pushed
        try:
            self._load_engine(self.engine_path)
        except BaseException:
            self._release()  # pops the context: a later close() has nothing left to pop
            raise

    def _load_engine(self, engine_path: str) -> None:
        runtime = trt.Runtime(process_logger())
        dla = self.sidecar.get("dla_core")
        if dla is not None:
            runtime.DLA_core = int(dla)  # type: ignore[arg-type]  # as trtexec --useDLACore does before deserializing
        with open(engine_path, "rb") as f:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise EngineMismatch(f"{engine_path}: TensorRT could not deserialize this engine")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineMismatch(f"{engine_path}: TensorRT could not create an execution context (out of memory?)")
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise EngineMismatch(
                f"{engine_path}: needs one image input and a logits output, has inputs {inputs} and outputs {outputs}"
            )
        self.input, self.output = inputs[0], outputs[0]
        shape = list(self.engine.get_tensor_shape(self.input))
        if shape[0] == -1:
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input, 0)
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        else:
            self.min_batch = self.max_batch = int(shape[0])
        self.fixed_batch = self.max_batch if self.min_batch == self.max_batch else None  # type: Optional[int]
        self.sample_shape = [int(d) for d in shape[1:]]
        self.input_dtype = numpy_dtype(self.engine.get_tensor_dtype(self.input))
        self.output_dtype = numpy_dtype(self.engine.get_tensor_dtype(self.output))
        self._set_input_shape([self.max_batch] + self.sample_shape)
        for name in names:
            dims = self.context.get_tensor_shape(name)
            dtype = numpy_dtype(self.engine.get_tensor_dtype(name))
            nbytes = max(1, int(np.prod(list(dims))) * dtype.itemsize)
            self.buffers[name] = cuda.mem_alloc(nbytes)
            self.context.set_tensor_address(name, int(self.buffers[name]))
        self.start, self.end = cuda.Event(), cuda.Event()

    def _set_input_shape(self, shape: list) -> None:
        if not self.context.set_input_shape(self.input, shape):
            raise EnqueueFailed(f"TensorRT refused input shape {shape} for {self.input!r}")

    def _set_batch(self, batch: np.ndarray) -> Tuple[int, ...]:
        if not self.min_batch <= batch.shape[0] <= self.max_batch:
            raise ValueError(
                f"batch of {batch.shape[0]} is outside the engine's profile {self.min_batch}..{self.max_batch}"
            )
        host = np.ascontiguousarray(batch, dtype=self.input_dtype)
        self._set_input_shape(list(host.shape))
        cuda.memcpy_htod_async(self.buffers[self.input], host, self.stream)
        self.stream.synchronize()
        return tuple(self.context.get_tensor_shape(self.output))

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise EnqueueFailed("TensorRT could not enqueue the engine (execute_async_v3 returned False)")

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of an NCHW batch (copies in, executes, copies out, waits)."""
        out_shape = self._set_batch(batch)
        out = cuda.pagelocked_empty(out_shape, self.output_dtype)
        self._execute()
        cuda.memcpy_dtoh_async(out, self.buffers[self.output], self.stream)
        self.stream.synchronize()
        return np.array(out, dtype=np.float32)

    def prepare(self, batch: np.ndarray) -> Callable[[], object]:
        """A call timed like every runtime's (host wall clock, input on the host to output on the host): it copies
        the batch in, enqueues the engine, copies the logits out and waits; the batch is converted to the engine's
        input type and its shape set beforehand. TensorRT's GPU compute time of each call (CUDA events around
        the enqueue, trtexec's "GPU Compute Time") is appended to `compute_ms`, an extra column beside the latency.

        The call raises EnqueueFailed when TensorRT refuses: a failed enqueue would time as near zero.
        """
        out_shape = self._set_batch(batch)
        host_in = cuda.pagelocked_empty(tuple(batch.shape), self.input_dtype)
        host_in[...] = batch
        host_out = cuda.pagelocked_empty(out_shape, self.output_dtype)
        device_in, device_out, stream = self.buffers[self.input], self.buffers[self.output], self.stream
        start, end, compute = self.start, self.end, self.compute_ms

        def call() -> np.ndarray:
            cuda.memcpy_htod_async(device_in, host_in, stream)
            start.record(stream)
            self._execute()
            end.record(stream)
            cuda.memcpy_dtoh_async(host_out, device_out, stream)
            stream.synchronize()
            compute.append(end.time_since(start))
            return host_out

        return call

    def describe(self) -> Dict[str, object]:
        """The bench file's `runtime` record; the provider says where the engine runs (GPU, or DLA with GPU fallback)."""
        dla = self.sidecar.get("dla_core")
        provider = f"DLA{dla} + GPU fallback" if dla is not None else "GPU {}".format(self.sidecar.get("gpu"))
        name = runtime_name(trt.__version__)  # `tensorrt-standin` under the tests' stand-in
        return {"name": name, "version": trt.__version__, "provider": provider, "threads": 1}  # one host thread

    def _release(self) -> None:
        if self.cuda_context is None:
            return
        try:
            if self.stream is not None:
                self.stream.synchronize()
            for buffer in self.buffers.values():
                buffer.free()
        finally:
            self.buffers = {}
            self.context = None
            self.engine = None
            self.stream = None
            primary, self.cuda_context = self.cuda_context, None
            primary.pop()
