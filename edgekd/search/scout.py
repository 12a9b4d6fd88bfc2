"""The scout: candidate students timed on a device before any training, so the student can be chosen by what it
measures there (`edgekd scout`, and the scout stage that `student.model: auto` runs).

Each candidate (edgekd.search.candidates) is built at the teacher's input with random weights, its params and
MACs counted, exported to ONNX the way the export stage exports the student, and timed with the benchmark's
harness (ondevice.measure.bench_artifacts: every model loaded, warm-up, then interleaved rounds, shuffled per
round, so none is favoured by when it ran; their spread marks unstable figures) at the budget's batch. A
candidate that cannot be built, exported or timed stays in the table with the reason.

On a devices.yaml device the candidates go through the ship machinery (edgekd.fleet.timing, which latency-targeted
pruning shares: one bundle, engines built there, the engine cache on both sides) at the precisions the device
ships: engines at its tensorrt.precisions where it has TensorRT (int8 engines from Q/DQ copies calibrated on
seeded random images: an engine's latency does not depend on its scales), and the files in ONNX Runtime fp32
where it has ONNX Runtime, with the device's own timing settings (devices.yaml `benchmark`, as its benchmark
after training uses). A candidate's figure is the row the report judges the budget on
(report.budgets.deployable): its fastest engine where engines ran, else the ONNX Runtime file.

Timings are cached in scout/cache.json per (candidate, input, device, machine, runtime, precision, timing
settings, toolchain), so a second scout of the same candidates times nothing; on a device the machine is its
devices.yaml entry and the TensorRT and ONNX Runtime versions its probe reports (one SSH round trip, so an
upgraded device is timed again). Where candidates are timed is edgekd.fleet.timing's `timer_for`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edgekd import __version__
from edgekd.bench.benchmark import settings_from_config
from edgekd.bench.sysinfo import library_versions
from edgekd.config import BenchmarkConfig
from edgekd.errors import EdgekdError
from edgekd.export.onnx import export_onnx
from edgekd.fleet.timing import (
    PRECISION,
    RUNTIME,
    Log,
    Target,
    device_settings,
    device_toolchain,
    find_target,
    machine,
    runtime_label,
    shipped,
    time_here,
    timer_for,
)
from edgekd.models import ModelSpec
from edgekd.ondevice import catalog
from edgekd.ondevice.files import write_json_atomic
from edgekd.ondevice.measure import Settings
from edgekd.ondevice.records import RecordError
from edgekd.ondevice.text import one_line
from edgekd.report.plots import scout_scatter
from edgekd.run_records import ScoutEntry, ScoutTable
from edgekd.rundir import RunDir
from edgekd.search import candidates as cands

TOOLCHAIN = ("torch", "torchvision", "onnx", "onnxruntime", "timm", "torch-pruning")
CACHE_SCHEMA = "edgekd.scout-cache/1"


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
    return settings_from_config(benchmark, seed, (benchmark.budget.latency_batch,))


# --------------------------------------------------------------------------- where candidates are timed


def targets(devices: Sequence[str], devices_file: Path | None) -> list[Target]:
    """The devices named, `local` as it is and the others from `devices_file`: an unknown name, or a file that
    does not read, is a one-line error before anything is built."""
    return [find_target(name, devices_file, f"scout device {name!r}") for name in devices]


# --------------------------------------------------------------------------- the cache


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _toolchain() -> dict:
    return {"edgekd": __version__, **library_versions(TOOLCHAIN)}


def timing_key(name: str, request: Request, target: Target, runtimes: Mapping[str, str | None]) -> str:
    """The cache key of one candidate's figure on `target` (`runtimes`: its device_toolchain, empty here)."""
    settings = device_settings(target, request.settings)
    timing = {k: v for k, v in settings._asdict().items() if k != "seed"}  # the seed only orders rounds
    key = {
        "model": cands.identity(name, request.teacher),
        "device": target.name,
        "machine": machine(target),
        "runtime": RUNTIME,
        "precision": PRECISION,
        "opset": request.opset,
        "timing": timing,
        "toolchain": _toolchain(),
    }
    if target.remote:  # what the device ships (runtimes and precisions) and the versions it reported
        key.update(runtime=list(shipped(target.config)), precision=None, device_toolchain=dict(runtimes))
    return _digest(key)


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
    request: Request,
    target: Target | str,
    budget_ms: float | None,
    cache: Cache,
    log: Log,
    fresh: bool = False,
    run: RunDir | None = None,
    headroom: float = 0.0,
) -> ScoutTable:
    """Every candidate of `request` on `target`: cached figures as they are (`fresh`: none), the others built,
    exported and timed together; each marked within `budget_ms` less `headroom` (p50) or not. A device needs the
    `run` whose scout folder its files are timed in."""
    target = Target(target) if isinstance(target, str) else target
    if target.remote and run is None:
        raise ValueError("scouting on a device needs the run directory")
    timer = timer_for(target, run.scout_device_dir(target.name)) if run is not None else time_here
    settings = device_settings(target, request.settings)
    runtimes = device_toolchain(target)
    entries: dict[str, ScoutEntry] = {}
    todo: dict[str, str] = {}  # candidate -> timing key
    for name in request.candidates:
        key = timing_key(name, request, target, runtimes)
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
        exported, sizes = _export(list(todo), request, Path(tmp), entries, log)
        if exported:
            log(f"  scout: timing {len(exported)} candidates on {target.name} at batch {request.batch_size}")
        files = {cands.file_name(name): path for name, path in exported}
        records, ran = timer(files, batch, settings, lambda msg: log(f"  scout: {msg}"))
    for name, _ in exported:
        rec, (params, macs) = records[cands.file_name(name)], sizes[name]
        latency = rec.latency_at(request.batch_size) if rec.status == "done" else None
        if latency is not None:
            entry = ScoutEntry(name, "done", None, params, macs, latency)
            if target.remote:
                entry.artifact, entry.runtime = rec.id, runtime_label(rec)
            entries[name] = cache.timings[todo[name]] = entry
        else:
            entries[name] = ScoutEntry(name, "failed", rec.reason or "not timed", params, macs)
    ordered = [entries[name] for name in request.candidates]
    if target.remote:
        ran, precision = _what_ran(ordered, target)
    table = ScoutTable(
        device=target.name,
        runtime=ran,
        precision=PRECISION if not target.remote else precision,
        batch_size=request.batch_size,
        budget_ms=budget_ms,
        headroom=headroom,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        settings=settings.as_dict(),
        entries=ordered,
    )
    for entry in table.timed():
        if table.limit_ms is not None:
            entry.within_budget = entry.p50_ms <= table.limit_ms
    return table


def _what_ran(entries: Sequence[ScoutEntry], target: Target) -> tuple[str, str]:
    """A device table's runtime and precision: those of its timed candidates' rows (they may differ per candidate:
    the fastest engine is judged), else what the device ships."""
    timed = [e for e in entries if e.status == "done" and e.artifact]
    runtimes = sorted({e.runtime for e in timed if e.runtime})
    precisions = [catalog.get(e.artifact).precision for e in timed]
    ordered = sorted(set(precisions), key=("fp32", "fp16", "int8").index) if precisions else []
    ships = ", ".join(shipped(target.config))
    return (", ".join(runtimes) or ships or "nothing"), ("/".join(ordered) or "-")


def export_candidate(model: torch.nn.Module, teacher: ModelSpec, path: Path, opset: int) -> Path:
    """A built candidate exported the way the scout times it: fp32 ONNX at `opset` with a dynamic batch, at the
    teacher's input (the scout stage keeps its choice so, for the benchmark to time it again)."""
    example = torch.zeros(1, teacher.in_channels, teacher.image_size, teacher.image_size)
    return export_onnx(model, path, example, opset=opset)


def _export(
    names: list[str], request: Request, folder: Path, failed: dict[str, ScoutEntry], log: Log
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
            path = folder / f"{cands.file_name(name)}.onnx"
            exported.append((name, export_candidate(model, request.teacher, path, request.opset)))
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
    devices_file: Path | None = None,
    headroom: float = 0.0,
) -> list[ScoutTable]:
    """`names` (empty: the defaults) on every device (`local`, or a name from `devices_file`), with the run's
    cache (`fresh`: every figure taken again and cached in place of the old); each table saved (scout/tables/)."""
    found = targets(devices, devices_file)  # an unknown device stops before anything is built
    cache = Cache(run.scout_cache)
    request = Request(resolve(names, teacher, cache), teacher, settings, opset)
    tables = []
    try:
        for target in found:
            tables.append(scout(request, target, budgets.get(target.name), cache, log, fresh, run, headroom))
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
    """The candidate with the most MACs within the budget less its headroom; nothing within it is a one-line error
    naming the fastest candidate and its latency."""
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
        f"{where}: no scout candidate runs within {limit_text(table)} on {table.device} (p50 at batch "
        f"{table.batch_size}); the fastest, {fastest.candidate}, takes {fastest.p50_ms:.3f} ms: raise the budget, "
        "lower scout.headroom or add smaller candidates to scout.candidates"
    )


def limit_text(table: ScoutTable) -> str:
    """The p50 a candidate had to stay within, for messages: `0.36 ms (0.4 ms less scout.headroom 10%)`."""
    if not table.headroom:
        return f"{table.budget_ms:g} ms"
    return f"{table.limit_ms:.3g} ms ({table.budget_ms:g} ms less scout.headroom {table.headroom:.0%})"
