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
import shutil
import sys
from typing import Dict, List, Optional

import numpy as np

from . import catalog, measure, trt_options
from .clocks import locked_clocks
from .files import sha256_file, write_json_atomic
from .job import EngineEntry, Job, JobError, OnnxEntry
from .probe import device_info, jetson_state
from .records import BenchDoc
from .runtime import Runtime
from .tegrastats import TegrastatsMonitor
from .text import one_line


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
            self.labels = val["labels"].astype(np.int64) if "labels" in val.files else None  # given files: none
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
        """The bundle's calibration images for calibrated int8 (job `calibration`), or None."""
        rel = self.job.calibration
        path = os.path.join(self.root, rel) if rel else None
        return path if path and os.path.isfile(path) else None

    def built(
        self, rel: str, onnx: str, source_key: str, opts: trt_options.BuildOptions, calibration: Optional[str]
    ) -> str:
        """The engine of results path `rel` in the results folder, from the engine cache or built now from the
        bundle's `onnx`."""
        import tensorrt as trt

        from .trt_build import build_engine

        stem = _stem(rel)
        key = trt_options.engine_key(source_key, opts, self.device.kind, trt.__version__)
        source = os.path.join(self.cache_dir, "engines", key)
        if os.path.exists(source + ".engine") and os.path.exists(source + ".json"):
            self.log(f"{stem}: engine from the cache ({key})")
        else:
            self.log(f"{stem}: building {opts.precision} engine from {onnx}")
            os.makedirs(os.path.dirname(source), exist_ok=True)
            try:
                build_engine(
                    os.path.join(self.root, onnx),
                    source + ".engine",
                    opts,
                    self.device.kind,
                    self.cache_dir,
                    shown_paths=(onnx, rel),
                    calibration_images=calibration,
                )
            except Exception:  # the results keep TensorRT's log of the failed build
                if os.path.exists(source + ".build.log"):
                    shutil.copyfile(source + ".build.log", os.path.join(self.engine_dir, stem + ".build.log"))
                raise
        return self._copy(source, stem)

    def _copy(self, source: str, stem: str) -> str:
        target = os.path.join(self.engine_dir, stem)
        for suffix in ENGINE_FILES:
            if os.path.exists(source + suffix):
                shutil.copyfile(source + suffix, target + suffix)
        return target + ".engine"

    def engine_files(self, entry: EngineEntry, rel: str, opts: trt_options.BuildOptions) -> str:
        """The engine for `entry` at results path `rel`: prebuilt, from the engine cache, or built now."""
        import tensorrt as trt

        if entry.prebuilt:
            return self._copy(os.path.join(self.root, os.path.splitext(entry.prebuilt)[0]), _stem(rel))
        calibration = self.calibration_set() if trt_options.build_plan(opts, trt.__version__).calibrate else None
        onnx, source_key = entry.build_source(opts, trt.__version__, sha256_file(calibration) if calibration else None)
        return self.built(rel, onnx, source_key, opts, calibration)

    def fallback_engine(
        self, entry: EngineEntry, opts: trt_options.BuildOptions, failures: List[Dict[str, str]]
    ) -> str:
        """The calibrated int8 engine `entry.fallback` from the fp32 ONNX and the calibration set, after `entry`'s
        Q/DQ build failed; its sidecar in the results says so (`fallback`: what it replaces, and why)."""
        import tensorrt as trt

        from .trt_build import BuildError

        calibrated = trt_options.BuildOptions.from_dict(dict(opts.as_dict(), calibrated=True))
        refused = trt_options.build_plan(calibrated, trt.__version__).refused
        if refused:
            raise BuildError(refused)
        calibration = self.calibration_set()
        if calibration is None:
            raise BuildError("the job ships no calibration set to calibrate int8 from the fp32 ONNX")
        onnx, source_key = entry.build_source(calibrated, trt.__version__, sha256_file(calibration))
        path = self.built(
            catalog.path_of(str(entry.fallback), self.device.name), onnx, source_key, calibrated, calibration
        )
        sidecar_path = os.path.splitext(path)[0] + ".json"
        with open(sidecar_path) as f:
            sidecar = json.load(f)
        sidecar["fallback"] = failures  # the results' copy only: the cached engine may stand in for other engines
        # (trt_options.fallback_note turns it into the bench record's note)
        write_json_atomic(sidecar_path, sidecar)
        return path

    def prepare_engines(self) -> List[measure.Subject]:
        """Every engine of the job built (or taken from the engine cache) before anything is timed, as subjects.

        A Q/DQ int8 build that fails, when the job names a fallback, is followed by the calibrated int8 engine of the
        same model (`fallback_engine`): the failed engine keeps its row, failed with TensorRT's reason and the
        fallback named, and the fallback gets its own row, measured like any engine, whose note (from its sidecar)
        says why it exists.
        """
        subjects = []  # type: List[measure.Subject]
        fallbacks = {}  # type: Dict[str, tuple]  # fallback id -> (entry, options, failures)
        for entry in self.job.engines:
            rel = catalog.path_of(entry.id, self.device.name, entry.name or "")
            opts = self.job.tensorrt.build_options(entry.precision)
            try:
                path = self.engine_files(entry, rel, opts)
            except Exception as e:  # one engine's failure keeps the others (the record says why)
                error = e
                # a BuildError first: then tensorrt imported, and _qdq_build can ask its version
                if entry.fallback and not entry.prebuilt and _is_build_error(e) and _qdq_build(opts):
                    failure = trt_options.fallback_failure(entry.id, entry.onnx, one_line(e))
                    fallbacks.setdefault(entry.fallback, (entry, opts, []))[2].append(failure)
                    error = RuntimeError(
                        f"{one_line(e)}; fell back to {entry.fallback} (int8 calibrated from {entry.fallback_onnx})"
                    )
                self.log(f"{_stem(rel)}: build failed: {one_line(error)}")
                subjects.append(measure.Subject(entry.id, rel, lambda err=error: _raise(err), entry.name))
                continue
            subjects.append(measure.Subject(entry.id, rel, lambda p=path: _trt_runner(p), entry.name))
        for fb_id, (entry, opts, failures) in fallbacks.items():
            rel = catalog.path_of(fb_id, self.device.name)
            try:
                path = self.fallback_engine(entry, opts, failures)
            except Exception as e:
                note = trt_options.fallback_note({"fallback": failures})
                error = RuntimeError(f"{note}; the fallback failed too: {one_line(e)}")
                self.log(f"{fb_id}: build failed: {one_line(error)}")
                subjects.append(measure.Subject(fb_id, rel, lambda err=error: _raise(err)))
                continue
            subjects.append(measure.Subject(fb_id, rel, lambda p=path: _trt_runner(p)))
        return subjects

    def subjects(self) -> List[measure.Subject]:
        """What to time: the shipped ONNX files in ONNX Runtime, then the engines (ids are catalogue ids)."""
        out = []
        for onnx in self.job.onnx:
            out.append(measure.Subject(onnx.id, onnx.path, lambda e=onnx: self.open_onnx(e), onnx.name))
        return out + (self.prepare_engines() if self.job.engines else [])

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
                inspect=trt_options.note_fallback,
                log=self.log,
            )
        jetson["after"] = jetson_state(False)
        jetson["lock_clocks"] = lock
        conditions["jetson"] = jetson
        for rec in records:
            full = os.path.join(self.out_dir if rec.row.runtime == "tensorrt" else self.root, rec.path)
            if os.path.isfile(full):
                rec.sha256, rec.size_bytes = sha256_file(full), os.path.getsize(full)
            self.log("{}: {}{}".format(rec.key, rec.status, f" ({rec.reason})" if rec.reason else ""))
        doc = BenchDoc(
            device=self.device.name,
            kind=self.device.kind,
            created=datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
            reference=self.job.reference,
            system=device_info(self.device.name, self.device.kind, record_mode),
            settings=settings.as_dict(),
            conditions=conditions,
            artifacts=records,
        )
        measure.write_json_atomic(os.path.join(self.out_dir, "bench", self.device.name + ".json"), doc.to_dict())
        self.log_file.close()
        return doc.to_dict()


ENGINE_FILES = (".engine", ".json", ".build.log", ".trtexec.txt", ".layers.json", ".calib.cache")
"""What a build leaves beside `<stem>.engine` (trt_build), copied from the engine cache into the results."""


def _stem(rel: str) -> str:
    """`tensorrt/<device>/student_trt_fp16.engine` -> `student_trt_fp16`: the name of an engine's files."""
    return os.path.splitext(os.path.basename(rel))[0]


def _qdq_build(opts: trt_options.BuildOptions) -> bool:
    import tensorrt as trt

    return trt_options.build_plan(opts, trt.__version__).source == "qdq"


def _is_build_error(error: Exception) -> bool:
    """Whether `error` is trt_build's BuildError (TensorRT refused or failed the build), without importing TensorRT."""
    module = sys.modules.get(f"{__package__}.trt_build")  # __name__ is __main__ under -m
    return module is not None and isinstance(error, module.BuildError)


def _raise(error: Exception) -> Runtime:
    raise error


def _trt_runner(path: str) -> Runtime:
    from .trt_runtime import TrtRunner

    return TrtRunner(path)


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
