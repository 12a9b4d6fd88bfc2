"""PyTorch eager runtime: an nn.Module, or a checkpoint loaded with edgekd.models.load_model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.errors import EdgekdError
from edgekd.ondevice.runtime import Runtime, resolve_threads
from edgekd.runtimes.base import load_failed


class TorchRuntime(Runtime):
    """Runs a torch module (eager, or TorchScript via a subclass) under inference_mode on `device`.

    `source` is a module or a file; torch's intra-op threads are process-wide, so every torch
    runtime of one benchmark is given the same number (set at load, read back for the record).
    """

    name = "pytorch"

    def __init__(self, source: Any, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__()
        self.source = source
        self.device = torch.device(device)
        self.threads = resolve_threads(threads)
        self.module: Any = None
        self._threads_before: int | None = None  # torch's process-wide thread count, given back on close

    def _read(self, path: Path) -> Any:
        from edgekd.models import load_model

        try:
            model, _spec = load_model(path)
        except EdgekdError as e:  # already names the file; add the backend
            raise EdgekdError(f"{e} (pytorch runtime)") from None
        except Exception as e:  # a foreign file load_model did not anticipate: name it and the backend
            raise load_failed(path, "pytorch", e) from None
        return model

    def _load(self) -> None:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EdgekdError(
                f"{self.name} runtime: device 'cuda' requested but no CUDA GPU is available; valid here: 'cpu'"
            )
        module = self.source if isinstance(self.source, torch.nn.Module) else self._read(Path(self.source))
        self.module = module.to(self.device).eval()
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        self.threads = torch.get_num_threads()
        self.timer = None  # every runtime is timed by host wall clock, input on the host to output on the host

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x)

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return self._forward(x).float().cpu().numpy()

    def prepare(self, batch: np.ndarray) -> Callable[[], object]:
        """A call from the input on the host to the logits on the host (on a GPU: copy in, run, copy out, which
        waits for the GPU), timed by wall clock like every runtime; the batch is converted beforehand."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device.type != "cuda":
            return lambda: self._forward(x)
        pinned, device = x.pin_memory(), self.device
        return lambda: self._forward(pinned.to(device, non_blocking=True)).cpu()

    def describe(self) -> dict[str, Any]:
        provider = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"name": self.name, "version": torch.__version__, "provider": provider, "threads": self.threads}

    def _release(self) -> None:
        self.module = None
        if self._threads_before is not None:  # the count is process-wide: the caller's work after us keeps its own
            torch.set_num_threads(self._threads_before)
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()


def runtime(source: str | Path | torch.nn.Module, threads: int | None = None, device: str = "cpu") -> TorchRuntime:
    """An unloaded eager runtime for a module, or for a `.pt` checkpoint (state_dict + spec)."""
    return TorchRuntime(source, device, threads)
