"""The training loop shared by the teacher, distill, baseline and QAT stages.

Deterministic on the CPU and resumable: every epoch draws its shuffling and dropout
from a seed derived from (seed, epoch), and a checkpoint holding model, optimizer,
objective state and history is written after every epoch, so a killed run resumed
from `checkpoint-last.pt` ends in the same state as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edgekd import distributed
from edgekd.config import OptimConfig
from edgekd.data.datasets import ImageSet
from edgekd.distill.losses import mean_kl
from edgekd.distill.tensorboard import TensorBoardLog
from edgekd.models.checkpoint import atomic_torch_save
from edgekd.progress import Reporter

CHECKPOINT = "checkpoint-last.pt"
METRICS = "metrics.jsonl"


class Objective(Protocol):
    """What a loop minimises: the loss of one batch, with the values it used."""

    def modules(self) -> list[nn.Module]: ...  # extra trainable modules (e.g. adapters)
    def begin_epoch(self, epoch: int, num_epochs: int) -> dict: ...  # values in force this epoch, for the log
    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, dict]: ...
    def end_epoch(self, val: dict) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None  # epochs already done when this call started

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def lr_at(cfg: OptimConfig, epoch: int) -> float:
    """Learning rate for a 0-based epoch: linear warm-up, then cosine, step or constant."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / (cfg.warmup_epochs + 1)
    e, n = epoch - cfg.warmup_epochs, max(1, cfg.epochs - cfg.warmup_epochs)
    if cfg.scheduler == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * e / n))
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** (e // cfg.step_size)
    return cfg.lr


def make_optimizer(cfg: OptimConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0
    )


@torch.no_grad()
def predict(
    model: nn.Module, images: ImageSet, batch_size: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, classes) and labels (N,) of a whole set, on the CPU, in the set's order."""
    was_training = model.training
    model.eval()
    outs, labels = [], []
    for x, y, _ in images.batches(batch_size, device=device):
        outs.append(model(x).float().cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(outs), torch.cat(labels)


def evaluate(logits: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor | None = None) -> dict:
    """top-1/top-5 in percent, and mean KL(reference ‖ model) when reference logits are given."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    out = {
        "val_top1": float((top[:, 0] == labels).float().mean() * 100),
        "val_top5": float((top == labels[:, None]).any(1).float().mean() * 100),
    }
    if reference is not None:
        out["val_kl"] = mean_kl(reference, logits)
        out["val_agreement"] = float((reference.argmax(1) == top[:, 0]).float().mean() * 100)
    return out


def _write_history(path: Path, history: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jsonl")
    with os.fdopen(fd, "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)
    os.replace(tmp, path)


def read_history(path: Path) -> list[dict]:
    """The epoch entries a training call wrote to metrics.jsonl."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class TrainEnv:
    """What a training call needs of the run it is part of (the run context builds it: `ctx.train_env`)."""

    work_dir: Path  # checkpoint-last.pt and metrics.jsonl
    key: str  # a checkpoint resumes only under the same key
    seed: int
    batch_size: int
    eval_batch_size: int = 256
    device: torch.device | str = "cpu"
    reporter: Reporter = field(default_factory=lambda: Reporter(quiet=True))
    label: str = "train"
    resume: bool = True  # False: start afresh even when a checkpoint with the same key exists

    @property
    def checkpoint(self) -> Path:
        return self.work_dir / CHECKPOINT


@dataclass
class _Loop:
    """The pieces one training call holds together: model, the objective's extra modules, optimizer."""

    model: nn.Module
    extra: list[nn.Module]
    optimizer: torch.optim.Optimizer
    objective: Objective


def _resume(loop: _Loop, env: TrainEnv, epochs: int, result: TrainResult) -> int:
    """Load the last epoch checkpoint when its key matches (and resuming is allowed); the epoch to start at.
    Under torchrun rank 0's checkpoint is the run's: every process resumes from it, so all start at one epoch."""
    path = env.checkpoint
    if not env.resume:
        path.unlink(missing_ok=True)
        return 0
    ckpt = None
    if distributed.is_main() and path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt = distributed.broadcast(ckpt)
    if not isinstance(ckpt, dict) or ckpt.get("key") != env.key:
        return 0
    loop.model.load_state_dict(ckpt["model"])
    for m, state in zip(loop.extra, ckpt["extra"]):
        m.load_state_dict(state)
    loop.optimizer.load_state_dict(ckpt["optimizer"])
    loop.objective.load_state_dict(ckpt["objective"])
    result.history = ckpt["history"]
    result.resumed_from = ckpt["epoch"] + 1
    env.reporter.log(f"  {env.label}: resuming after epoch {result.resumed_from} of {epochs} from {path.name}")
    return result.resumed_from


def _save_checkpoint(loop: _Loop, env: TrainEnv, epoch: int, history: list[dict]) -> None:
    """The epoch's checkpoint (under torchrun rank 0's alone: every process resumes from it) and the history."""
    if distributed.is_main():
        state = {
            "key": env.key,
            "epoch": epoch,
            "model": loop.model.state_dict(),
            "extra": [m.state_dict() for m in loop.extra],
            "optimizer": loop.optimizer.state_dict(),
            "objective": loop.objective.state_dict(),
            "history": history,
        }
        atomic_torch_save(state, env.checkpoint)
    _write_history(env.work_dir / METRICS, history)


def train(
    model: nn.Module,
    train_set: ImageSet,
    val_set: ImageSet,
    cfg: OptimConfig,
    objective: Objective,
    env: TrainEnv,
    *,
    reference_val_logits: torch.Tensor | None = None,
    tensorboard_dir: Path | None = None,
    amp: str = "off",
    param_groups: list[dict] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train `model` in place for `cfg.epochs`, resuming from `env.work_dir/checkpoint-last.pt` when its key matches.

    Under torchrun every process trains on its slice of each global batch (DistributedDataParallel),
    so the global batch, and the result up to floating-point differences, match a single process.

    With `tensorboard_dir`, each epoch's metrics go there as scalars and the weights as histograms.
    On CUDA, `amp` ("bf16"/"fp16") runs forward passes under autocast (fp16 with a gradient scaler); on the CPU
    it is ignored, and the log says so. `cfg.channels_last` trains (and scores each epoch) in NHWC memory format,
    which oneDNN and cuDNN convolve faster; the model is NCHW again when training ends.
    `on_epoch(epoch, entry)` sees each finished epoch's log entry (a sweep's pruner: it may raise to stop).
    """
    reporter, label = env.reporter, env.label
    device = torch.device(env.device)
    env.work_dir.mkdir(parents=True, exist_ok=True)
    model.to(device).train()
    on_cuda = device.type == "cuda"
    if amp != "off" and not on_cuda:
        reporter.log(f"  {label}: amp applies on CUDA only; training in fp32 on {device}")
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if on_cuda else None
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype is torch.float16)
    extra = [m.to(device).train() for m in objective.modules()]
    # param_groups: the model's parameters in optimizer groups, each with an "lr_scale" (fine-tuning a backbone slower)
    params = param_groups or [p for m in [model, *extra] for p in m.parameters() if p.requires_grad]
    loop = _Loop(model, extra, make_optimizer(cfg, params), objective)
    result = TrainResult()
    start = _resume(loop, env, cfg.epochs, result)
    tensorboard = TensorBoardLog(tensorboard_dir) if tensorboard_dir is not None and distributed.is_main() else None
    shard = (distributed.rank(), distributed.world_size())
    # under torchrun: DDP averages the model's gradients; the objective's extra modules (adapters) are averaged by hand
    net = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if shard[1] > 1
        else model
    )
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(env.seed * 100_003 + epoch)  # dropout, augmentation: a function of (seed, epoch) alone
        lr = lr_at(cfg, epoch)
        for group in loop.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        used = objective.begin_epoch(epoch, cfg.epochs)
        sums = _epoch(loop, net, train_set, env, epoch, cfg.epochs, shard, scaler, memory_format, autocast_dtype)
        logits, labels = predict(model, val_set, env.eval_batch_size, device)
        val = evaluate(logits, labels, reference_val_logits)
        objective.end_epoch(val)
        entry = {"epoch": epoch + 1, **sums, **val, "lr": lr, **used, "seconds": time.perf_counter() - t0}
        result.history.append(entry)
        _save_checkpoint(loop, env, epoch, result.history)
        if tensorboard is not None:
            tensorboard.write(entry, model)
        kl = f" kl {val['val_kl']:.3f}" if "val_kl" in val else ""
        reporter.log(
            f"  {label} epoch {epoch + 1}/{cfg.epochs}: loss {entry['train_loss']:.4f} "
            f"val top-1 {val['val_top1']:.2f}%{kl} ({entry['seconds']:.1f}s)"
        )
        if on_epoch is not None:
            on_epoch(epoch + 1, entry)
    if tensorboard is not None:
        tensorboard.close()
    model.to(memory_format=torch.contiguous_format).eval()
    return result


def _epoch(
    loop: _Loop,
    net: nn.Module,
    train_set: ImageSet,
    env: TrainEnv,
    epoch: int,
    epochs: int,
    shard: tuple[int, int],
    scaler: torch.amp.GradScaler,
    memory_format: torch.memory_format,
    autocast_dtype: torch.dtype | None,
) -> dict[str, float]:
    """One pass over the training set (this process's shard of every batch); mean losses over all processes."""
    shuffle = torch.Generator().manual_seed(env.seed * 100_003 + epoch)
    extra_params = [p for m in loop.extra for p in m.parameters() if p.requires_grad]
    sums: dict[str, float] = {}
    seen = 0
    steps = math.ceil(len(train_set) / env.batch_size)
    device = torch.device(env.device)
    with env.reporter.task(f"  {env.label} epoch {epoch + 1}/{epochs}", steps) as bar:
        for x, y, idx in train_set.batches(env.batch_size, shuffle=True, generator=shuffle, device=device, shard=shard):
            x = x.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                loss, parts = loop.objective.loss(net, x, y, idx)
            loop.optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            distributed.average_gradients(extra_params)
            scaler.step(loop.optimizer)
            scaler.update()
            n = len(y)
            seen += n
            for name, value in {"train_loss": loss.item(), **parts}.items():
                sums[name] = sums.get(name, 0.0) + value * n
            bar.advance()
    names = sorted(sums)
    *totals, seen = distributed.all_reduce_sum([sums[k] for k in names] + [seen], device)
    return {k: v / max(seen, 1) for k, v in zip(names, totals)}
