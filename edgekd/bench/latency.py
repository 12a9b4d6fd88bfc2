"""Latency of one runtime per batch size, timed the same way on the host and on devices."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekd.config import BenchmarkConfig
from edgekd.ondevice.measure import time_runs
from edgekd.runtimes.base import Runtime


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured; `threads` None means all cores."""

    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 10
    min_runs: int = 30
    min_seconds: float = 1.0
    repeats: int = 3
    threads: int | None = None

    @classmethod
    def from_config(cls, cfg: BenchmarkConfig) -> LatencySettings:
        return cls(tuple(cfg.batch_sizes), cfg.warmup, cfg.min_runs, cfg.min_seconds, cfg.repeats, cfg.threads)

    @property
    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def as_dict(self) -> dict[str, Any]:
        """The bench file's `settings` record (threads resolved to a number)."""
        return {**asdict(self), "batch_sizes": list(self.batch_sizes), "threads": self.resolved_threads}


def make_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
    """The first `batch_size` images (repeated when there are fewer), as contiguous float32 NCHW."""
    if len(images) == 0:
        raise ValueError("no images to build a batch from")
    reps = -(-batch_size // len(images))
    batch = np.concatenate([images] * reps)[:batch_size] if reps > 1 else images[:batch_size]
    return np.ascontiguousarray(batch, dtype=np.float32)


def measure_latency(runtime: Runtime, images: np.ndarray, settings: LatencySettings) -> list[dict[str, float]]:
    """One edgekd.ondevice.measure.summarize() record per batch size the runtime accepts.

    Inputs are staged before timing (`runtime.prepare`); each batch size gets `warmup`
    untimed calls and `repeats` rounds of at least `min_runs` calls and `min_seconds`.
    Batch sizes a static-shape artifact cannot take are left out.
    """
    results = []
    for bs in settings.batch_sizes:
        if runtime.fixed_batch is not None and bs != runtime.fixed_batch:
            continue
        call = runtime.prepare(make_batch(images, bs))
        results.append(
            time_runs(
                call,
                bs,
                warmup=settings.warmup,
                min_runs=settings.min_runs,
                min_seconds=settings.min_seconds,
                repeats=settings.repeats,
                timer=runtime.timer,
            )
        )
    return results
