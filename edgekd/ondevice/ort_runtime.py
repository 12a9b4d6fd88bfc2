"""Run an ONNX file in ONNX Runtime on the device (for devices whose backend is onnxruntime)."""

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import onnxruntime as ort


def choose_providers(prefer: Sequence[str]) -> List[str]:
    """The preferred providers this onnxruntime build has, in order, ending with the CPU provider."""
    available = set(ort.get_available_providers())
    chosen = [p for p in prefer if p in available]
    return chosen if "CPUExecutionProvider" in chosen else chosen + ["CPUExecutionProvider"]


def session_options(threads: Optional[int]) -> "ort.SessionOptions":
    """Sequential execution with `threads` intra-op threads (ORT's default when None); host and device alike."""
    opts = ort.SessionOptions()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return opts


class OrtRunner:
    """One InferenceSession with one NCHW float32 input and logits as its first output."""

    def __init__(self, path: str, providers: Sequence[str], threads: Optional[int] = None) -> None:
        self.session = ort.InferenceSession(
            path, sess_options=session_options(threads), providers=choose_providers(providers)
        )
        self.threads = threads
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{path}: needs one image input, the model has {[i.name for i in inputs]}")
        self.input = inputs[0].name
        self.output = self.session.get_outputs()[0].name
        batch = inputs[0].shape[0] if inputs[0].shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None  # type: Optional[int]
        self.max_batch = self.fixed_batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def prepare(self, batch: np.ndarray) -> Callable[[], object]:
        feed = {self.input: np.ascontiguousarray(batch, dtype=np.float32)}
        outputs = [self.output]
        run = self.session.run
        return lambda: run(outputs, feed)

    def describe(self) -> Dict[str, object]:
        return {
            "name": "onnxruntime",
            "version": ort.__version__,
            "provider": self.session.get_providers()[0],
            "threads": self.threads,
        }
