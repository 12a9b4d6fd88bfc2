"""TensorRT engines behind the runtimes interface: the device's TrtRunner (the code Jetsons run) with one-line errors.

Same lifecycle as every runtime: `runtime(path)` records, `load()` loads, `close()` frees the GPU
buffers and pops the CUDA context exactly once (TrtRunner pops it itself when loading fails).
"""

from __future__ import annotations

from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.ondevice.trt_runtime import EngineMismatch, TrtRunner


class TrtRuntime(TrtRunner):
    """An engine on GPU 0, timed by wall clock like every runtime (GPU compute time in `compute_ms`); a mismatched
    engine is an EdgekdError."""

    def load(self) -> TrtRuntime:
        try:
            super().load()
        except EngineMismatch as e:
            raise EdgekdError(str(e)) from None
        return self


def runtime(path: str | Path, threads: int | None = None) -> TrtRuntime:
    """An unloaded runtime for an engine built for this GPU and TensorRT version (its .json sidecar beside it).

    `threads` is unused (the engine runs on the GPU).
    """
    return TrtRuntime(str(path))


def load(path: str | Path, threads: int | None = None) -> TrtRuntime:
    """`runtime(path).load()`: a loaded engine; the caller closes it (or uses it in a `with` block)."""
    return runtime(path, threads).load()
