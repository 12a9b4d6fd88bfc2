"""Benchmark a run's artifacts on this machine and write bench/<device>.json (records.BenchDoc).

What is timed is what the manifest vouches for, among the catalogue rows benchmarked on the
host; a row whose stage was skipped or failed gets a `skipped` record with the stage's reason.
The timing itself is edgekd.ondevice.measure.bench_artifacts, the harness the devices run.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench.macs import count_macs
from edgekd.bench.sysinfo import describe_system
from edgekd.config import BenchmarkConfig
from edgekd.errors import EdgekdError
from edgekd.manifest import Manifest
from edgekd.models import count_params
from edgekd.ondevice import catalog
from edgekd.ondevice.files import sha256_file, write_bytes_atomic, write_json_atomic
from edgekd.ondevice.measure import Settings, Subject, bench_artifacts
from edgekd.ondevice.records import ArtifactRecord, BenchDoc
from edgekd.ondevice.runtime import Runtime
from edgekd.ondevice.text import one_line
from edgekd.ondevice.trt_options import note_fallback
from edgekd.rundir import RunDir
from edgekd.runtimes.base import open_runtime
from edgekd.runtimes.onnxruntime import DEFAULT_PROVIDERS
from edgekd.runtimes.torch_eager import TorchRuntime

log = logging.getLogger(__name__)


@dataclass
class Planned:
    """One catalogue artifact to benchmark (`reason` None) or to list as skipped with `reason`; `path` run-dir relative;
    `name` the file's name for the rows of an ONNX file given to `edgekd bench` (catalog.per_file)."""

    id: str
    path: str
    reason: str | None = None
    name: str | None = None


def settings_from_config(cfg: BenchmarkConfig, seed: int = 0, batch_sizes: tuple[int, ...] = ()) -> Settings:
    """The benchmark section's timing settings; `batch_sizes` replaces (and then leaves unread) its own."""
    return Settings(
        batch_sizes or tuple(cfg.batch_sizes), cfg.warmup, cfg.min_runs, cfg.min_seconds, cfg.repeats, cfg.threads, seed
    )


def plan_host(run_dir: Path, manifest: Manifest, device_name: str) -> list[Planned]:
    """The host's catalogue rows: vouched ones to time, those of skipped/failed stages with the stage's reason.

    A row its finished stage did not make (an option turned it off) is left out; a vouched-for
    file that changed since is not (the manifest no longer vouches for it: skipped, saying so). A latency-only
    control (catalog.LATENCY_ONLY: the scout's choice) is no product of the run: it is timed when vouched for and
    otherwise left out, so a run whose scout was skipped lists no row of it.
    """
    vouched = manifest.vouched()
    planned = []
    for row in catalog.benchmarked("host"):
        rel = catalog.path_of(row.id, device_name)
        if row.id in vouched:
            planned.append(Planned(row.id, Path(vouched[row.id]).relative_to(run_dir).as_posix()))
            continue
        rec = manifest.stage(row.stage)
        if rec is None or (row.model in catalog.LATENCY_ONLY and rec.status != "done"):
            continue
        if rec.status in ("skipped", "failed"):
            planned.append(Planned(row.id, rel, f"stage {row.stage} {rec.status}: {rec.why}"))
        elif row.id in rec.artifacts:
            planned.append(Planned(row.id, rel, f"{rel} changed since stage {row.stage} made it; re-run the stage"))
    return planned


def _params_and_macs(images: np.ndarray) -> Callable[[Runtime, ArtifactRecord], None]:
    def inspect(runtime: Runtime, record: ArtifactRecord) -> None:
        note_fallback(runtime, record)  # a calibrated fallback engine built here says so
        if isinstance(runtime, TorchRuntime) and runtime.name == "pytorch":
            record.params = count_params(runtime.module)
            if catalog.get(record.id).precision == "fp32":
                record.macs = count_macs(runtime.module, tuple(images.shape[1:]))

    return inspect


def _opener(path: Path, runtime: str, threads: int | None, torch_device: str, providers: Sequence[str]):
    options: dict[str, Any] = {}
    if runtime in ("torch", "torchscript"):
        options["device"] = torch_device
    elif runtime == "onnxruntime":
        options["providers"] = providers
    return lambda: open_runtime(path, runtime, threads, **options)


def benchmark_artifacts(
    planned: Sequence[Planned],
    images: np.ndarray,
    labels: np.ndarray | None,
    teacher_logits: np.ndarray | None,
    settings: Settings,
    device_name: str,
    run_dir: Path,
    device_kind: str = "host",
    torch_device: str = "cpu",
    ort_providers: Sequence[str] = DEFAULT_PROVIDERS,
    out: Path | None = None,
    reference: str = catalog.REFERENCE,
) -> BenchDoc:
    """Latency and accuracy (given `labels`) of every planned artifact; writes it to `out` (default: the run's bench
    file of `device_name`) and returns it."""
    run_dir = Path(run_dir)
    subjects, records = [], {}
    for item in planned:
        path = run_dir / item.path
        key = (item.id, item.name)
        if item.reason is None and not path.is_file():
            item = Planned(item.id, item.path, f"{item.path}: artifact file not found in {run_dir}", item.name)
        if item.reason is not None:
            records[key] = ArtifactRecord(item.id, "skipped", item.path, reason=item.reason, name=item.name)
            continue
        row = catalog.get(item.id)
        opener = _opener(path, row.runtime, settings.threads, torch_device, ort_providers)
        subjects.append(Subject(item.id, item.path, opener, item.name))
        records[key] = ArtifactRecord(
            item.id, "done", item.path, sha256=sha256_file(path), size_bytes=path.stat().st_size, name=item.name
        )
    measured, conditions = bench_artifacts(
        subjects, images, labels, teacher_logits, settings, inspect=_params_and_macs(images), log=log.info
    )
    for rec in measured:
        key = (rec.id, rec.name)
        rec.sha256, rec.size_bytes = records[key].sha256, records[key].size_bytes
        if rec.reason:
            rec.reason = rec.reason.replace(str(run_dir / rec.path), rec.path)  # run-dir relative, like `path`
        records[key] = rec
    doc = BenchDoc(
        device=device_name,
        kind=device_kind,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        reference=reference,
        system=describe_system(device_name, device_kind),
        settings=settings.as_dict(),
        conditions=conditions,
        artifacts=[records[(p.id, p.name)] for p in planned],
    )
    write_json_atomic(str(out or RunDir(run_dir).bench_file(device_name)), doc.to_dict())
    return doc


def remeasure_unstable(
    doc: BenchDoc,
    rounds: int,
    images: np.ndarray,
    labels: np.ndarray,
    teacher_logits: np.ndarray | None,
    settings: Settings,
    run_dir: Path,
    torch_device: str = "cpu",
    ort_providers: Sequence[str] = DEFAULT_PROVIDERS,
    out: Path | None = None,
) -> BenchDoc:
    """Time the artifacts with unstable figures again (up to `rounds` times, interleaved with each other),
    keeping a new figure when it is stable; rewrites the bench file (`out`, default: the run's bench file)."""
    for attempt in range(rounds):
        shaky = [a for a in doc.artifacts if a.status == "done" and any(not lat.stable for lat in a.latency)]
        if not shaky:
            break
        log.info("re-measuring %d artifacts with unstable figures (attempt %d)", len(shaky), attempt + 1)
        subjects = [
            Subject(
                a.id, a.path, _opener(run_dir / a.path, a.row.runtime, settings.threads, torch_device, ort_providers)
            )
            for a in shaky
        ]
        again, conditions = bench_artifacts(
            subjects, images, labels, teacher_logits, settings._replace(seed=attempt + 1)
        )
        for old, new in zip(shaky, again):
            for i, lat in enumerate(old.latency):
                fresh = new.latency_at(lat.batch_size)
                if not lat.stable and fresh is not None and (fresh.stable or fresh.spread < lat.spread):
                    old.latency[i] = fresh
        doc.conditions.setdefault("repeats_of_unstable", []).append(conditions)
    write_json_atomic(str(out or RunDir(run_dir).bench_file(doc.device)), doc.to_dict())
    return doc


def save_val_set(path: Path, images: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray) -> None:
    """Write bench/val.npz (images float32 NCHW normalised, labels int64, teacher_logits float32) atomically."""
    buf = io.BytesIO()
    np.savez(
        buf,
        images=np.asarray(images, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        teacher_logits=np.asarray(teacher_logits, dtype=np.float32),
    )
    write_bytes_atomic(Path(path), buf.getvalue())


def load_val_set(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, teacher_logits) from a bench/val.npz."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["images"], data["labels"], data["teacher_logits"]
    except (OSError, KeyError, ValueError) as e:
        raise EdgekdError(
            f"{path}: not a valid val set (needs images, labels, teacher_logits arrays): {one_line(e)}"
        ) from None
