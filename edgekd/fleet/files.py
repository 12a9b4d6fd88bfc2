"""`edgekd bench FILE.onnx`: time ONNX files as they are given, on this machine (ONNX Runtime) or on a device
(TensorRT engines built there, and ONNX Runtime), with the benchmark's harness, records and ship machinery.

The output folder is laid out like a run directory (edgekd.rundir): `models/<name>.onnx` (a copy of each file in
the catalogue row of its precision, beside the fp16 twin and the Q/DQ copy made from it), `bench/val.npz` (the
inputs), `bench/<device>.json`, `tensorrt/<device>/`. Files are timed on seeded random inputs, since latency does
not depend on the values; there are no labels, so no accuracy is measured. Several files given together are
timed in one bench, in interleaved rounds. A precision that cannot run is a `skipped` record with its reason.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekd.bench.benchmark import Planned, benchmark_artifacts
from edgekd.bench.onnx_file import PRECISION_ROWS, OnnxFile, read_onnx_file
from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.fleet.bundle import build_options, files_bundle, plan_engines
from edgekd.fleet.ship import deliver
from edgekd.ondevice import catalog
from edgekd.ondevice.files import atomic_path, sha256_file, write_bytes_atomic, write_json_atomic
from edgekd.ondevice.job import EngineEntry, JobSettings, OnnxEntry
from edgekd.ondevice.measure import Settings
from edgekd.ondevice.records import ArtifactRecord, BenchDoc
from edgekd.ondevice.trt_options import validate_options
from edgekd.run_records import LOCAL
from edgekd.rundir import RunDir, check_name, load_bench

log = logging.getLogger(__name__)

REFERENCE = "onnx_file"
"""The bench file's `reference`: the given files themselves (no teacher here)."""


@dataclass
class Given:
    """A given file in the output folder: its ONNX Runtime rows (the copy of the file; the Q/DQ copy calibrated on
    given images) by catalogue id, and the fp16 twin that TensorRT >= 10 builds fp16 engines from."""

    file: OnnxFile
    rows: dict[str, Path]
    fp16_twin: Path | None = None

    @property
    def name(self) -> str:
        return self.file.name


def prepare_files(
    files: Mapping[str, Path], out: Path, calibration: np.ndarray | None = None, fp16_twins: bool = False
) -> list[Given]:
    """Check each file (name -> path; names are plain names), copy it into `out`, and make its Q/DQ int8 copy
    (`calibration` images, fp32 files) and fp16 twin (`fp16_twins`, fp32 files). Files must share one input shape."""
    run = RunDir(out)
    checked = [read_onnx_file(Path(path), check_name(name, "model file name")) for name, path in files.items()]
    if not checked:
        raise EdgekdError("edgekd bench: no ONNX file given")
    for f in checked[1:]:
        if f.shape[1:] != checked[0].shape[1:]:
            raise EdgekdError(
                f"{f.path}: takes {f.describe_shape()}, {checked[0].path} takes {checked[0].describe_shape()}; files "
                "timed together share one input shape (bench them separately)"
            )
    with run.locked("edgekd bench"):
        return [_prepare(run, f, calibration, fp16_twins) for f in checked]


def _prepare(run: RunDir, f: OnnxFile, calibration: np.ndarray | None, fp16_twins: bool) -> Given:
    own = PRECISION_ROWS[f.precision]
    for row in PRECISION_ROWS.values():  # what an earlier bench of a file of this name made
        if row != own:
            run.path(row, name=f.name).unlink(missing_ok=True)
    given = Given(f, {own: _place(f.path, run.path(own, name=f.name))})
    if calibration is not None and f.precision == "fp32":
        from edgekd.quant.static import quantize_static_onnx

        qdq = run.path("onnx_file_int8", name=f.name)
        given.rows["onnx_file_int8"] = quantize_static_onnx(
            given.rows["onnx_file"], qdq, f.input, calibration, f.fixed_batch or 32
        )
    if fp16_twins and f.precision == "fp32":
        from edgekd.export.fp16 import write_fp16_onnx

        try:
            given.fp16_twin = write_fp16_onnx(given.rows["onnx_file"], run.path("onnx_file_fp16", name=f.name))
        except EdgekdError as e:  # TensorRT 8.5 builds fp16 from the fp32 file; 10.x's build will say it lacks one
            log.warning("%s: no fp16 twin for strongly typed fp16 engines: %s", f.name, e)
    return given


def _place(src: Path, dest: Path) -> Path:
    """A copy of `src` at `dest` (atomic; kept when it already holds the same bytes)."""
    if not (dest.is_file() and sha256_file(dest) == sha256_file(src)):
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    return dest


def bench_onnx_files(
    files: Mapping[str, Path],
    out: Path,
    device: DeviceConfig | None = None,
    precisions: Sequence[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    settings: Settings | None = None,
    calibration: np.ndarray | None = None,
) -> BenchDoc:
    """Time ONNX files (name -> path) on this machine (`device` None) or on `device`, in one bench; the record is
    also written to `out`/bench/<device>.json. `out` is a folder of its own, laid out like a run (see the module
    docstring), never a run directory: its bench files would replace the run's.

    precisions: fp32, fp16, int8 (default: what each file is, int8 too when `calibration` is given; on a device,
    its tensorrt.precisions for engines). batch_sizes: default the settings' (here) or devices.yaml's (there).
    settings: how figures are taken (default: measure.Settings() here, the device's `benchmark` section there).
    calibration: NCHW images that calibrate a Q/DQ int8 copy of the fp32 files (bench.calib_images).
    """
    given = prepare_files(files, out, calibration, fp16_twins_needed([device], precisions))
    return time_files(given, out, device, precisions, batch_sizes, settings)


def fp16_twins_needed(devices: Sequence[DeviceConfig | None], precisions: Sequence[str] | None) -> bool:
    """Whether any of `devices` (None: this machine) builds fp16 engines, which TensorRT >= 10 builds from an fp16
    ONNX (prepare_files' `fp16_twins`)."""
    return any(
        d is not None and "tensorrt" in d.backends and "fp16" in (precisions or d.tensorrt.precisions) for d in devices
    )


def time_files(
    given: Sequence[Given],
    out: Path,
    device: DeviceConfig | None = None,
    precisions: Sequence[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    settings: Settings | None = None,
) -> BenchDoc:
    """The bench of files prepare_files placed in `out` (see bench_onnx_files)."""
    run = RunDir(out)
    if device is None:
        settings = settings or Settings()
        settings = settings._replace(batch_sizes=tuple(batch_sizes or settings.batch_sizes))
        planned = [p for g in given for p in _ort_rows(run, g, precisions)]
        with run.locked("edgekd bench"):
            doc = benchmark_artifacts(
                planned,
                _inputs(given, settings.batch_sizes),
                None,
                None,
                settings,
                LOCAL,
                run.root,
                out=run.bench_file(LOCAL),
                reference=REFERENCE,
            )
        return _finish(run, doc, given, None)
    return _finish(run, _on_device(run, given, device, precisions, batch_sizes, settings), given, device)


def _on_device(
    run: RunDir,
    given: Sequence[Given],
    device: DeviceConfig,
    precisions: Sequence[str] | None,
    batch_sizes: Sequence[int] | None,
    settings: Settings | None,
) -> BenchDoc:
    planned: list[Planned] = []
    onnx: list[OnnxEntry] = []
    engines: list[EngineEntry] = []
    for g in given:
        if "onnxruntime" in device.backends:
            rows = _ort_rows(run, g, precisions)
            onnx += [OnnxEntry(p.id, p.path, p.name) for p in rows if p.reason is None]
            planned += [p for p in rows if p.reason is not None]
        if "tensorrt" in device.backends and device.tensorrt.enabled:
            built, skipped = _engines(run, g, device, precisions or device.tensorrt.precisions)
            engines += built
            planned += skipped
    if not onnx and not engines:
        why = "; ".join(f"{p.name}/{p.id}: {p.reason}" for p in planned) or f"backends {device.backends}"
        raise EdgekdError(f"nothing to time on device '{device.name}': {why}")
    s = settings or device.benchmark
    sizes = list(batch_sizes or s.batch_sizes)
    timing = JobSettings(sizes, s.warmup, s.min_runs, s.min_seconds, s.repeats, s.threads)
    inputs = run.path("val_set")
    buffer = io.BytesIO()
    np.savez(buffer, images=_inputs(given, sizes))  # no labels: the device scores nothing
    write_bytes_atomic(inputs, buffer.getvalue())
    bundle = files_bundle(run.root, device, inputs, onnx, engines, timing)
    result = deliver(run, device, lambda found: (bundle, []), force=True)
    for w in result.warnings:
        log.warning("%s", w)
    doc = load_bench(result.bench_json)  # checked against what was shipped on the way in (fleet.device_results)
    doc.artifacts += [ArtifactRecord(p.id, "skipped", p.path, reason=p.reason, name=p.name) for p in planned]
    return doc


def _inputs(given: Sequence[Given], batch_sizes: Sequence[int]) -> np.ndarray:
    """Seeded random inputs for the largest batch (the same for every file and every device)."""
    shape = (max(batch_sizes), *given[0].file.shape[1:])
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _ort_rows(run: RunDir, g: Given, precisions: Sequence[str] | None) -> list[Planned]:
    """The file's ONNX Runtime rows at `precisions` (default: those it has), each to time or skipped with why."""
    wanted = precisions or [catalog.get(row).precision for row in g.rows]
    return [
        Planned(row, run.relative(run.path(row, name=g.name)), _ort_reason(g, p), g.name)
        for p in wanted
        for row in [PRECISION_ROWS[p]]
    ]


def _ort_reason(g: Given, precision: str) -> str | None:
    own = g.file.precision
    if PRECISION_ROWS[precision] in g.rows:
        return None
    if precision == "int8" and own == "fp32":
        return "the file has no QuantizeLinear nodes (not Q/DQ) and no --calib images were given to quantize it"
    if precision == "fp16" and own == "fp32":
        return (
            "the file is fp32 and ONNX Runtime times files as they are (its CPU provider has fp16 kernels for few "
            "operators); fp16 is timed as a TensorRT engine on a device (--device NAME)"
        )
    return f"the file is {own}; there is no {precision} version of it to time"


def _engines(
    run: RunDir, g: Given, device: DeviceConfig, precisions: Sequence[str]
) -> tuple[list[EngineEntry], list[Planned]]:
    """The file's engines to build on `device` at `precisions`, and those that cannot be built, with why."""
    dla = device.tensorrt.dla_core is not None
    sources = dict(g.rows, **({"onnx_file_fp16": g.fp16_twin} if g.fp16_twin else {}))
    planned = {e.precision: replace(e, name=g.name) for e in plan_engines(run.root, sources, list(precisions), dla)}
    entries, skipped = [], []
    for p in precisions:
        art_id = f"onnx_file_trt_{p}"
        problems = validate_options(build_options(device, p))
        reason = problems[0] if problems else None
        if reason is None and p not in planned:
            reason = _engine_reason(g, p, dla)
        if reason is None:
            entries.append(planned[p])
        else:
            skipped.append(Planned(art_id, catalog.path_of(art_id, device.name, g.name), reason, g.name))
    return entries, skipped


def _engine_reason(g: Given, precision: str, dla: bool) -> str:
    own = g.file.precision
    if precision == "int8" and dla:
        return (
            "int8 on the DLA is calibrated from an fp32 ONNX on the device; edgekd bench builds int8 engines from "
            "Q/DQ files only (a run's `edgekd ship` calibrates DLA int8)"
        )
    if precision == "int8":
        return _ort_reason(g, "int8") or "no Q/DQ file to build from"
    return f"the file is {own}; TensorRT {precision} engines are built from an fp32 ONNX"


def _finish(run: RunDir, doc: BenchDoc, given: Sequence[Given], device: DeviceConfig | None) -> BenchDoc:
    """The records in the files' and the catalogue's order, a note on each batch size a done record lacks, and the
    bench file rewritten."""
    order = {g.name: i for i, g in enumerate(given)}
    index = {a.id: i for i, a in enumerate(catalog.ARTIFACTS)}
    doc.artifacts.sort(key=lambda a: (order.get(a.name or "", -1), index[a.id]))
    sizes = doc.settings.get("batch_sizes") or []
    files = {g.name: g.file for g in given}
    for rec in doc.artifacts:
        missing = [b for b in sizes if rec.status == "done" and rec.latency_at(b) is None]
        if missing and rec.name in files:
            rec.note = f"not timed at batch {', '.join(map(str, missing))}: {_why_not(rec, files[rec.name], device)}"
    write_json_atomic(run.bench_file(doc.device), doc.to_dict())
    return doc


def _why_not(rec: ArtifactRecord, f: OnnxFile, device: DeviceConfig | None) -> str:
    if f.fixed_batch is not None or device is None or rec.row.runtime != "tensorrt":
        return f"the file fixes batch {f.fixed_batch}"
    lo, _, hi = build_options(device, rec.row.precision).batch_profile()
    return f"outside the engine's batch profile {lo}..{hi} (devices.yaml tensorrt min_batch/opt_batch/max_batch)"
