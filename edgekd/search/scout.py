"""The scout: candidate students timed on a device before any training, so the student can be chosen by what it
measures there (`edgekd scout`, and the scout stage that `student.model: auto` runs).

Each candidate (edgekd.search.candidates) is built at the teacher's input with random weights, its params and
MACs counted, exported to ONNX the way the export stage exports the student, and timed with the benchmark's
harness (ondevice.measure.bench_artifacts: every model loaded, warm-up, then interleaved rounds, shuffled per
round, so none is favoured by when it ran; their spread marks unstable figures) at the budget's batch. A
candidate that cannot be built, exported or timed stays in the table with the reason.

Timings are cached in scout/cache.json per (candidate, input, device, machine, runtime, precision, timing
settings, toolchain), so a second scout of the same candidates times nothing. Where candidates are timed is
one function per kind of device (`timer_for`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from edgekd import __version__
from edgekd.bench.sysinfo import cpu_model, gpu_name, library_versions
from edgekd.config import BenchmarkConfig
from edgekd.errors import EdgekdError
from edgekd.export.onnx import export_onnx
from edgekd.models import ModelSpec
from edgekd.ondevice.files import write_json_atomic
from edgekd.ondevice.measure import Settings, Subject, bench_artifacts
from edgekd.ondevice.records import ArtifactRecord, RecordError
from edgekd.ondevice.text import one_line
from edgekd.report.plots import scout_scatter
from edgekd.run_records import ScoutEntry, ScoutTable
from edgekd.rundir import RunDir
from edgekd.runtimes.base import open_runtime
from edgekd.runtimes.onnxruntime import DEFAULT_PROVIDERS, choose_providers
from edgekd.search import candidates as cands

LOCAL = "local"
ONNX_FILE = "onnx_file"
"""The catalogue row a candidate's ONNX file is timed as: a given ONNX file, named by candidates.file_name."""
RUNTIME, PRECISION = "onnxruntime", "fp32"
"""What `local` times: the fp32 ONNX file on ONNX Runtime, as the benchmark times the student's `student_onnx`."""
TOOLCHAIN = ("torch", "torchvision", "onnx", "onnxruntime", "timm", "torch-pruning")
CACHE_SCHEMA = "edgekd.scout-cache/1"

Log = Callable[[str], None]
Timer = Callable[[Mapping[str, Path], np.ndarray, Settings, Log], tuple[dict[str, ArtifactRecord], str]]
"""Times ONNX files (plain name -> path) on one batch together: the benchmark's record of each by name, and what
ran them."""


@dataclass(frozen=True)
class Request:
    """What to scout: the candidates, built at the teacher's input (classes, channels, image size), exported at
    `opset`, timed with `settings` at its one batch size (the budget's)."""

    candidates: tuple[str, ...]
    teacher: ModelSpec
    settings: Settings
    opset: int = 17

    @property
    def batch_size(self) -> int:
        return self.settings.batch_sizes[0]


def settings_for(benchmark: BenchmarkConfig, seed: int) -> Settings:
    """The benchmark's timing settings, at the latency budget's batch alone (its other batch sizes are not read)."""
    b = benchmark
    return Settings((b.budget.latency_batch,), b.warmup, b.min_runs, b.min_seconds, b.repeats, b.threads, seed)


# --------------------------------------------------------------------------- where candidates are timed


def time_here(files: Mapping[str, Path], batch: np.ndarray, settings: Settings, log: Log):
    """`local`: ONNX Runtime on this machine with the benchmark's providers and threads, in its harness (the files
    as the `onnx_file` rows of `edgekd bench FILE.onnx`; no labels, so latency alone)."""
    providers = choose_providers(DEFAULT_PROVIDERS)
    ran = f"{RUNTIME} {onnxruntime.__version__} ({providers[0].removesuffix('ExecutionProvider')})"
    opener = functools.partial(open_runtime, backend=RUNTIME, threads=settings.threads, providers=providers)
    subjects = [Subject(ONNX_FILE, path.name, functools.partial(opener, path), name) for name, path in files.items()]
    records, _ = bench_artifacts(subjects, batch, None, None, settings, log=log) if subjects else ([], {})
    return {r.name: r for r in records}, ran


def timer_for(device: str) -> Timer:
    """How candidates are timed on `device`; a device it cannot time on yet is a one-line error."""
    if device == LOCAL:
        return time_here
    raise EdgekdError(
        f"scout device {device!r}: scouting on a remote device needs the remote ONNX timing of "
        f"`edgekd bench MODEL.onnx --device`, which this edgekd does not have yet; scout on `{LOCAL}`"
    )


def machine(device: str) -> dict:
    """What a figure measured on `device` depends on beyond the model: for `local`, this machine."""
    if device != LOCAL:
        return {"device": device}
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_name(), "providers": choose_providers()}


# --------------------------------------------------------------------------- the cache


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _toolchain() -> dict:
    return {"edgekd": __version__, **library_versions(TOOLCHAIN)}


def timing_key(name: str, request: Request, device: str) -> str:
    """The cache key of one candidate's figure on `device`."""
    timing = {k: v for k, v in request.settings._asdict().items() if k != "seed"}  # the seed only orders rounds
    return _digest(
        {
            "model": cands.identity(name, request.teacher),
            "device": device,
            "machine": machine(device),
            "runtime": RUNTIME,
            "precision": PRECISION,
            "opset": request.opset,
            "timing": timing,
            "toolchain": _toolchain(),
        }
    )


class Cache:
    """scout/cache.json: candidates' figures by timing_key, and (params, MACs) by model and toolchain. A file that
    does not read as one is started afresh: it is a cache, not a record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.timings: dict[str, ScoutEntry] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("schema") == CACHE_SCHEMA:
                self.timings = {k: ScoutEntry.from_dict(v, f"timings.{k}") for k, v in doc["timings"].items()}
                self.sizes = {k: (int(v[0]), int(v[1])) for k, v in doc["sizes"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecordError):
            self.timings, self.sizes = {}, {}

    def save(self) -> None:
        timings = {k: e.to_dict() for k, e in self.timings.items()}
        write_json_atomic(self.path, {"schema": CACHE_SCHEMA, "timings": timings, "sizes": self.sizes})

    def size_of(self, name: str, teacher: ModelSpec) -> tuple[int, int] | None:
        """(params, MACs) of a candidate at the teacher's input, built once per toolchain; None: it cannot be built."""
        key = _digest({"model": cands.identity(name, teacher), "toolchain": _toolchain()})
        if key not in self.sizes:
            try:
                with torch.random.fork_rng():
                    self.sizes[key] = cands.size(*cands.build(name, teacher))
            except Exception:  # a model that cannot be built at this input is no default candidate
                return None
        return self.sizes[key]


def resolve(names: Sequence[str], teacher: ModelSpec, cache: Cache) -> tuple[str, ...]:
    """The candidates to scout: `names`, or (empty) the defaults for this teacher (candidates.defaults)."""
    return tuple(names) or tuple(cands.defaults(teacher, lambda n: cache.size_of(n, teacher)))


# --------------------------------------------------------------------------- scouting


def scout(
    request: Request, device: str, budget_ms: float | None, cache: Cache, log: Log, fresh: bool = False
) -> ScoutTable:
    """Every candidate of `request` on `device`: cached figures as they are (`fresh`: none), the others built,
    exported and timed together; each marked within `budget_ms` (p50) or not."""
    timer = timer_for(device)
    entries: dict[str, ScoutEntry] = {}
    todo: dict[str, str] = {}  # candidate -> timing key
    for name in request.candidates:
        key = timing_key(name, request, device)
        if (why := cands.unavailable(name)) is not None:
            entries[name] = ScoutEntry(name, "skipped", why)
        elif key in cache.timings and not fresh:
            entries[name] = dataclasses.replace(cache.timings[key], cached=True)
        else:
            todo[name] = key
    t = request.teacher
    rng = np.random.default_rng(request.settings.seed)
    batch = rng.standard_normal((request.batch_size, t.in_channels, t.image_size, t.image_size)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="edgekd-scout-") as tmp:
        exported, sizes = _export(list(todo), request, torch.from_numpy(batch[:1]), Path(tmp), entries, log)
        if exported:
            log(f"  scout: timing {len(exported)} candidates on {device} at batch {request.batch_size}")
        files = {cands.file_name(name): path for name, path in exported}
        records, ran = timer(files, batch, request.settings, lambda msg: log(f"  scout: {msg}"))
    for name, _ in exported:
        rec, (params, macs) = records[cands.file_name(name)], sizes[name]
        if rec.status == "done" and rec.latency:
            entries[name] = cache.timings[todo[name]] = ScoutEntry(name, "done", None, params, macs, rec.latency[0])
        else:
            entries[name] = ScoutEntry(name, "failed", rec.reason or "not timed", params, macs)
    for entry in entries.values():
        if entry.status == "done" and budget_ms is not None:
            entry.within_budget = entry.p50_ms <= budget_ms
    return ScoutTable(
        device=device,
        runtime=ran,
        precision=PRECISION,
        batch_size=request.batch_size,
        budget_ms=budget_ms,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        settings=request.settings.as_dict(),
        entries=[entries[name] for name in request.candidates],
    )


def _export(
    names: list[str], request: Request, example: torch.Tensor, folder: Path, failed: dict[str, ScoutEntry], log: Log
) -> tuple[list[tuple[str, Path]], dict[str, tuple[int, int]]]:
    """Each candidate built with seeded random weights, sized and exported into `folder`: (name, ONNX file) of those
    exported and their (params, MACs); a failure goes into `failed` with its reason."""
    exported, sizes = [], {}
    for name in names:
        try:
            with torch.random.fork_rng():
                torch.manual_seed(request.settings.seed)
                model, spec = cands.build(name, request.teacher)
            sizes[name] = cands.size(model, spec)
            exported.append(
                (name, export_onnx(model, folder / f"{cands.file_name(name)}.onnx", example, opset=request.opset))
            )
            log(f"  scout: {name} exported ({sizes[name][0] / 1e6:.2f} M params, {sizes[name][1] / 1e6:.1f} M MACs)")
        except Exception as e:  # one candidate failing must not lose the others' figures
            failed[name] = ScoutEntry(name, "failed", one_line(e), *sizes.get(name, (None, None)))
            log(f"  scout: {name} failed: {one_line(e)}")
    return exported, sizes


def scout_devices(
    names: Sequence[str],
    teacher: ModelSpec,
    settings: Settings,
    opset: int,
    devices: Sequence[str],
    budgets: dict[str, float],
    run: RunDir,
    log: Log,
    fresh: bool = False,
) -> list[ScoutTable]:
    """`names` (empty: the defaults) on every device, with the run's cache (`fresh`: every figure taken again and
    cached in place of the old); each table saved (scout/tables/)."""
    for device in devices:
        timer_for(device)  # a device that cannot be scouted stops before anything is built
    cache = Cache(run.scout_cache)
    request = Request(resolve(names, teacher, cache), teacher, settings, opset)
    tables = []
    try:
        for device in devices:
            tables.append(scout(request, device, budgets.get(device), cache, log, fresh))
    finally:
        cache.save()
    for table in tables:
        save_table(table, run)
    return tables


def save_table(table: ScoutTable, run: RunDir) -> None:
    """scout/tables/<device>.json and its latency-vs-MACs plot."""
    write_json_atomic(run.scout_table(table.device), table.to_dict())
    scout_scatter(table, run.scout_plot(table.device))


def choose(table: ScoutTable) -> ScoutEntry:
    """The candidate with the most MACs within the budget; nothing within it is a one-line error naming the
    fastest candidate and its latency."""
    fitting = table.fitting()
    if fitting:
        return fitting[0]
    timed = table.timed()
    where = f"benchmark.budget.latency_ms.{table.device}"
    if not timed:
        failed = next((e for e in table.entries if e.reason), None)
        first = f"; {failed.candidate}: {failed.reason}" if failed else ""
        raise EdgekdError(f"{where}: no scout candidate could be timed on {table.device}{first}")
    fastest = timed[0]
    raise EdgekdError(
        f"{where}: no scout candidate runs within {table.budget_ms:g} ms on {table.device} (p50 at batch "
        f"{table.batch_size}); the fastest, {fastest.candidate}, takes {fastest.p50_ms:.3f} ms: raise the budget or "
        "add smaller candidates to scout.candidates"
    )
