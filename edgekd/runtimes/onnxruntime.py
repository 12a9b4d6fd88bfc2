"""ONNX Runtime: CPU provider, or CUDA/TensorRT providers when this build has them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekd.errors import EdgekdError
from edgekd.ondevice.ort_runtime import choose_providers as device_choose_providers
from edgekd.ondevice.ort_runtime import session_options
from edgekd.runtimes.base import Runtime, load_failed

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
"""Preference order; unavailable providers are dropped. Add "TensorrtExecutionProvider" first to use ORT's TensorRT EP."""


def choose_providers(prefer: Sequence[str] = DEFAULT_PROVIDERS) -> list[str]:
    """The preferred providers this onnxruntime build has, in order, always ending with the CPU provider."""
    unknown = [p for p in prefer if not p.endswith("ExecutionProvider")]
    if unknown:
        raise EdgekdError(
            f"onnxruntime providers: unknown name {unknown[0]!r}; valid: {', '.join(sorted(ort.get_available_providers()))}"
        )
    return device_choose_providers(prefer)


class OrtRuntime(Runtime):
    """One InferenceSession with a single input (NCHW float32) and logits as its first output."""

    def __init__(self, session: ort.InferenceSession, threads: int | None) -> None:
        self.session = session
        self.name = "onnxruntime"
        self.version = ort.__version__
        self.provider = session.get_providers()[0]
        self.threads = threads
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = session.get_outputs()[0].name
        batch_dim = inp.shape[0] if inp.shape else None
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        return self.session.run([self.output_name], feed)[0]

    def prepare(self, batch: np.ndarray) -> Callable[[], object]:
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        outputs = [self.output_name]
        run = self.session.run
        return lambda: run(outputs, feed)


def load(
    path_or_model: str | Path | bytes,
    threads: int | None = None,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
) -> OrtRuntime:
    """An ONNX Runtime session for an .onnx file (or serialized model bytes) with pinned intra-op threads."""
    source = path_or_model if isinstance(path_or_model, bytes) else str(path_or_model)
    where = "<onnx bytes>" if isinstance(path_or_model, bytes) else path_or_model
    chosen = choose_providers(providers)
    try:
        session = ort.InferenceSession(source, sess_options=session_options(threads), providers=chosen)
    except Exception as e:  # onnxruntime raises its own types for unparsable or unsupported graphs
        raise load_failed(where, "onnxruntime", e) from None
    if len(session.get_inputs()) != 1:
        names = [i.name for i in session.get_inputs()]
        raise EdgekdError(f"{where}: onnxruntime benchmark needs one image input, the model has {len(names)}: {names}")
    return OrtRuntime(session, threads)
