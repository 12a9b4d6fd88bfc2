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
import os
import shutil
import sys
from typing import Dict, List, Optional

import numpy as np

from . import catalog, measure, trt_options
from .clocks import locked_clocks
from .files import sha256_file
from .job import EngineEntry, Job, JobError, OnnxEntry
from .probe import device_info, jetson_state
from .records import BenchDoc
from .runtime import Runtime
from .tegrastats import TegrastatsMonitor


class Bench:
    """One job: its settings, the validation batch, and where results go."""

    def __init__(self, job_path: str, out_dir: str, cache_dir: str) -> None:
        self.job = Job.read(job_path)  # every name and path checked (JobError naming the field)
        self.root = os.path.dirname(os.path.abspath(job_path))
        self.device = self.job.device
        self.cache_dir = cache_dir
        self.out_dir = out_dir
        val_path = os.path.join(self.root, self.job.val)
        if not os.path.exists(val_path):
            raise JobError(f"{val_path}: validation data not found")
        with np.load(val_path, allow_pickle=False) as val:
            self.images = val["images"].astype(np.float32)
            self.labels = val["labels"].astype(np.int64)
            self.teacher_logits = val["teacher_logits"] if "teacher_logits" in val.files else None
        self.engine_dir = os.path.join(out_dir, "tensorrt", self.device.name)
        os.makedirs(self.engine_dir, exist_ok=True)
        os.makedirs(os.path.join(out_dir, "bench"), exist_ok=True)
        self.log_file = open(os.path.join(self.engine_dir, "bench.log"), "w")  # noqa: SIM115 -- closed at the end of run()

    def log(self, msg: str) -> None:
        print(msg, flush=True)
        self.log_file.write(msg + "\n")
        self.log_file.flush()

    def open_onnx(self, entry: OnnxEntry) -> Runtime:
        """An (unloaded) ONNX Runtime runtime for a shipped ONNX file (onnxruntime is imported here, only when a
        job names ONNX files: a TensorRT-only device has no onnxruntime)."""
        from .ort_runtime import OrtRuntime

        return OrtRuntime(os.path.join(self.root, entry.path), self.job.ort_providers, self.job.settings.threads)

    def calibration_set(self) -> Optional[str]:
        """The bundle's calibration images for DLA int8 (job `calibration`), or None."""
        rel = self.job.calibration
        path = os.path.join(self.root, rel) if rel else None
        return path if path and os.path.isfile(path) else None

    def engine_files(self, entry: EngineEntry, opts: trt_options.BuildOptions) -> str:
        """The engine for `entry` in the results folder: prebuilt, from the engine cache, or built now."""
        import tensorrt as trt

        from .trt_build import build_engine

        target = os.path.join(self.engine_dir, entry.id)
        calibration = None
        if trt_options.build_plan(opts, trt.__version__).calibrate and not entry.prebuilt:
            calibration = self.calibration_set()
        if entry.prebuilt:
            source = os.path.join(self.root, os.path.splitext(entry.prebuilt)[0])
        else:
            digest = sha256_file(calibration) if calibration else None
            onnx, source_key = entry.build_source(opts, trt.__version__, digest)
            key = trt_options.engine_key(source_key, opts, self.device.kind, trt.__version__)
            source = os.path.join(self.cache_dir, "engines", key)
            if os.path.exists(source + ".engine") and os.path.exists(source + ".json"):
                self.log(f"{entry.id}: engine from the cache ({key})")
            else:
                self.log(f"{entry.id}: building {opts.precision} engine from {onnx}")
                os.makedirs(os.path.dirname(source), exist_ok=True)
                build_engine(
                    os.path.join(self.root, onnx),
                    source + ".engine",
                    opts,
                    self.device.kind,
                    self.cache_dir,
                    shown_paths=(onnx, catalog.path_of(entry.id, self.device.name)),
                    calibration_images=calibration,
                )
        for suffix in (".engine", ".json", ".build.log", ".trtexec.txt", ".layers.json", ".calib.cache"):
            if os.path.exists(source + suffix):
                shutil.copyfile(source + suffix, target + suffix)
        return target + ".engine"

    def open_engine(self, entry: EngineEntry) -> Runtime:
        """An (unloaded) TensorRT runtime for `entry`'s engine, built or taken from the cache first."""
        opts = self.job.tensorrt.build_options(entry.precision)
        path = self.engine_files(entry, opts)
        from .trt_runtime import TrtRunner

        return TrtRunner(path)

    def subjects(self) -> List[measure.Subject]:
        """What to time: the shipped ONNX files in ONNX Runtime, then the engines (ids are catalogue ids)."""
        out = []
        for onnx in self.job.onnx:
            out.append(measure.Subject(onnx.id, onnx.path, lambda e=onnx: self.open_onnx(e)))
        for engine in self.job.engines:
            rel = catalog.path_of(engine.id, self.device.name)
            out.append(measure.Subject(engine.id, rel, lambda e=engine: self.open_engine(e)))
        return out

    def run(self) -> Dict[str, object]:
        """Time every artifact (interleaved rounds, see measure.py) with the Jetson's state before and after."""
        settings = measure.Settings.from_dict(self.job.settings.to_dict())
        record_mode = self.device.record_power_mode
        subjects = self.subjects()
        jetson = {"before": jetson_state(record_mode)}  # type: Dict[str, object]
        with locked_clocks(self.device.lock_clocks, self.log) as lock:
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
                rec.sha256, rec.size_bytes = sha256_file(full), os.path.getsize(full)
            self.log("{}: {}{}".format(rec.id, rec.status, f" ({rec.reason})" if rec.reason else ""))
        doc = BenchDoc(
            device=self.device.name,
            kind=self.device.kind,
            created=datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
            reference=catalog.REFERENCE,
            system=device_info(self.device.name, self.device.kind, record_mode),
            settings=settings.as_dict(),
            conditions=conditions,
            artifacts=records,
        )
        measure.write_json_atomic(os.path.join(self.out_dir, "bench", self.device.name + ".json"), doc.to_dict())
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
