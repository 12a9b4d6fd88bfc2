"""TorchScript runtime: a `.ts.pt` archive loaded with torch.jit.load."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from edgekd.runtimes.base import load_failed
from edgekd.runtimes.torch_eager import TorchRuntime


class ScriptRuntime(TorchRuntime):
    """A TorchScript archive (or an in-memory ScriptModule) run like an eager module."""

    name = "torchscript"

    def _read(self, path: Path) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in torch 2.14, still works
                return torch.jit.load(str(path), map_location=self.device)
        except Exception as e:  # not a TorchScript archive
            raise load_failed(path, "torchscript", e) from None


def runtime(
    source: str | Path | torch.jit.ScriptModule, threads: int | None = None, device: str = "cpu"
) -> ScriptRuntime:
    """An unloaded TorchScript runtime for a saved archive or an in-memory ScriptModule."""
    return ScriptRuntime(source, device, threads)
