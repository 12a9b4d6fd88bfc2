"""TensorRT engines behind the runtimes interface: a thin wrapper of edgekd.ondevice.trt_runtime (the code Jetsons run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.ondevice.trt_runtime import EngineMismatch, TrtRunner
from edgekd.runtimes.base import Runtime


class TrtRuntime(Runtime):
    """An engine on GPU 0; `timer` measures GPU time with CUDA events."""

    def __init__(self, runner: TrtRunner) -> None:
        self.runner = runner
        described = runner.describe()
        self.name, self.version, self.provider = described["name"], described["version"], described["provider"]
        self.fixed_batch = runner.fixed_batch
        self.timer = runner.timer

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.run(batch)

    def prepare(self, batch: np.ndarray) -> Callable[[], object]:
        return self.runner.prepare(batch)


def load(path: str | Path, threads: int | None = None) -> TrtRuntime:
    """Load an engine built for this GPU and TensorRT version (its .json sidecar beside it); `threads` is unused."""
    try:
        return TrtRuntime(TrtRunner(str(path)))
    except EngineMismatch as e:
        raise EdgekdError(str(e)) from None
