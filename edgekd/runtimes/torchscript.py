"""TorchScript runtime: a `.ts.pt` archive loaded with torch.jit.load."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from edgekd.runtimes.base import load_failed
from edgekd.runtimes.torch_eager import TorchRuntime


def load(
    path_or_model: str | Path | torch.jit.ScriptModule, threads: int | None = None, device: str = "cpu"
) -> TorchRuntime:
    """A TorchScript runtime for a saved archive or an in-memory ScriptModule."""
    if isinstance(path_or_model, torch.jit.ScriptModule):
        return TorchRuntime(path_or_model, "torchscript", device, threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in torch 2.14, still works
            module = torch.jit.load(str(path_or_model), map_location=device)
    except Exception as e:  # not a TorchScript archive
        raise load_failed(path_or_model, "torchscript", e) from None
    return TorchRuntime(module, "torchscript", device, threads)
