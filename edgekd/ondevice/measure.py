"""Latency and accuracy measurement shared by the host and the device (numpy only, Python 3.8)."""

import json
import math
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional

import numpy as np

BENCH_SCHEMA = "edgekd.bench/1"


def percentile(samples: List[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(
    samples_ms: List[float], batch_size: int, round_medians: Optional[List[float]] = None
) -> Dict[str, float]:
    """Summary statistics of per-run latencies in milliseconds for one batch size."""
    n = len(samples_ms)
    mean = sum(samples_ms) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in samples_ms) / n)
    p50 = percentile(samples_ms, 50)
    medians = round_medians or [p50]
    spread = (max(medians) - min(medians)) / (sum(medians) / len(medians)) if len(medians) > 1 else 0.0
    return {
        "batch_size": batch_size,
        "runs": n,
        "mean_ms": mean,
        "std_ms": std,
        "p50_ms": p50,
        "p90_ms": percentile(samples_ms, 90),
        "p99_ms": percentile(samples_ms, 99),
        "min_ms": min(samples_ms),
        "max_ms": max(samples_ms),
        "throughput_ips": batch_size * 1000.0 / p50 if p50 > 0 else float("inf"),
        "round_p50_ms": medians,
        "spread": spread,
    }


def time_runs(
    run: Callable[[], object],
    batch_size: int,
    warmup: int = 10,
    min_runs: int = 30,
    min_seconds: float = 1.0,
    repeats: int = 3,
    timer: Optional[Callable[[Callable[[], object]], float]] = None,
) -> Dict[str, float]:
    """Time `run()` after `warmup` calls, in `repeats` rounds of at least `min_runs` calls and `min_seconds`.

    `timer(run)` returns one call's latency in milliseconds; the default wraps the call
    with time.perf_counter, so `run` must itself wait for the device (GPU backends pass
    a timer based on CUDA events instead).
    """
    if timer is None:

        def timer(fn: Callable[[], object]) -> float:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1000.0

    for _ in range(warmup):
        run()
    samples: List[float] = []
    medians: List[float] = []
    for _ in range(repeats):
        this_round: List[float] = []
        start = time.perf_counter()
        while len(this_round) < min_runs or (time.perf_counter() - start) < min_seconds / repeats:
            this_round.append(timer(run))
        medians.append(percentile(this_round, 50))
        samples.extend(this_round)
    return summarize(samples, batch_size, medians)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def accuracy_metrics(
    logits: np.ndarray, labels: np.ndarray, teacher_logits: Optional[np.ndarray] = None
) -> Dict[str, float]:
    """top-1, top-5, and (given the teacher's logits) top-1 agreement and mean KL(teacher || model)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    k = min(5, logits.shape[1])
    top5 = np.argsort(-logits, axis=1)[:, :k]
    out = {
        "n": int(len(labels)),
        "top1": float((top5[:, 0] == labels).mean() * 100.0),
        "top5": float((top5 == labels[:, None]).any(axis=1).mean() * 100.0),
    }
    if teacher_logits is not None:
        t_log = log_softmax(np.asarray(teacher_logits))
        s_log = log_softmax(logits)
        out["agreement"] = float((np.argmax(teacher_logits, axis=1) == top5[:, 0]).mean() * 100.0)
        out["kl"] = float((np.exp(t_log) * (t_log - s_log)).sum(axis=1).mean())
    return out


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` through a temporary file in the same folder and a rename: a reader sees the old file or
    the whole new one, and a failed write (a full disk) leaves the old one intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        os.fchmod(fd, 0o644)  # not mkstemp's 0600: results are shared files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, doc: dict) -> None:
    """Write JSON to `path` atomically (see write_bytes_atomic)."""
    write_bytes_atomic(path, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8"))
