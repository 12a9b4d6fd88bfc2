"""TensorBoard event files for a training loop: the epoch's metrics as scalars, weights as histograms."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgekd.errors import EdgekdError


class TensorBoardLog:
    """Writes under `log_dir`; `write(entry, model)` once per epoch (entry: a metrics.jsonl line)."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise EdgekdError(
                "distill.tensorboard: true needs the tensorboard package "
                "(pip install 'edgekd[tensorboard]'), or set tensorboard: false"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, entry: dict, model: nn.Module) -> None:
        step = int(entry["epoch"])
        for name, value in entry.items():
            if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(name, value, step)
        for name, param in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
