"""ONNX Runtime on the host: the device's OrtRuntime, plus checked provider names and one-line load errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from edgekd.errors import EdgekdError
from edgekd.ondevice import ort_runtime
from edgekd.ondevice.ort_runtime import OrtRuntime
from edgekd.runtimes.base import load_failed

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
"""Preference order; unavailable providers are dropped. Add "TensorrtExecutionProvider" first to use ORT's TensorRT EP."""


def choose_providers(prefer: Sequence[str] = DEFAULT_PROVIDERS) -> list[str]:
    """The preferred providers this onnxruntime build has, in order, always ending with the CPU provider."""
    unknown = [p for p in prefer if not p.endswith("ExecutionProvider")]
    if unknown:
        raise EdgekdError(
            f"onnxruntime providers: unknown name {unknown[0]!r}; valid: {', '.join(sorted(ort.get_available_providers()))}"
        )
    return ort_runtime.choose_providers(prefer)


class HostOrtRuntime(OrtRuntime):
    """OrtRuntime whose load failures are EdgekdErrors naming the file."""

    def _load(self) -> None:
        try:
            super()._load()
        except Exception as e:  # onnxruntime raises its own types for unparsable or unsupported graphs
            raise load_failed(self.where, "onnxruntime", e) from None


def runtime(
    source: str | Path | bytes, threads: int | None = None, providers: Sequence[str] = DEFAULT_PROVIDERS
) -> HostOrtRuntime:
    """An unloaded ONNX Runtime runtime for an .onnx file (or serialized model bytes)."""
    return HostOrtRuntime(source if isinstance(source, bytes) else str(source), choose_providers(providers), threads)
