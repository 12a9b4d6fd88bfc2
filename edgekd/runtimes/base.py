"""The backend interface every runtime implements, and the dispatcher by file suffix.

Like Polygraphy's runners: each backend module (torch_eager, torchscript, onnxruntime,
tensorrt) exposes ``load(path_or_model, threads=None, **options) -> Runtime``. A Runtime
runs a float32 NCHW batch and returns float32 logits, describes itself for the bench file,
and may carry a ``timer`` that times one call with device synchronisation (GPU backends).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import EdgekdError

Timer = Callable[[Callable[[], object]], float]
"""Times one call of a zero-argument function, in milliseconds (see edgekd.ondevice.measure.time_runs)."""

BACKEND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "torchscript": (".ts.pt", ".ts"),
    "torch_eager": (".pt", ".pth"),
    "onnxruntime": (".onnx",),
    "tensorrt": (".engine", ".plan"),
}
"""File suffixes each backend loads; checked in this order, so `.ts.pt` wins over `.pt`."""


class Runtime:
    """A loaded model that maps an NCHW float32 batch to logits.

    Subclasses set `name`, `version`, `provider`, `threads` and implement `run`.
    `fixed_batch` is the only batch size the artifact accepts (static shapes), or None.
    `timer` is None when wall-clock timing around `run` is exact (CPU backends, or
    backends whose `run` returns host arrays), else a device-synchronised Timer.
    """

    name: str = ""
    version: str = ""
    provider: str = ""
    threads: int | None = None
    fixed_batch: int | None = None
    timer: Timer | None = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, batch: np.ndarray) -> Callable[[], object]:
        """A zero-argument call that runs `batch`, with input conversion and copies done here, not in the call."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return lambda: self.run(batch)

    def describe(self) -> dict[str, Any]:
        """The bench file's `runtime` record."""
        return {"name": self.name, "version": self.version, "provider": self.provider, "threads": self.threads}


def backend_for(path: str | Path) -> str:
    """The backend module name that loads `path`, by suffix."""
    lower = Path(path).name.lower()
    for backend, suffixes in BACKEND_SUFFIXES.items():
        if lower.endswith(suffixes):
            return backend
    known = ", ".join(s for suffixes in BACKEND_SUFFIXES.values() for s in suffixes)
    raise EdgekdError(f"{path}: no runtime for this file type; valid suffixes: {known}")


def runtime_for(path: str | Path, threads: int | None = None, **options: Any) -> Runtime:
    """Load `path` with the backend its suffix names (`.ts.pt` TorchScript, `.pt` checkpoint, `.onnx`, `.engine`).

    `options` go to the backend's `load` (e.g. `device="cuda"` for torch, `providers=[...]` for ONNX Runtime).
    """
    path = Path(path)
    backend = backend_for(path)
    if not path.is_file():
        raise EdgekdError(f"{path}: file not found ({backend} runtime)")
    try:
        module = importlib.import_module(f"edgekd.runtimes.{backend}")
    except ImportError as e:
        if backend == "tensorrt":
            raise EdgekdError(f"{path}: TensorRT runtime unavailable: {e}") from None
        raise
    return module.load(path, threads=threads, **options)


def load_failed(path: str | Path, backend: str, error: BaseException) -> EdgekdError:
    """The EdgekdError for an artifact a backend cannot load: names the file, the backend and the first error line."""
    lines = str(error).strip().splitlines()
    detail = lines[0] if lines else type(error).__name__
    return EdgekdError(f"{path}: {backend} cannot load this file: {detail}")
