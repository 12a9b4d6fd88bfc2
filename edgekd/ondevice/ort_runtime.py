"""ONNX Runtime behind the runtime interface: the one wrapper the host and the device both use."""

from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import onnxruntime as ort

from .runtime import Runtime, resolve_threads


def choose_providers(prefer: Sequence[str]) -> List[str]:
    """The preferred providers this onnxruntime build has, in order, ending with the CPU provider."""
    available = set(ort.get_available_providers())
    chosen = [p for p in prefer if p in available]
    return chosen if "CPUExecutionProvider" in chosen else chosen + ["CPUExecutionProvider"]


def session_options(threads: int) -> "ort.SessionOptions":
    """Sequential execution with `threads` intra-op threads; host and device alike."""
    opts = ort.SessionOptions()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return opts


class OrtRuntime(Runtime):
    """One InferenceSession with one NCHW float32 input and logits as its first output.

    `source` is an .onnx path or serialized model bytes; `threads` None means every core (the
    number is resolved here, so the record says what ran).
    """

    name = "onnxruntime"

    def __init__(
        self,
        source: Union[str, bytes],
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.providers = list(providers)
        self.threads = resolve_threads(threads)
        self.session = None  # type: Optional[ort.InferenceSession]

    @property
    def where(self) -> str:
        return "<onnx bytes>" if isinstance(self.source, bytes) else str(self.source)

    def _load(self) -> None:
        self.session = ort.InferenceSession(
            self.source, sess_options=session_options(self.threads), providers=choose_providers(self.providers)
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(
                f"{self.where}: needs one image input, the model has {len(inputs)}: {[i.name for i in inputs]}"
            )
        self.input = inputs[0].name
        self.output = self.session.get_outputs()[0].name
        batch = inputs[0].shape[0] if inputs[0].shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

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
            "provider": self.session.get_providers()[0] if self.session is not None else self.providers[0],
            "threads": self.threads,
        }

    def _release(self) -> None:
        self.session = None  # InferenceSession frees its memory when the last reference goes
