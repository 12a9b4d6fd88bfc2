"""The one latency and accuracy harness, used unchanged by the host benchmark and the device bench (numpy, Python 3.8).

How figures are taken (docs/benchmarking.md says why):
- every artifact is loaded first, then checked for accuracy on the validation set (when it has labels: a
  given ONNX file is timed on random inputs, and its records carry no accuracy; nor do the catalogue's
  LATENCY_ONLY rows, the scout's untrained choice);
- per batch size, each artifact gets `warmup` untimed calls, then `repeats` rounds: each round
  visits every artifact once, in a shuffled order, and times at least `min_runs` calls and
  `min_seconds / repeats` seconds of it, so a slow period of the machine hits all artifacts alike;
- every runtime is timed the same way: host wall clock around one prepared call, from the input on the host to
  the output on the host, synchronised; a runtime that knows its device's own compute time (TensorRT: CUDA
  events around the enqueue) adds its median as `gpu_compute_ms`, as trtexec reports "GPU Compute Time";
- a figure's spread is (slowest - fastest round median) / mean round median; a figure is marked
  unstable when the spread exceeds SPREAD_LIMIT or other processes used more than LOAD_LIMIT
  cores while it was taken;
- every runtime is closed in `finally`, also when loading or running it failed.
"""

import math
import os
import random
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import catalog, sysload
from .files import write_json_atomic
from .records import BENCH_SCHEMA, Accuracy, ArtifactRecord, Latency, RuntimeInfo
from .runtime import Runtime
from .text import one_line

# Re-exported: bench files are written by whoever imports this module, and bench.py still calls
# measure.write_json_atomic (its home is files.py).
__all__ = ["BENCH_SCHEMA", "write_json_atomic"]

SPREAD_LIMIT = 0.25
"""A figure whose round medians differ by more than this share of their mean is marked unstable (measured on a
quiet 2-vCPU VM: median spread 8-20 %, worst 45 % on sub-millisecond figures; under a CPU hog 40-140 %)."""

SPREAD_FLOOR_MS = 0.02
"""...and by more than this many milliseconds: microsecond-scale figures jitter by tens of percent unloaded."""

LOAD_LIMIT = 0.5
"""A figure taken while other processes used more than this many cores on average is marked unstable."""

Window = Tuple[float, float]  # (start, end) in time.monotonic() seconds


def percentile(samples: List[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(samples_ms: List[float], batch_size: int, round_medians: Optional[List[float]] = None) -> Dict[str, Any]:
    """Summary statistics of per-run latencies in milliseconds for one batch size (the fields of records.Latency)."""
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


def wall_timer(fn: Callable[[], object]) -> float:
    """Milliseconds of one call by time.perf_counter (the call must wait for its result)."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def time_round(call: Callable[[], object], timer: Optional[Callable], min_runs: int, min_seconds: float) -> List[float]:
    """Per-call milliseconds of at least `min_runs` calls lasting at least `min_seconds` in all."""
    timer = timer or wall_timer
    samples = []  # type: List[float]
    start = time.perf_counter()
    while len(samples) < min_runs or (time.perf_counter() - start) < min_seconds:
        samples.append(timer(call))
    return samples


def time_runs(
    run: Callable[[], object],
    batch_size: int,
    warmup: int = 10,
    min_runs: int = 30,
    min_seconds: float = 1.0,
    repeats: int = 3,
    timer: Optional[Callable[[Callable[[], object]], float]] = None,
) -> Dict[str, Any]:
    """One call timed alone (no interleaving): `warmup` calls, then `repeats` rounds (see time_round); a summarize() dict."""
    for _ in range(warmup):
        run()
    samples, medians = [], []  # type: List[float], List[float]
    for _ in range(repeats):
        this_round = time_round(run, timer, min_runs, min_seconds / repeats)
        medians.append(percentile(this_round, 50))
        samples.extend(this_round)
    return summarize(samples, batch_size, medians)


class Settings(NamedTuple):
    """How figures are taken; `threads` is what CPU runtimes are given (None: every core)."""

    batch_sizes: Tuple[int, ...] = (1, 8)
    warmup: int = 10
    min_runs: int = 30
    min_seconds: float = 1.0
    repeats: int = 3
    threads: Optional[int] = None
    seed: int = 0

    @classmethod
    def from_dict(cls, doc: Dict[str, Any]) -> "Settings":
        fields = {k: doc[k] for k in cls._fields if doc.get(k) is not None}
        if "batch_sizes" in fields:
            fields["batch_sizes"] = tuple(int(b) for b in fields["batch_sizes"])
        return cls(**fields)

    def as_dict(self) -> Dict[str, Any]:
        """The bench file's `settings` (thresholds included, so a reader knows what `unstable` meant)."""
        doc = dict(self._asdict())
        doc.update(
            batch_sizes=list(self.batch_sizes),
            threads=self.threads or os.cpu_count() or 1,
            spread_limit=SPREAD_LIMIT,
            spread_floor_ms=SPREAD_FLOOR_MS,
            load_limit_cores=LOAD_LIMIT,
            order="interleaved rounds, shuffled per round",
        )
        return doc


class Subject(NamedTuple):
    """One artifact to benchmark: its catalogue id, run-dir relative path, a call that makes its (unloaded) runtime,
    and for the rows of a given ONNX file (catalog.per_file) that file's name."""

    id: str
    path: str
    open: Callable[[], Runtime]
    name: Optional[str] = None


class PowerMonitor:
    """Board power sampled in the background (see tegrastats.py); this base measures nothing (hosts without rails)."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def mean_power(self, windows: Sequence[Window]) -> Optional[Dict[str, Any]]:
        """{"power_w": float, "rails": {name: W}} averaged over samples inside `windows`, or None: not measured."""
        return None

    def describe(self) -> Optional[Dict[str, Any]]:
        return None


def make_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
    """The first `batch_size` images (repeated when there are fewer), as contiguous float32 NCHW."""
    if len(images) == 0:
        raise ValueError("no images to build a batch from")
    return np.ascontiguousarray(np.resize(images, (batch_size,) + images.shape[1:]), dtype=np.float32)


def predict(runtime: Runtime, images: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Logits of all `images`, in chunks the runtime accepts (padded with the last image up to a fixed/min batch)."""
    step = runtime.fixed_batch or min(runtime.max_batch or chunk, chunk)
    least = runtime.fixed_batch or runtime.min_batch
    out = []
    for start in range(0, len(images), step):
        part = np.ascontiguousarray(images[start : start + step], dtype=np.float32)
        n = len(part)
        if n < least:
            part = np.concatenate([part, np.repeat(part[-1:], least - n, axis=0)])
        out.append(np.asarray(runtime.run(part), dtype=np.float32)[:n])
    return np.concatenate(out)


def judge(lat: Dict[str, Any], others_cores: Optional[float]) -> Optional[str]:
    """Why a figure cannot be trusted (rounds disagree, or taken under load), or None."""
    why = []
    rounds = lat.get("round_p50_ms") or [0.0]
    if lat["spread"] > SPREAD_LIMIT and max(rounds) - min(rounds) > SPREAD_FLOOR_MS:
        why.append("rounds differ by {:.0f}% (limit {:.0f}%)".format(lat["spread"] * 100, SPREAD_LIMIT * 100))
    if others_cores is not None and others_cores > LOAD_LIMIT:
        why.append(f"other processes used {others_cores:.1f} cores (limit {LOAD_LIMIT})")
    return "; ".join(why) or None


class _Live(NamedTuple):
    subject: Subject
    runtime: Runtime
    record: ArtifactRecord


def _load(subject: Subject, record: ArtifactRecord, log: Callable[[str], None]) -> Optional[Runtime]:
    runtime = None
    try:
        runtime = subject.open()
        runtime.load()
        record.runtime = RuntimeInfo.from_dict(runtime.describe(), record.key + ".runtime")
        return runtime
    except Exception as e:  # one artifact failing must not lose the others' figures
        record.status, record.reason = "failed", one_line(e)
        log(f"{record.key}: load failed: {record.reason}")
        if runtime is not None:
            runtime.close()
        return None


def bench_artifacts(
    subjects: Sequence[Subject],
    images: np.ndarray,
    labels: Optional[np.ndarray],
    teacher_logits: Optional[np.ndarray],
    settings: Settings,
    power: Optional[PowerMonitor] = None,
    inspect: Optional[Callable[[Runtime, ArtifactRecord], None]] = None,
    log: Callable[[str], None] = lambda msg: None,
) -> Tuple[List[ArtifactRecord], Dict[str, Any]]:
    """Records of every subject (done or failed, in the order given) and the bench's `conditions`.

    `inspect(runtime, record)` may add what only the caller knows (parameter and MAC counts). Without `labels`
    (images that are only inputs) nothing is scored, and a LATENCY_ONLY row of the catalogue never is (the scout's
    untrained choice): those records carry latency alone.
    Every runtime that was opened is closed exactly once before this returns or raises.
    """
    power = power or PowerMonitor()
    conditions = {"before": sysload.snapshot()}  # type: Dict[str, Any]
    records = [ArtifactRecord(id=s.id, status="done", path=s.path, name=s.name) for s in subjects]
    live = []  # type: List[_Live]
    try:
        for subject, record in zip(subjects, records):
            runtime = _load(subject, record, log)
            if runtime is None:
                continue
            live.append(_Live(subject, runtime, record))
            try:
                if inspect is not None:
                    inspect(runtime, record)
                if labels is None or not catalog.scored(subject.id):
                    continue
                chunk = max(settings.batch_sizes)
                logits = predict(runtime, images, chunk)
                acc = accuracy_metrics(logits, labels, teacher_logits)
                acc["batch_size"] = runtime.fixed_batch or min(runtime.max_batch or chunk, chunk)
                row = catalog.BY_ID.get(subject.id)
                if row is not None and row.precision == "int8-dynamic":  # activation scales per batch
                    acc["by_batch"] = [
                        {"batch_size": bs, "top1": accuracy_metrics(predict(runtime, images, bs), labels)["top1"]}
                        for bs in settings.batch_sizes
                        if runtime.accepts(bs)
                    ]
                record.accuracy = Accuracy.from_dict(acc, record.key + ".accuracy")
            except Exception as e:  # a runtime that cannot run the validation set is not timed
                record.status, record.reason = "failed", one_line(e)
                log(f"{record.key}: failed: {record.reason}")
        timed = [x for x in live if x.record.status == "done"]
        power.start()
        try:
            conditions["figures"] = [
                _time_batch(timed, images, bs, settings, power, log) for bs in settings.batch_sizes
            ]
        finally:
            power.stop()
        for x in timed:
            if x.record.status == "done" and not x.record.latency:
                x.record.status = "failed"
                x.record.reason = f"accepts only batch size {x.runtime.fixed_batch}; none of the benchmark batch sizes {list(settings.batch_sizes)}"
    finally:
        for x in live:
            x.runtime.close()
    conditions["after"] = sysload.snapshot()
    conditions["power"] = power.describe()
    return records, conditions


def _time_batch(
    live: List[_Live], images: np.ndarray, batch_size: int, settings: Settings, power: PowerMonitor, log: Callable
) -> Dict[str, Any]:
    """Interleaved rounds of every artifact that takes `batch_size`; adds a Latency to each record."""
    calls = []  # type: List[Tuple[_Live, Callable[[], object]]]
    for x in live:
        if x.record.status != "done" or not x.runtime.accepts(batch_size):
            continue
        try:
            call = x.runtime.prepare(make_batch(images, batch_size))
            for _ in range(settings.warmup):
                call()
            if x.runtime.compute_ms is not None:
                del x.runtime.compute_ms[:]  # only the timed calls' device compute times
            calls.append((x, call))
        except Exception as e:  # fails this artifact, not the others
            x.record.status, x.record.reason = "failed", one_line(e)
            log(f"{x.record.key}: batch {batch_size} failed: {x.record.reason}")
    samples = {id(x): [] for x, _ in calls}  # type: Dict[int, List[float]]
    medians = {id(x): [] for x, _ in calls}  # type: Dict[int, List[float]]
    windows = {id(x): [] for x, _ in calls}  # type: Dict[int, List[Window]]
    shuffle = random.Random(settings.seed * 1000 + batch_size)
    meter = sysload.OthersMeter()
    meter.start()
    for _ in range(settings.repeats):
        order = list(calls)
        shuffle.shuffle(order)
        for x, call in order:
            t0 = time.monotonic()
            this_round = time_round(call, x.runtime.timer, settings.min_runs, settings.min_seconds / settings.repeats)
            windows[id(x)].append((t0, time.monotonic()))
            samples[id(x)].extend(this_round)
            medians[id(x)].append(percentile(this_round, 50))
    others = meter.stop()
    for x, _ in calls:
        lat = summarize(samples[id(x)], batch_size, medians[id(x)])
        compute = x.runtime.compute_ms
        lat["gpu_compute_ms"] = percentile(compute, 50) if compute else None
        lat["unstable"] = judge(lat, others)
        lat["stable"] = lat["unstable"] is None
        lat["others_cores"] = None if others is None else round(others, 3)
        measured = power.mean_power(windows[id(x)])
        if measured is not None:
            lat["power_w"] = measured["power_w"]
            lat["energy_mj"] = measured["power_w"] * lat["mean_ms"] / batch_size
        x.record.latency.append(Latency(**lat))
        if lat["unstable"]:
            log("{}: batch {}: unstable: {}".format(x.record.key, batch_size, lat["unstable"]))
    return {"batch_size": batch_size, "artifacts": len(calls), "others_cores": others}


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
