"""What goes to a device: the run's ONNX files, bench/val.npz, the edgekd/ondevice package and a job file.

A bundle mirrors the run directory, so paths in the device's bench file are run-dir paths:

    job.json                   what to build and measure (edgekd.job/1, read by edgekd_device.bench)
    edgekd_device/*.py         edgekd/ondevice/, copied alone (it imports nothing else from edgekd)
    bench/val.npz              fixed validation batch
    export/calib.npz           training images that calibrate int8: on the DLA, and the fallback of a Q/DQ int8
                               engine whose build fails (only for devices that build int8 engines)
    export/*.onnx  qat/*_qdq.onnx  dynamic_quant/*.onnx   the ONNX files the device needs (fp16 engines name both
                                                          the fp32 and the fp16 ONNX: the device's TensorRT picks)
    engines/<id>.engine + .json                           prebuilt engines (--engines-only)

Only what the run's manifest vouches for ships (finished stage, sha256 unchanged); ids are catalogue ids.
`files_bundle` ships ONNX files given to `edgekd bench FILE.onnx` the same way, from an output folder laid
out like a run (models/<name>*.onnx, random inputs without labels as bench/val.npz).

Every file is content-addressed (sha256), and the bundle id is the hash of that manifest,
so shipping an unchanged run copies nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import edgekd.ondevice as device_package
from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.manifest import Manifest, read_manifest
from edgekd.ondevice import catalog
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.job import EngineEntry, Job, JobDevice, JobSettings, OnnxEntry, TensorRTOptions
from edgekd.ondevice.names import is_plain_name
from edgekd.ondevice.trt_options import BuildOptions
from edgekd.rundir import RunDir

VAL_PATH = catalog.path_of("val_set")
CALIBRATION_PATH = catalog.path_of("calib_set")
PACKAGE = "edgekd_device"


def shippable(run_dir: Path, manifest: Manifest | None = None) -> dict[str, Path]:
    """The ONNX artifacts the run's manifest vouches for (finished stage, sha256 unchanged): what may ship.

    A file that failed a check, or one an earlier config left behind, is on disk but not vouched for.
    """
    vouched = (manifest or run_manifest(run_dir)).vouched()
    return {a.id: vouched[a.id] for a in catalog.ARTIFACTS if a.ships and a.id in vouched}


def run_manifest(run_dir: Path) -> Manifest:
    """The manifest of a run directory made by `edgekd run` (an EdgekdError when there is none)."""
    run = RunDir(run_dir)
    if not run.manifest.is_file():
        raise EdgekdError(f"{run_dir}: no {run.manifest.name}; not a run directory made by `edgekd run`")
    return read_manifest(run)


def fp16_twin(onnx_id: str) -> str | None:
    """The fp16 ONNX row its stage makes beside the fp32 ONNX `onnx_id` (same model), or None."""
    row = catalog.get(onnx_id)
    for a in catalog.ARTIFACTS:
        if (a.stage, a.model, a.runtime, a.precision) == (row.stage, row.model, "onnxruntime", "fp16"):
            return a.id
    return None


def calibrated_twin(onnx_id: str) -> str | None:
    """The calibrated int8 engine row of the fp32 ONNX of `onnx_id`'s model (the fallback of its Q/DQ engine), or None."""
    fp32 = {
        a.id
        for a in catalog.ARTIFACTS
        if (a.model, a.runtime, a.precision) == (catalog.get(onnx_id).model, "onnxruntime", "fp32")
    }
    rows = (a for a in catalog.ARTIFACTS if (a.runtime, a.precision) == ("tensorrt", "int8") and a.source in fp32)
    return next((a.id for a in rows), None)


def plan_engines(
    run_dir: Path, sources: dict[str, Path], precisions: list[str], dla: bool = False
) -> list[EngineEntry]:
    """The catalogue's engine rows for `precisions` whose source ONNX is among `sources` (id -> path).

    int8 engines come from Q/DQ ONNX files on the GPU and are calibrated from the fp32 ONNX on the
    DLA (`dla`: TensorRT takes no Q/DQ there). An fp16 job also names its fp16 twin when `sources` holds
    it: TensorRT >= 10 builds fp16 strongly typed from that file, 8.5 from the fp32 one with a flag. A Q/DQ
    int8 job names the calibrated int8 engine of the same model's fp32 ONNX as its fallback when `sources`
    holds that ONNX (built only when the Q/DQ build fails; it needs the calibration set too).
    """
    jobs = []
    for source, path in sources.items():
        calibrated = catalog.get(source).precision == "fp32"
        rows = [r for r in catalog.engines_for(source, precisions) if r.precision != "int8" or calibrated == dla]
        digest = sha256_file(str(path)) if rows else ""
        rel = path.relative_to(run_dir).as_posix()
        for row in rows:
            twin = sources.get(fp16_twin(source) or "") if row.precision == "fp16" else None
            entry = EngineEntry(row.id, row.precision, rel, digest)
            if twin is not None:
                twin_rel = twin.relative_to(run_dir).as_posix()
                entry = replace(entry, fp16_onnx=twin_rel, fp16_onnx_sha256=sha256_file(str(twin)))
            fallback = calibrated_twin(source) if row.precision == "int8" and not calibrated else None
            fp32 = sources.get(catalog.get(fallback).source or "") if fallback else None
            if fallback and fp32 is not None:
                fp32_rel = fp32.relative_to(run_dir).as_posix()
                entry = replace(
                    entry, fallback=fallback, fallback_onnx=fp32_rel, fallback_onnx_sha256=sha256_file(str(fp32))
                )
            jobs.append(entry)
    return jobs


def dla_int8(device: DeviceConfig) -> bool:
    """Whether `device` builds int8 engines on its DLA (calibrated: it needs the calibration set)."""
    t = device.tensorrt
    return "tensorrt" in device.backends and t.enabled and t.dla_core is not None and "int8" in t.precisions


def build_options(device: DeviceConfig, precision: str) -> BuildOptions:
    t = device.tensorrt
    return BuildOptions(precision, t.dla_core, t.static_shapes, t.workspace_mb, t.min_batch, t.opt_batch, t.max_batch)


@dataclass
class Bundle:
    """Files by bundle path (local source and sha256), plus the job file's bytes."""

    files: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    job: bytes = b""

    def add(self, rel: str, path: Path) -> None:
        if not all(is_plain_name(part) for part in rel.split("/")):  # it becomes a path on the device
            raise EdgekdError(f"bundle: {rel!r} is not a relative path of plain names; refused")
        self.files[rel] = path
        self.digests[rel] = sha256_file(str(path))

    def set_job(self, job: Job) -> None:
        self.job = job.to_json()
        self.digests["job.json"] = hashlib.sha256(self.job).hexdigest()

    @property
    def id(self) -> str:
        """Hash of the manifest (bundle path -> sha256): equal bundles have equal ids."""
        return hashlib.sha256(json.dumps(self.digests, sort_keys=True).encode()).hexdigest()[:20]

    def objects(self) -> dict[str, Path | bytes]:
        """Content by sha256: a local file, or the job's bytes."""
        found: dict[str, Path | bytes] = {self.digests[rel]: path for rel, path in self.files.items()}
        found[self.digests["job.json"]] = self.job
        return found


def make_bundle(
    run_dir: Path, device: DeviceConfig, prebuilt: dict[str, Path] | None = None, manifest: Manifest | None = None
) -> tuple[Bundle, list[str]]:
    """The bundle for `device` and the warnings about what it leaves out.

    `prebuilt` maps engine names to engine files (their .json sidecar beside them) for
    --engines-only: then no ONNX is shipped and the device only measures those engines.
    """
    run = RunDir(run_dir)
    manifest = manifest or run_manifest(run_dir)
    sources = shippable(run_dir, manifest)
    vouched = manifest.vouched()
    val = vouched.get("val_set")
    if val is None:
        raise EdgekdError(
            f"{run.path('val_set')}: no validation batch the manifest vouches for; run the benchmark stage first"
        )
    bundle, warnings = Bundle(), []
    for stage, why in manifest.stale().items():  # their files stay home until they run again
        warnings.append(f"{run_dir}: stage {stage} is not shipped: {why}")
    _add_device_code(bundle, val)

    engines: list[EngineEntry] = []
    onnx: list[OnnxEntry] = []
    calibration = None
    dla = device.tensorrt.dla_core is not None
    if prebuilt is not None:
        for entry in plan_engines(run_dir, sources, device.tensorrt.precisions, dla):
            deployed = replace(entry, fallback=None, fallback_onnx=None, fallback_onnx_sha256=None)  # nothing is built
            if entry.id not in prebuilt and entry.fallback in prebuilt:  # the Q/DQ engine only ever fell back
                if any(e.id == entry.fallback for e in engines):
                    continue
                fp32 = (entry.fallback_onnx, entry.fallback_onnx_sha256)
                deployed = EngineEntry(entry.fallback, "int8", *fp32)  # type: ignore[arg-type]
            engine = prebuilt[deployed.id]
            bundle.add(f"engines/{deployed.id}.engine", engine)
            bundle.add(f"engines/{deployed.id}.json", engine.with_suffix(".json"))
            engines.append(replace(deployed, prebuilt=f"engines/{deployed.id}.engine"))
    else:
        if "tensorrt" in device.backends and device.tensorrt.enabled:
            for entry in plan_engines(run_dir, sources, device.tensorrt.precisions, dla):
                for rel in filter(None, (entry.onnx, entry.fp16_onnx, entry.fallback_onnx)):
                    bundle.add(rel, run.inside(rel, "manifest"))
                engines.append(entry)
            if "int8" in device.tensorrt.precisions and not any(e.precision == "int8" for e in engines):
                needed = "fp32 student ONNX (export stage)" if dla else "Q/DQ int8 ONNX (qat stage)"
                warnings.append(f"{run_dir}: the manifest vouches for no {needed}: no int8 engines")
            fallbacks = any(e.fallback for e in engines)  # a failed Q/DQ build calibrates its fallback with it
            if (dla_int8(device) or fallbacks) and "calib_set" in vouched:
                bundle.add(CALIBRATION_PATH, vouched["calib_set"])
                calibration = CALIBRATION_PATH
            elif dla_int8(device):
                warnings.append(
                    f"{run.path('calib_set')}: no calibration set the manifest vouches for (export stage): "
                    "int8 on the DLA cannot be calibrated"
                )
            elif fallbacks:
                engines = [replace(e, fallback=None, fallback_onnx=None, fallback_onnx_sha256=None) for e in engines]
                warnings.append(
                    f"{run.path('calib_set')}: no calibration set the manifest vouches for (export stage): a Q/DQ "
                    "int8 build that fails on the device has no calibrated fallback"
                )
        if "onnxruntime" in device.backends:
            for art_id, path in sources.items():
                rel = run.relative(path)
                bundle.add(rel, path)
                onnx.append(OnnxEntry(art_id, rel))
    if not engines and not onnx:
        shippable_ids = ", ".join(a.id for a in catalog.ARTIFACTS if a.ships)
        raise EdgekdError(
            f"{run_dir}: nothing to benchmark on {device.name}: the manifest vouches for no ONNX file for backends "
            f"{device.backends} (expected some of {shippable_ids})"
        )
    b = device.benchmark
    settings = JobSettings(b.batch_sizes, b.warmup, b.min_runs, b.min_seconds, b.repeats, b.threads)
    bundle.set_job(_job(device, settings, onnx, engines, calibration))
    return bundle, warnings


def files_bundle(
    root: Path,
    device: DeviceConfig,
    inputs: Path,
    onnx: list[OnnxEntry],
    engines: list[EngineEntry],
    settings: JobSettings,
) -> Bundle:
    """The bundle of ONNX files given to `edgekd bench`: `root` is its output folder, laid out like a run directory
    (entry paths are relative to it), `inputs` the images they are timed on (no labels: nothing is scored)."""
    bundle = Bundle()
    _add_device_code(bundle, inputs)
    for rel in sorted({e.path for e in onnx} | {p for e in engines for p in (e.onnx, e.fp16_onnx) if p}):
        bundle.add(rel, RunDir(root).inside(rel, "bench file"))
    bundle.set_job(_job(device, settings, onnx, engines, reference="onnx_file"))
    return bundle


def _add_device_code(bundle: Bundle, val: Path) -> None:
    """edgekd/ondevice as the package `edgekd_device`, and the images the device times (with labels, for a run)."""
    package = Path(device_package.__file__).parent
    for src in sorted(package.glob("*.py")):
        bundle.add(f"{PACKAGE}/{src.name}", src)
    bundle.add(VAL_PATH, val)


def _job(
    device: DeviceConfig,
    settings: JobSettings,
    onnx: list[OnnxEntry],
    engines: list[EngineEntry],
    calibration: str | None = None,
    reference: str = catalog.REFERENCE,
) -> Job:
    return Job(
        device=JobDevice(device.name, device.kind, device.record_power_mode, device.lock_clocks),
        val=VAL_PATH,
        calibration=calibration,
        settings=settings,
        ort_providers=list(device.ort_providers),
        tensorrt=TensorRTOptions.from_options(build_options(device, "fp16")),
        onnx=onnx,
        engines=engines,
        reference=reference,
    )
