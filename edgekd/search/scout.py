"""The scout: candidate students timed on a device before any training, so the student can be chosen by what it
measures there (`edgekd scout`, and the scout stage that `student.model: auto` runs).

Each candidate (edgekd.search.candidates) is built at the teacher's input with random weights, its params and
MACs counted, exported to ONNX the way the export stage exports the student, and timed with the benchmark's
harness (ondevice.measure.bench_artifacts: every model loaded, warm-up, then interleaved rounds, shuffled per
round, so none is favoured by when it ran; their spread marks unstable figures) at the budget's batch. A
candidate that cannot be built, exported or timed stays in the table with the reason.

On a devices.yaml device the candidates go through the ship machinery (edgekd.fleet.files.bench_onnx_files,
as `edgekd bench FILE.onnx --device` does: one bundle, engines built there, the engine cache on both sides) at the
precisions the device ships: engines at its tensorrt.precisions where it has TensorRT (int8 engines from Q/DQ
copies calibrated on seeded random images: an engine's latency does not depend on its scales), and the files in
ONNX Runtime fp32 where it has ONNX Runtime, with the device's own timing settings (devices.yaml `benchmark`, as
its benchmark after training uses). A candidate's figure is the row the report judges the budget on
(report.budgets.deployable): its fastest engine where engines ran, else the ONNX Runtime file.

Timings are cached in scout/cache.json per (candidate, input, device, machine, runtime, precision, timing
settings, toolchain), so a second scout of the same candidates times nothing; on a device the machine is its
devices.yaml entry and the TensorRT and ONNX Runtime versions its probe reports (one SSH round trip, so an
upgraded device is timed again). Where candidates are timed is one function per kind of device (`timer_for`).
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
from edgekd.bench.benchmark import settings_from_config
from edgekd.bench.sysinfo import cpu_model, gpu_name, library_versions
from edgekd.config import BenchmarkConfig, DeviceConfig, load_devices
from edgekd.errors import EdgekdError
from edgekd.export.onnx import export_onnx
from edgekd.models import ModelSpec
from edgekd.ondevice import catalog
from edgekd.ondevice.files import write_json_atomic
from edgekd.ondevice.measure import Settings, Subject, bench_artifacts
from edgekd.ondevice.records import ArtifactRecord, RecordError
from edgekd.ondevice.text import one_line
from edgekd.report.plots import scout_scatter
from edgekd.run_records import LOCAL, ScoutEntry, ScoutTable
from edgekd.rundir import RunDir
from edgekd.runtimes.base import open_runtime
from edgekd.runtimes.onnxruntime import DEFAULT_PROVIDERS, choose_providers
from edgekd.search import candidates as cands

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
    return settings_from_config(benchmark, seed, (benchmark.budget.latency_batch,))


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


ENGINE_ROWS = ("onnx_file_trt_fp32", "onnx_file_trt_fp16", "onnx_file_trt_int8")
"""The engine rows of a candidate's file on a device, as edgekd.fleet.files names them."""
CALIBRATION_IMAGES = 8
"""Seeded random images that calibrate the Q/DQ copy an int8 engine is built from (latency only)."""


@dataclass(frozen=True)
class Target:
    """A device to scout on: its name, and its devices.yaml entry (None: `local`, this machine)."""

    name: str
    config: DeviceConfig | None = None

    @property
    def remote(self) -> bool:
        return self.config is not None


def targets(devices: Sequence[str], devices_file: Path | None) -> list[Target]:
    """The devices named, `local` as it is and the others from `devices_file`: an unknown name, or a file that
    does not read, is a one-line error before anything is built."""
    found = []
    for name in devices:
        if name == LOCAL:
            found.append(Target(name))
            continue
        try:
            found.append(Target(name, load_devices(devices_file or Path("devices.yaml")).get(name)))
        except EdgekdError as e:
            raise EdgekdError(f"scout device {name!r}: {e}") from None
    return found


def device_settings(target: Target, settings: Settings) -> Settings:
    """The timing settings on `target`: the request's here; on a device its devices.yaml `benchmark` (what its
    benchmark after training uses, so the two figures compare) at the request's batch and seed."""
    if not target.remote:
        return settings
    b = target.config.benchmark
    return Settings(settings.batch_sizes, b.warmup, b.min_runs, b.min_seconds, b.repeats, b.threads, settings.seed)


def shipped(device: DeviceConfig) -> tuple[str, ...]:
    """What `device` ships a candidate as: engines at its tensorrt.precisions where it has TensorRT, and the
    fp32 file in ONNX Runtime where it has ONNX Runtime (the catalogue rows' precisions, `ort-` for the latter)."""
    engines = "tensorrt" in device.backends and device.tensorrt.enabled
    return (
        *(f"trt-{p}" for p in (device.tensorrt.precisions if engines else [])),
        *(["ort-fp32"] if "onnxruntime" in device.backends else []),
    )


def time_on(target: Target, out: Path) -> Timer:
    """A devices.yaml device: the files shipped in one bundle (edgekd.fleet.files.bench_onnx_files into `out`),
    each candidate's figure being the row the report judges (`judged`)."""
    from edgekd.fleet.files import bench_onnx_files

    device = target.config
    assert device is not None

    def timer(files: Mapping[str, Path], batch: np.ndarray, settings: Settings, log: Log):
        if not files:
            return {}, ""
        ships = shipped(device)
        engines = any(p.startswith("trt-") for p in ships)
        calibration = None
        if "trt-int8" in ships:  # int8 engines are built from Q/DQ files; random images give the scales (latency only)
            rng = np.random.default_rng(settings.seed)
            calibration = rng.standard_normal((CALIBRATION_IMAGES, *batch.shape[1:])).astype(np.float32)
        log(f"shipping {len(files)} files to {device.name} ({', '.join(ships) or 'nothing it ships'})")
        doc = bench_onnx_files(
            files,
            out,
            device,
            precisions=None if engines else ["fp32"],  # engines: the device's tensorrt.precisions
            batch_sizes=settings.batch_sizes,
            settings=settings,
            calibration=calibration,
        )
        records = {name: judged(doc.artifacts, name, settings.batch_sizes[0]) for name in files}
        return records, ""

    return timer


def judged(records: Sequence[ArtifactRecord], name: str, batch_size: int) -> ArtifactRecord:
    """The record of file `name` the budget is judged on (report.budgets.deployable): its fastest done engine at
    `batch_size` where any ran, else its ONNX Runtime fp32 file; neither done, a failed record with the reasons."""
    mine = [r for r in records if r.name == name]
    done = [r for r in mine if r.status == "done" and r.latency_at(batch_size) is not None]
    engines = [r for r in done if r.id in ENGINE_ROWS]
    if engines:
        return min(engines, key=lambda r: r.latency_at(batch_size).p50_ms)
    ort = next((r for r in done if r.id == ONNX_FILE), None)
    if ort is not None:
        return ort
    reasons = "; ".join(f"{r.id}: {r.reason}" for r in mine if r.reason) or "not timed"
    return ArtifactRecord(ONNX_FILE, "failed", name, reason=reasons, name=name)


def timer_for(target: Target, run: RunDir) -> Timer:
    """How candidates are timed on `target`: here in ONNX Runtime, or on a device in the run's folder for it."""
    return time_on(target, run.scout_device_dir(target.name)) if target.remote else time_here


def machine(target: Target) -> dict:
    """What a figure measured on `target` depends on beyond the model: for `local`, this machine; for a device,
    its devices.yaml entry less how it is reached (SSH options, timeouts, where its files go)."""
    if target.remote:
        keep = ("kind", "backends", "ort_providers", "lock_clocks", "tensorrt")
        return {"device": target.name, **target.config.model_dump(mode="json", include=set(keep))}
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_name(), "providers": choose_providers()}


def device_toolchain(target: Target) -> dict:
    """The runtime versions a figure on `target` depends on: nothing more here (the host toolchain is in every key);
    on a device, what its probe reports (one SSH round trip; an unreachable device is a one-line error)."""
    if not target.remote:
        return {}
    from edgekd.fleet.check import probe_device
    from edgekd.fleet.ssh import Ssh

    libs = probe_device(Ssh(target.config))[1].get("libraries", {})
    return {lib: (libs.get(lib) or {}).get("version") for lib in ("tensorrt", "onnxruntime", "numpy", "pycuda")}


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
) -> ScoutTable:
    """Every candidate of `request` on `target`: cached figures as they are (`fresh`: none), the others built,
    exported and timed together; each marked within `budget_ms` (p50) or not. A device needs the `run` whose
    scout folder its files are timed in."""
    target = Target(target) if isinstance(target, str) else target
    if target.remote and run is None:
        raise ValueError("scouting on a device needs the run directory")
    timer = timer_for(target, run) if run is not None else time_here
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
                entry.artifact, entry.runtime = rec.id, _runtime_label(rec)
            entries[name] = cache.timings[todo[name]] = entry
        else:
            entries[name] = ScoutEntry(name, "failed", rec.reason or "not timed", params, macs)
    for entry in entries.values():
        if entry.status == "done" and budget_ms is not None:
            entry.within_budget = entry.p50_ms <= budget_ms
    ordered = [entries[name] for name in request.candidates]
    if target.remote:
        ran, precision = _what_ran(ordered, target)
    return ScoutTable(
        device=target.name,
        runtime=ran,
        precision=PRECISION if not target.remote else precision,
        batch_size=request.batch_size,
        budget_ms=budget_ms,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        settings=settings.as_dict(),
        entries=ordered,
    )


def _runtime_label(rec: ArtifactRecord) -> str:
    """What ran a record, as the device reported it: `tensorrt 8.5.2.2`, `tensorrt-standin 10.3.0-standin`."""
    return f"{rec.runtime.name} {rec.runtime.version}" if rec.runtime is not None else "?"


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
) -> list[ScoutTable]:
    """`names` (empty: the defaults) on every device (`local`, or a name from `devices_file`), with the run's
    cache (`fresh`: every figure taken again and cached in place of the old); each table saved (scout/tables/)."""
    found = targets(devices, devices_file)  # an unknown device stops before anything is built
    cache = Cache(run.scout_cache)
    request = Request(resolve(names, teacher, cache), teacher, settings, opset)
    tables = []
    try:
        for target in found:
            tables.append(scout(request, target, budgets.get(target.name), cache, log, fresh, run))
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
