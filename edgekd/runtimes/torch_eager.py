"""PyTorch eager runtime: an nn.Module, or a checkpoint loaded with edgekd.models.load_model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.errors import EdgekdError
from edgekd.runtimes.base import Runtime, load_failed


def cuda_event_timer(fn: Callable[[], object]) -> float:
    """Milliseconds of one call on the current CUDA stream, measured with CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def pin_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (when given) and return the number in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class TorchRuntime(Runtime):
    """Runs a torch module (eager or TorchScript) under inference_mode on `device`."""

    def __init__(self, module: Any, name: str, device: str = "cpu", threads: int | None = None) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EdgekdError(
                f"{name} runtime: device 'cuda' requested but no CUDA GPU is available; valid here: 'cpu'"
            )
        self.module = module.to(self.device).eval()
        self.name = name
        self.version = torch.__version__
        self.provider = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.threads = pin_threads(threads)
        self.timer = cuda_event_timer if self.device.type == "cuda" else None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x)

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return self._forward(x).float().cpu().numpy()

    def prepare(self, batch: np.ndarray) -> Callable[[], object]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return lambda: self._forward(x)


def load(path_or_model: str | Path | torch.nn.Module, threads: int | None = None, device: str = "cpu") -> TorchRuntime:
    """An eager runtime for a module, or for a `.pt` checkpoint (state_dict + spec) via edgekd.models.load_model."""
    if isinstance(path_or_model, torch.nn.Module):
        return TorchRuntime(path_or_model, "pytorch", device, threads)
    from edgekd.models import load_model

    try:
        model, _spec = load_model(path_or_model)
    except EdgekdError as e:  # already names the file; add the backend
        raise EdgekdError(f"{e} (pytorch runtime)") from None
    except Exception as e:  # a foreign file load_model did not anticipate: name it and the backend
        raise load_failed(path_or_model, "pytorch", e) from None
    return TorchRuntime(model, "pytorch", device, threads)
