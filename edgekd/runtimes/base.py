"""The host's side of the one runtime interface (edgekd.ondevice.runtime.Runtime) and the dispatcher by backend.

Every backend module (torch_eager, torchscript, onnxruntime, tensorrt) exposes
``runtime(source, threads=None, **options) -> Runtime``, which only records what to load; the
caller loads it (``with`` block, or ``load()`` ... ``close()`` in ``finally``). Host backends turn
load failures into one-line EdgekdErrors that name the file and the backend.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.ondevice.runtime import Runtime, Timer
from edgekd.ondevice.text import first_line

__all__ = ["Runtime", "Timer", "backend_for", "load_failed", "open_runtime", "runtime_for"]

BACKEND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "torchscript": (".ts.pt", ".ts"),
    "torch_eager": (".pt", ".pth"),
    "onnxruntime": (".onnx",),
    "tensorrt": (".engine", ".plan"),
}
"""File suffixes each backend loads; checked in this order, so `.ts.pt` wins over `.pt`."""

BACKEND_OF_RUNTIME = {"torch": "torch_eager", "torchscript": "torchscript", "onnxruntime": "onnxruntime"}
"""Catalogue runtime names (edgekd.ondevice.catalog.RUNTIMES) -> backend modules, where the names differ."""


def backend_for(path: str | Path) -> str:
    """The backend module name that loads `path`, by suffix."""
    lower = Path(path).name.lower()
    for backend, suffixes in BACKEND_SUFFIXES.items():
        if lower.endswith(suffixes):
            return backend
    known = ", ".join(s for suffixes in BACKEND_SUFFIXES.values() for s in suffixes)
    raise EdgekdError(f"{path}: no runtime for this file type; valid suffixes: {known}")


def open_runtime(path: str | Path, backend: str | None = None, threads: int | None = None, **options: Any) -> Runtime:
    """An unloaded runtime for `path` (backend: a catalogue runtime or module name; default: by suffix).

    `options` go to the backend (e.g. `device="cuda"` for torch, `providers=[...]` for ONNX Runtime).
    """
    path = Path(path)
    backend = BACKEND_OF_RUNTIME.get(backend or "", backend) or backend_for(path)
    if not path.is_file():
        raise EdgekdError(f"{path}: file not found ({backend} runtime)")
    try:
        module = importlib.import_module(f"edgekd.runtimes.{backend}")
    except ImportError as e:
        if backend == "tensorrt":
            raise EdgekdError(f"{path}: TensorRT runtime unavailable: {e}") from None
        raise
    return module.runtime(path, threads=threads, **options)


def runtime_for(path: str | Path, threads: int | None = None, **options: Any) -> Runtime:
    """A loaded runtime for `path` (see open_runtime); the caller closes it (or uses it in a `with` block)."""
    runtime = open_runtime(path, None, threads, **options)
    try:
        return runtime.load()
    except BaseException:
        runtime.close()
        raise


def load_failed(path: str | Path, backend: str, error: BaseException) -> EdgekdError:
    """The EdgekdError for an artifact a backend cannot load: names the file, the backend and the first error line."""
    if isinstance(error, EdgekdError):
        return error
    return EdgekdError(f"{path}: {backend} cannot load this file: {first_line(error)}")
