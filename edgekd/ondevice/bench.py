"""On-device benchmark: build TensorRT engines and/or run ONNX files in ONNX Runtime, write bench/<device>.json.

Runs from a bundle (see edgekd/fleet/bundle.py) where this folder is the package `edgekd_device`:

    PYTHONPATH=BUNDLE python3 -m edgekd_device.bench BUNDLE/job.json --out RESULTS --cache-dir CACHE

RESULTS appears at once when everything is done (built in RESULTS.tmp-<pid>, then renamed) and
mirrors the run directory: `bench/<device>.json` and `tensorrt/<device>/` (engines, sidecars,
build logs, trtexec lines, bench.log). Engines are kept under CACHE/engines by
(ONNX sha256, build options, device kind, TensorRT version), so a re-run rebuilds nothing.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import catalog, measure, trt_options
from .clocks import locked_clocks
from .probe import device_info, jetson_state
from .records import BenchDoc
from .runtime import Runtime
from .tegrastats import TegrastatsMonitor

JOB_SCHEMA = "edgekd.job/1"


class JobError(Exception):
    """The job cannot run at all (bad job file, missing validation data)."""


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_KIND = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_OPTION_TYPES = {"dla_core": (int, type(None)), "static_shapes": (bool,), "workspace_mb": (int,)}
_OPTION_TYPES.update({k: (int,) for k in ("min_batch", "opt_batch", "max_batch")})


def check_job(job: Dict[str, object], root: str) -> None:
    """Refuse a job whose names or paths could lead outside the bundle (JobError naming the field).

    Names are plain names (no separators, never `.` or `..`), paths are relative, made of plain names
    and resolve inside the bundle folder `root`, hashes are 64 hex digits, options have their types.
    """
    real_root = os.path.realpath(root)

    def fail(field: str, value: object, valid: str) -> None:
        raise JobError(f"job.json: {field} is {str(value)[:80]!r}; expected {valid}")

    def name(field: str, value: object, pattern: "re.Pattern[str]" = _NAME) -> None:
        if not isinstance(value, str) or not pattern.match(value):
            fail(field, value, "a plain name")

    def path(field: str, value: object) -> None:
        parts = value.split("/") if isinstance(value, str) else []
        if not parts or not all(_NAME.match(p) for p in parts):
            fail(field, value, "a relative path of plain names inside the bundle")
        real = os.path.realpath(os.path.join(real_root, *parts))
        if os.path.commonpath([real, real_root]) != real_root:
            fail(field, value, "a path that stays inside the bundle")

    device = job.get("device")
    if not isinstance(device, dict):
        fail("device", device, "an object with name and kind")
    name("device.name", device.get("name"))
    name("device.kind", device.get("kind"), _KIND)
    path("val", job.get("val"))
    options = job.get("tensorrt", {})
    if not isinstance(options, dict):
        fail("tensorrt", options, "an object of build options")
    for key, value in options.items():
        types = _OPTION_TYPES.get(key)
        if types is None or not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            fail("tensorrt." + str(key), value, "one of {} with its type".format(", ".join(_OPTION_TYPES)))
    for group, fields in (("onnx", ("path",)), ("engines", ("onnx", "prebuilt"))):
        entries = job.get(group, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            fail(group, entries, "a list of objects")
        for i, entry in enumerate(entries):
            where = f"{group}[{i}]"
            row = catalog.BY_ID.get(entry.get("id"))  # type: ignore[arg-type]
            runtime = "tensorrt" if group == "engines" else "onnxruntime"
            if row is None or row.runtime != runtime:
                fail(where + ".id", entry.get("id"), "a catalogue id of an artifact run by " + runtime)
            for field in fields:
                if entry.get(field) is not None or field != "prebuilt":
                    path(f"{where}.{field}", entry.get(field))
            if group == "engines":
                if entry.get("precision") not in trt_options.PRECISIONS:
                    fail(where + ".precision", entry.get("precision"), "one of " + ", ".join(trt_options.PRECISIONS))
                if not isinstance(entry.get("onnx_sha256"), str) or not _SHA256.match(entry["onnx_sha256"]):
                    fail(where + ".onnx_sha256", entry.get("onnx_sha256"), "64 lowercase hex digits")
    if job.get("calibration") is not None:  # the DLA int8 calibration set
        path("calibration", job["calibration"])
    for i, entry in enumerate(job.get("engines", [])):  # the fp16 ONNX of strongly typed fp16 builds
        if entry.get("fp16_onnx") is not None:
            path(f"engines[{i}].fp16_onnx", entry["fp16_onnx"])
            if not isinstance(entry.get("fp16_onnx_sha256"), str) or not _SHA256.match(entry["fp16_onnx_sha256"]):
                fail(f"engines[{i}].fp16_onnx_sha256", entry.get("fp16_onnx_sha256"), "64 lowercase hex digits")


def build_source(
    entry: Dict[str, object], opts: trt_options.BuildOptions, trt_version: str, calibration_sha256: Optional[str] = None
) -> Tuple[str, str]:
    """(ONNX path, engine-cache source hash) of an engine entry built with `opts` on TensorRT `trt_version`.

    A strongly typed fp16 build (TensorRT >= 10) takes the entry's fp16 ONNX when it has one; a calibrated
    build (int8 on the DLA) folds the calibration set's hash into the key (trt_options.calibrated_source).
    The host's engine cache keys engines the same way, so `--engines-only` finds what devices built.
    """
    plan = trt_options.build_plan(opts, trt_version)
    onnx, sha = str(entry["onnx"]), str(entry["onnx_sha256"])
    if plan.source == "fp16" and entry.get("fp16_onnx"):
        onnx, sha = str(entry["fp16_onnx"]), str(entry["fp16_onnx_sha256"])
    return onnx, trt_options.calibrated_source(sha, calibration_sha256 if plan.calibrate else None)


class Bench:
    """One job: its settings, the validation batch, and where results go."""

    def __init__(self, job_path: str, out_dir: str, cache_dir: str) -> None:
        with open(job_path) as f:
            self.job = json.load(f)
        if self.job.get("schema") != JOB_SCHEMA:
            raise JobError("{}: schema {!r}, expected {!r}".format(job_path, self.job.get("schema"), JOB_SCHEMA))
        self.root = os.path.dirname(os.path.abspath(job_path))
        check_job(self.job, self.root)
        self.device = self.job["device"]
        self.settings = self.job["settings"]
        self.cache_dir = cache_dir
        self.out_dir = out_dir
        val_path = os.path.join(self.root, self.job["val"])
        if not os.path.exists(val_path):
            raise JobError(f"{val_path}: validation data not found")
        with np.load(val_path, allow_pickle=False) as val:
            self.images = val["images"].astype(np.float32)
            self.labels = val["labels"].astype(np.int64)
            self.teacher_logits = val["teacher_logits"] if "teacher_logits" in val.files else None
        self.engine_dir = os.path.join(out_dir, "tensorrt", self.device["name"])
        os.makedirs(self.engine_dir, exist_ok=True)
        os.makedirs(os.path.join(out_dir, "bench"), exist_ok=True)
        self.log_file = open(os.path.join(self.engine_dir, "bench.log"), "w")  # noqa: SIM115 -- closed at the end of run()

    def log(self, msg: str) -> None:
        print(msg, flush=True)
        self.log_file.write(msg + "\n")
        self.log_file.flush()

    def open_onnx(self, entry: Dict[str, object]) -> Runtime:
        """An (unloaded) ONNX Runtime runtime for a shipped ONNX file (onnxruntime is imported here, only when a
        job names ONNX files: a TensorRT-only device has no onnxruntime)."""
        from .ort_runtime import OrtRuntime

        providers = self.job.get("ort_providers", ["CPUExecutionProvider"])
        return OrtRuntime(os.path.join(self.root, entry["path"]), providers, self.settings.get("threads"))

    def calibration_set(self) -> Optional[str]:
        """The bundle's calibration images for DLA int8 (job `calibration`, checked by check_job), or None."""
        rel = self.job.get("calibration")
        path = os.path.join(self.root, rel) if rel else None
        return path if path and os.path.isfile(path) else None

    def engine_files(self, entry: Dict[str, object], opts: trt_options.BuildOptions) -> str:
        """The engine for `entry` in the results folder: prebuilt, from the engine cache, or built now."""
        import tensorrt as trt

        from .trt_build import build_engine

        target = os.path.join(self.engine_dir, entry["id"])
        calibration = None
        if trt_options.build_plan(opts, trt.__version__).calibrate and not entry.get("prebuilt"):
            calibration = self.calibration_set()
        if entry.get("prebuilt"):
            source = os.path.join(self.root, os.path.splitext(entry["prebuilt"])[0])
        else:
            digest = trt_options.sha256_file(calibration) if calibration else None
            onnx, source_key = build_source(entry, opts, trt.__version__, digest)
            key = trt_options.engine_key(source_key, opts, self.device["kind"], trt.__version__)
            source = os.path.join(self.cache_dir, "engines", key)
            if os.path.exists(source + ".engine") and os.path.exists(source + ".json"):
                self.log("{}: engine from the cache ({})".format(entry["id"], key))
            else:
                self.log("{}: building {} engine from {}".format(entry["id"], opts.precision, onnx))
                os.makedirs(os.path.dirname(source), exist_ok=True)
                build_engine(
                    os.path.join(self.root, onnx),
                    source + ".engine",
                    opts,
                    self.device["kind"],
                    self.cache_dir,
                    shown_paths=(onnx, "tensorrt/{}/{}.engine".format(self.device["name"], entry["id"])),
                    calibration_images=calibration,
                )
        for suffix in (".engine", ".json", ".build.log", ".trtexec.txt", ".layers.json", ".calib.cache"):
            if os.path.exists(source + suffix):
                shutil.copyfile(source + suffix, target + suffix)
        return target + ".engine"

    def open_engine(self, entry: Dict[str, object]) -> Runtime:
        """An (unloaded) TensorRT runtime for `entry`'s engine, built or taken from the cache first."""
        opts = trt_options.BuildOptions(precision=entry["precision"], **self.job["tensorrt"])
        path = self.engine_files(entry, opts)
        from .trt_runtime import TrtRunner

        return TrtRunner(path)

    def subjects(self) -> List[measure.Subject]:
        """What to time: the shipped ONNX files in ONNX Runtime, then the engines (ids are catalogue ids)."""
        out = []
        for entry in self.job.get("onnx", []):
            out.append(measure.Subject(entry["id"], entry["path"], lambda e=entry: self.open_onnx(e)))
        for entry in self.job.get("engines", []):
            rel = catalog.path_of(entry["id"], self.device["name"])
            out.append(measure.Subject(entry["id"], rel, lambda e=entry: self.open_engine(e)))
        return out

    def run(self) -> Dict[str, object]:
        """Time every artifact (interleaved rounds, see measure.py) with the Jetson's state before and after."""
        settings = measure.Settings.from_dict(self.settings)
        record_mode = self.device.get("record_power_mode", True)
        subjects = self.subjects()
        jetson = {"before": jetson_state(record_mode)}  # type: Dict[str, object]
        with locked_clocks(bool(self.device.get("lock_clocks")), self.log) as lock:
            jetson["during"] = jetson_state(False) if lock["locked_by_bench"] else None
            records, conditions = measure.bench_artifacts(
                subjects,
                self.images,
                self.labels,
                self.teacher_logits,
                settings,
                power=TegrastatsMonitor.if_available(),
                log=self.log,
            )
        jetson["after"] = jetson_state(False)
        jetson["lock_clocks"] = lock
        conditions["jetson"] = jetson
        for rec in records:
            full = os.path.join(self.out_dir if rec.row.runtime == "tensorrt" else self.root, rec.path)
            if os.path.isfile(full):
                rec.sha256, rec.size_bytes = trt_options.sha256_file(full), os.path.getsize(full)
            self.log("{}: {}{}".format(rec.id, rec.status, f" ({rec.reason})" if rec.reason else ""))
        doc = BenchDoc(
            device=self.device["name"],
            kind=self.device["kind"],
            created=datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
            reference=catalog.REFERENCE,
            system=device_info(self.device["name"], self.device["kind"], record_mode),
            settings=settings.as_dict(),
            conditions=conditions,
            artifacts=records,
        )
        measure.write_json_atomic(os.path.join(self.out_dir, "bench", self.device["name"] + ".json"), doc.to_dict())
        self.log_file.close()
        return doc.to_dict()


def _remove_abandoned(out: str) -> None:
    """Delete `out.tmp-<pid>` folders of runs that died (their process is gone)."""
    folder, prefix = os.path.dirname(out), os.path.basename(out) + ".tmp-"
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        pid = name[len(prefix) :]
        if name.startswith(prefix) and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            except PermissionError:  # alive, another user's
                pass


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m edgekd_device.bench", description=__doc__.splitlines()[0])
    parser.add_argument("job", help="job.json written by the host")
    parser.add_argument("--out", required=True, help="results folder; appears complete or not at all")
    parser.add_argument("--cache-dir", required=True, help="engine and timing caches, kept between runs")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    _remove_abandoned(out)
    if os.path.isdir(out):
        print(f"results already complete: {out}", flush=True)
        return 0
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        Bench(args.job, tmp, os.path.abspath(args.cache_dir)).run()
        try:
            os.rename(tmp, out)
        except OSError:
            if not os.path.isdir(out):  # else a concurrent run finished first: keep its results
                raise
    except JobError as e:
        print(f"edgekd-device: error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
