"""Where ONNX files are timed before any training: this machine, or a devices.yaml device through the ship
machinery. The scout times its candidate students with it, latency-targeted pruning each step's candidate.

`local` times the files in ONNX Runtime with the benchmark's harness (ondevice.measure.bench_artifacts: every
model loaded, warm-up, then interleaved rounds whose spread marks unstable figures). A device gets the files in
one bundle (edgekd.fleet.files.bench_onnx_files, as `edgekd bench FILE.onnx --device` does: engines built there,
the engine cache on both sides) at the precisions it ships, with its own devices.yaml `benchmark` settings, and
each file's figure is the row the report judges a device on (report.budgets.deployable): its fastest engine
where engines ran, else the ONNX Runtime file. What ran a figure is what the device reported (`tensorrt 8.5.2.2`,
or `tensorrt-standin ...` for the tests' stand-in, never presented as TensorRT).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from edgekd.bench.sysinfo import cpu_model, gpu_name
from edgekd.config import DeviceConfig, load_devices
from edgekd.config.pipeline import PruneConfig
from edgekd.errors import EdgekdError
from edgekd.ondevice.measure import Settings, Subject, bench_artifacts
from edgekd.ondevice.records import ArtifactRecord
from edgekd.run_records import LOCAL
from edgekd.runtimes.base import open_runtime
from edgekd.runtimes.onnxruntime import DEFAULT_PROVIDERS, choose_providers

ONNX_FILE = "onnx_file"
"""The catalogue row a given ONNX file is timed as (edgekd.fleet.files)."""
RUNTIME, PRECISION = "onnxruntime", "fp32"
"""What `local` times: the fp32 ONNX file on ONNX Runtime, as the benchmark times the student's `student_onnx`."""
ENGINE_ROWS = ("onnx_file_trt_fp32", "onnx_file_trt_fp16", "onnx_file_trt_int8")
"""The engine rows of a given file on a device, as edgekd.fleet.files names them."""
CALIBRATION_IMAGES = 8
"""Seeded random images that calibrate the Q/DQ copy an int8 engine is built from (latency only)."""

Log = Callable[[str], None]
Timer = Callable[[Mapping[str, Path], np.ndarray, Settings, Log], tuple[dict[str, ArtifactRecord], str]]
"""Times ONNX files (plain name -> path) on one batch together: the judged record of each by name, and what ran
them where one runtime ran all (`local`; "" on a device: each record says)."""


@dataclass(frozen=True)
class Target:
    """Where files are timed: a name, and its devices.yaml entry (None: `local`, this machine)."""

    name: str
    config: DeviceConfig | None = None

    @property
    def remote(self) -> bool:
        return self.config is not None


def find_target(name: str, devices_file: Path | None, field: str) -> Target:
    """`local` as it is, any other name from `devices_file` (default devices.yaml): an unknown name, or a file that
    does not read, is a one-line error starting with `field`, before anything is built."""
    if name == LOCAL:
        return Target(name)
    try:
        return Target(name, load_devices(devices_file or Path("devices.yaml")).get(name))
    except EdgekdError as e:
        raise EdgekdError(f"{field}: {e}") from None


def prune_target(prune: PruneConfig) -> Target:
    """Where latency-targeted pruning times its steps: `local`, or the device of target.devices_file (the prune
    stage, and the checks before a run, which stop on an unknown device before the teacher trains)."""
    return find_target(prune.target.device, prune.target.devices_file, "student.prune.target.device")


def device_settings(target: Target, settings: Settings) -> Settings:
    """The timing settings on `target`: `settings` here; on a device its devices.yaml `benchmark` (what its
    benchmark after training uses, so the two figures compare) at the batch sizes and seed of `settings`."""
    if not target.remote:
        return settings
    b = target.config.benchmark
    return Settings(settings.batch_sizes, b.warmup, b.min_runs, b.min_seconds, b.repeats, b.threads, settings.seed)


def shipped(device: DeviceConfig) -> tuple[str, ...]:
    """What `device` ships a file as: engines at its tensorrt.precisions where it has TensorRT, and the fp32 file
    in ONNX Runtime where it has ONNX Runtime (the catalogue rows' precisions, `ort-` for the latter)."""
    engines = "tensorrt" in device.backends and device.tensorrt.enabled
    return (
        *(f"trt-{p}" for p in (device.tensorrt.precisions if engines else [])),
        *(["ort-fp32"] if "onnxruntime" in device.backends else []),
    )


def time_here(files: Mapping[str, Path], batch: np.ndarray, settings: Settings, log: Log):
    """`local`: ONNX Runtime on this machine with the benchmark's providers and threads, in its harness (the files
    as the `onnx_file` rows of `edgekd bench FILE.onnx`; no labels, so latency alone)."""
    providers = choose_providers(DEFAULT_PROVIDERS)
    ran = f"{RUNTIME} {onnxruntime.__version__} ({providers[0].removesuffix('ExecutionProvider')})"
    opener = functools.partial(open_runtime, backend=RUNTIME, threads=settings.threads, providers=providers)
    subjects = [Subject(ONNX_FILE, path.name, functools.partial(opener, path), name) for name, path in files.items()]
    records, _ = bench_artifacts(subjects, batch, None, None, settings, log=log) if subjects else ([], {})
    return {r.name: r for r in records}, ran


def time_on(target: Target, out: Path) -> Timer:
    """A devices.yaml device: the files shipped in one bundle (edgekd.fleet.files.bench_onnx_files into `out`, a
    folder laid out like a run, never a run directory), each file's figure the row the report judges (`judged`)."""
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
        return {name: judged(doc.artifacts, name, settings.batch_sizes[0]) for name in files}, ""

    return timer


def timer_for(target: Target, out: Path) -> Timer:
    """How files are timed on `target`: here in ONNX Runtime, or on a device in folder `out` (`time_on`)."""
    return time_on(target, out) if target.remote else time_here


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


def runtime_label(rec: ArtifactRecord) -> str:
    """What ran a record, as the runtime reported itself: `tensorrt 8.5.2.2`, `tensorrt-standin 10.3.0-standin`."""
    return f"{rec.runtime.name} {rec.runtime.version}" if rec.runtime is not None else "?"


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
