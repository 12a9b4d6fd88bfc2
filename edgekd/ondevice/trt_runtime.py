"""Run a TensorRT engine (named-tensor API, TensorRT >= 8.5) with pycuda buffers, one stream and CUDA-event timing.

An engine only loads next to its sidecar (`<stem>.json`) and only on the GPU and
TensorRT version it names: anything else is refused with the reason.
"""

import json
import os
from typing import Callable, Dict, Tuple

import numpy as np
import pycuda.driver as cuda
import tensorrt as trt

from .trt_options import sidecar_mismatch


class EngineMismatch(Exception):
    """The engine was built for another GPU or TensorRT version, or its sidecar is missing."""


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
    why = sidecar_mismatch(sidecar, trt.__version__, name, capability)
    if why:
        raise EngineMismatch(f"{engine_path}: {why}; rebuild the engine on this device")
    return sidecar


class TrtRunner:
    """One engine with one image input and logits as its first output, on the primary CUDA context of GPU 0."""

    def __init__(self, engine_path: str) -> None:
        self.sidecar = check_engine(engine_path)
        self.cuda_context = cuda.Device(0).retain_primary_context()
        self.cuda_context.push()
        self.logger = trt.Logger(trt.Logger.WARNING)
        with open(engine_path, "rb") as f:
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise EngineMismatch(f"{engine_path}: TensorRT could not deserialize this engine")
        self.context = self.engine.create_execution_context()
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
        self.input_dtype = trt.nptype(self.engine.get_tensor_dtype(self.input))
        self.output_dtype = trt.nptype(self.engine.get_tensor_dtype(self.output))
        self.context.set_input_shape(self.input, [self.max_batch] + self.sample_shape)
        self.buffers = {}  # type: Dict[str, cuda.DeviceAllocation]
        for name in names:
            dims = self.context.get_tensor_shape(name)
            dtype = self.input_dtype if name == self.input else trt.nptype(self.engine.get_tensor_dtype(name))
            nbytes = max(1, int(np.prod(list(dims))) * np.dtype(dtype).itemsize)
            self.buffers[name] = cuda.mem_alloc(nbytes)
            self.context.set_tensor_address(name, int(self.buffers[name]))
        self.start, self.end = cuda.Event(), cuda.Event()

    def _set_batch(self, batch: np.ndarray) -> Tuple[int, ...]:
        if not self.min_batch <= batch.shape[0] <= self.max_batch:
            raise ValueError(
                f"batch of {batch.shape[0]} is outside the engine's profile {self.min_batch}..{self.max_batch}"
            )
        host = np.ascontiguousarray(batch, dtype=self.input_dtype)
        self.context.set_input_shape(self.input, list(host.shape))
        cuda.memcpy_htod_async(self.buffers[self.input], host, self.stream)
        self.stream.synchronize()
        return tuple(self.context.get_tensor_shape(self.output))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of an NCHW batch (copies in, executes, copies out, waits)."""
        out_shape = self._set_batch(batch)
        out = cuda.pagelocked_empty(out_shape, self.output_dtype)
        self.context.execute_async_v3(self.stream.handle)
        cuda.memcpy_dtoh_async(out, self.buffers[self.output], self.stream)
        self.stream.synchronize()
        return np.array(out, dtype=np.float32)

    def prepare(self, batch: np.ndarray) -> Callable[[], object]:
        """Copy `batch` to the GPU once; the returned call only enqueues the engine (time it with `timer`)."""
        self._set_batch(batch)
        handle = self.stream.handle
        execute = self.context.execute_async_v3
        return lambda: execute(handle)

    def timer(self, call: Callable[[], object]) -> float:
        """Milliseconds of GPU time of one `call` on the stream, between two CUDA events."""
        self.start.record(self.stream)
        call()
        self.end.record(self.stream)
        self.end.synchronize()
        return self.end.time_since(self.start)

    def describe(self) -> Dict[str, object]:
        """The bench file's `runtime` record; the provider says where the engine runs (GPU, or DLA with GPU fallback)."""
        dla = self.sidecar.get("dla_core")
        provider = f"DLA{dla} + GPU fallback" if dla is not None else "GPU {}".format(self.sidecar.get("gpu"))
        return {"name": "tensorrt", "version": trt.__version__, "provider": provider, "threads": None}

    def close(self) -> None:
        self.stream.synchronize()
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers = {}
        self.context = None
        self.engine = None
        self.cuda_context.pop()
