"""The device job: what the host asks a device to build and measure (job.json in a bundle, schema edgekd.job/1).

Python 3.8, stdlib only. The host builds a `Job` (edgekd/fleet/bundle.py) and writes `to_dict()`; the device
reads it back with `Job.from_dict(doc, root)`, the one reader. job.json crosses a boundary, so every field is
checked before any of it becomes a path: names are plain names (no separators, never `.` or `..`), paths are
relative, made of plain names, and resolve (symlinks followed) inside the bundle folder `root`, ids are catalogue
ids of the runtime that runs them, hashes are 64 hex digits, options and settings have their types. Anything
else raises JobError, one line naming the field.
"""

import json
import math
import os
import re
import reprlib
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from . import catalog, trt_options
from .names import is_plain_name

JOB_SCHEMA = "edgekd.job/1"
JOB_FILE = "job.json"
MAX_JOB_BYTES = 4 << 20  # a job names a few dozen files; anything this big was not written by the host
MAX_INT = 2**31 - 1  # counts, batch sizes and MiB: what TensorRT and numpy take as a C int

_KIND = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")  # devices.yaml's kind pattern, bounded
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80


class JobError(Exception):
    """The job cannot run at all (bad job file, missing validation data); the message names the field."""


def _fail(where: str, value: Any, valid: str) -> "JobError":
    return JobError(f"{JOB_FILE}: {where} is {_SHOW.repr(value)}; expected {valid}")


def _obj(doc: Any, where: str, keys: tuple, required: tuple = ()) -> Dict[str, Any]:
    """`doc` as an object holding only `keys` (those in `required` present)."""
    if not isinstance(doc, dict):
        raise _fail(where or "the job", doc, "an object with " + ", ".join(required or keys))
    for key in doc:
        if key not in keys:
            field_name = f"{where}.{key}" if where else str(key)
            raise _fail(field_name, doc[key], "no field of that name (fields: {})".format(", ".join(keys)))
    for key in required:
        if key not in doc:
            raise JobError("{}: {} is missing".format(JOB_FILE, f"{where}.{key}" if where else key))
    return doc


def _name(value: Any, where: str) -> str:
    if not is_plain_name(value):
        raise _fail(where, value, "a plain name")
    return value


def _kind(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _KIND.fullmatch(value):
        raise _fail(where, value, "a device kind (lowercase letters, digits, '_', '.', '-')")
    return value


def _path(value: Any, where: str, root: Optional[str]) -> str:
    """A relative path of plain names that resolves inside `root` (not checked when root is None: the host)."""
    parts = value.split("/") if isinstance(value, str) else []
    if not parts or not all(is_plain_name(p) for p in parts):
        raise _fail(where, value, "a relative path of plain names inside the bundle")
    if root is not None:
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, *parts))
        if os.path.commonpath([real, real_root]) != real_root:
            raise _fail(where, value, "a path that stays inside the bundle")
    return value


def _sha256(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise _fail(where, value, "64 lowercase hex digits")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, value, "true or false")
    return value


def _int(value: Any, where: str, low: int = 0, optional: bool = False) -> Optional[int]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_INT:
        raise _fail(where, value, "an integer from {} to {}{}".format(low, MAX_INT, " or null" if optional else ""))
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _fail(where, value, "a finite number >= 0")
    return value


def _catalogue_id(value: Any, where: str, runtime: str) -> str:
    row = catalog.BY_ID.get(value) if isinstance(value, str) else None
    if row is None or row.runtime != runtime:
        raise _fail(where, value, "a catalogue id of an artifact run by " + runtime)
    return value


def _file_name(doc: Dict[str, Any], art_id: str, where: str) -> Optional[str]:
    """The entry's `name`: the plain name of its ONNX file for the rows of a given file (catalog.per_file), else
    absent."""
    value = doc.get("name")
    if catalog.per_file(art_id):
        return _name(value, where + ".name")
    if value is not None:
        raise _fail(where + ".name", value, f"no name: {art_id} is a run's artifact, not a given file's")
    return None


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise _fail(where, value, "a list")
    return value


@dataclass(frozen=True)
class JobDevice:
    """The device the job runs on: its name (bench/<name>.json, tensorrt/<name>/), kind (engine cache key) and
    what the bench records or changes on it."""

    name: str
    kind: str
    record_power_mode: bool = True  # record `nvpmodel -q` in the bench file
    lock_clocks: bool = False  # run jetson_clocks for the duration of the bench

    @classmethod
    def from_dict(cls, doc: Any, where: str = "device") -> "JobDevice":
        keys = tuple(f.name for f in fields(cls))
        _obj(doc, where, keys, ("name", "kind"))
        return cls(
            name=_name(doc["name"], where + ".name"),
            kind=_kind(doc["kind"], where + ".kind"),
            record_power_mode=_bool(doc.get("record_power_mode", True), where + ".record_power_mode"),
            lock_clocks=_bool(doc.get("lock_clocks", False), where + ".lock_clocks"),
        )


@dataclass(frozen=True)
class JobSettings:
    """How figures are taken (measure.Settings); a field left None takes measure.Settings' default."""

    batch_sizes: Optional[List[int]] = None
    warmup: Optional[int] = None
    min_runs: Optional[int] = None
    min_seconds: Optional[float] = None
    repeats: Optional[int] = None
    threads: Optional[int] = None  # CPU threads for CPU runtimes; None: every core

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "settings") -> "JobSettings":
        _obj(doc, where, tuple(f.name for f in fields(cls)))
        sizes = doc.get("batch_sizes")
        if sizes is not None:
            if not _list(sizes, where + ".batch_sizes"):
                raise _fail(where + ".batch_sizes", sizes, "a list of at least one batch size")
            sizes = [_int(b, f"{where}.batch_sizes[{i}]", 1) for i, b in enumerate(sizes)]
        seconds = doc.get("min_seconds")
        return cls(
            batch_sizes=sizes,
            warmup=_int(doc.get("warmup"), where + ".warmup", 0, optional=True),
            min_runs=_int(doc.get("min_runs"), where + ".min_runs", 1, optional=True),
            min_seconds=None if seconds is None else _number(seconds, where + ".min_seconds"),
            repeats=_int(doc.get("repeats"), where + ".repeats", 1, optional=True),
            threads=_int(doc.get("threads"), where + ".threads", 1, optional=True),
        )


_BUILD_DEFAULTS = trt_options.BuildOptions().as_dict()


@dataclass(frozen=True)
class TensorRTOptions:
    """The build options every engine of the job shares (trt_options.BuildOptions less the precision, which is
    each engine's); a field the job leaves out takes BuildOptions' default."""

    dla_core: Optional[int] = _BUILD_DEFAULTS["dla_core"]  # type: ignore[assignment]
    static_shapes: bool = _BUILD_DEFAULTS["static_shapes"]  # type: ignore[assignment]
    workspace_mb: int = _BUILD_DEFAULTS["workspace_mb"]  # type: ignore[assignment]
    min_batch: int = _BUILD_DEFAULTS["min_batch"]  # type: ignore[assignment]
    opt_batch: int = _BUILD_DEFAULTS["opt_batch"]  # type: ignore[assignment]
    max_batch: int = _BUILD_DEFAULTS["max_batch"]  # type: ignore[assignment]

    def build_options(self, precision: str) -> trt_options.BuildOptions:
        return trt_options.BuildOptions(precision, **self.to_dict())  # type: ignore[arg-type]

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_options(cls, opts: trt_options.BuildOptions) -> "TensorRTOptions":
        return cls(**{f.name: getattr(opts, f.name) for f in fields(cls)})

    @classmethod
    def from_dict(cls, doc: Any, where: str = "tensorrt") -> "TensorRTOptions":
        _obj(doc, where, tuple(f.name for f in fields(cls)))
        got = dict(cls().to_dict(), **doc)
        return cls(
            dla_core=_int(got["dla_core"], where + ".dla_core", 0, optional=True),
            static_shapes=_bool(got["static_shapes"], where + ".static_shapes"),
            workspace_mb=_int(got["workspace_mb"], where + ".workspace_mb", 1),  # type: ignore[arg-type]
            min_batch=_int(got["min_batch"], where + ".min_batch", 1),  # type: ignore[arg-type]
            opt_batch=_int(got["opt_batch"], where + ".opt_batch", 1),  # type: ignore[arg-type]
            max_batch=_int(got["max_batch"], where + ".max_batch", 1),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class OnnxEntry:
    """An ONNX file the device times in ONNX Runtime: a catalogue id and its bundle path (and for the rows of a file
    given to `edgekd bench`, that file's name)."""

    id: str
    path: str
    name: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        doc = {"id": self.id, "path": self.path}
        if self.name is not None:
            doc["name"] = self.name
        return doc

    @classmethod
    def from_dict(cls, doc: Any, where: str, root: Optional[str] = None) -> "OnnxEntry":
        _obj(doc, where, ("id", "path", "name"), ("id", "path"))
        art_id = _catalogue_id(doc["id"], where + ".id", "onnxruntime")
        return cls(art_id, _path(doc["path"], where + ".path", root), _file_name(doc, art_id, where))


@dataclass(frozen=True)
class EngineEntry:
    """One engine to build (or deploy): a catalogue engine row and the ONNX file it is built from.

    `fp16_onnx` is the fp16 ONNX a strongly typed fp16 build takes (TensorRT >= 10: see build_source);
    `prebuilt` the bundle path of an engine built earlier (--engines-only), then nothing is built;
    `fallback` (a Q/DQ int8 engine only) the catalogue id of the calibrated int8 engine built from the same model's
    fp32 ONNX `fallback_onnx` and the job's calibration set when this engine's Q/DQ build fails (TensorRT 8.5/8.6
    on a Xavier fail some Q/DQ models that 10.x builds: NVIDIA/TensorRT #4527); `name` the ONNX file's name for the
    engines of a file given to `edgekd bench`.
    """

    id: str  # catalogue id, e.g. student_trt_fp16, student_qat_trt_int8
    precision: str
    onnx: str  # run-dir (and bundle) relative ONNX path
    onnx_sha256: str
    fp16_onnx: Optional[str] = None
    fp16_onnx_sha256: Optional[str] = None
    prebuilt: Optional[str] = None
    fallback: Optional[str] = None
    fallback_onnx: Optional[str] = None
    fallback_onnx_sha256: Optional[str] = None
    name: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        doc = {
            "id": self.id,
            "precision": self.precision,
            "onnx": self.onnx,
            "onnx_sha256": self.onnx_sha256,
            "prebuilt": self.prebuilt,
        }  # type: Dict[str, Any]
        if self.fp16_onnx:
            doc.update(fp16_onnx=self.fp16_onnx, fp16_onnx_sha256=self.fp16_onnx_sha256)
        if self.fallback:
            doc.update(
                fallback=self.fallback, fallback_onnx=self.fallback_onnx, fallback_onnx_sha256=self.fallback_onnx_sha256
            )
        if self.name is not None:
            doc["name"] = self.name
        return doc

    @classmethod
    def from_dict(cls, doc: Any, where: str, root: Optional[str] = None) -> "EngineEntry":
        _obj(doc, where, tuple(f.name for f in fields(cls)), ("id", "precision", "onnx", "onnx_sha256"))
        precision = doc["precision"]
        if not isinstance(precision, str) or precision not in catalog.ENGINE_PRECISIONS:
            raise _fail(where + ".precision", precision, "one of " + ", ".join(catalog.ENGINE_PRECISIONS))
        art_id = _catalogue_id(doc["id"], where + ".id", "tensorrt")
        fp16_onnx = doc.get("fp16_onnx")
        prebuilt = doc.get("prebuilt")
        fallback = doc.get("fallback")
        if fallback is not None:
            row = catalog.BY_ID.get(fallback) if isinstance(fallback, str) else None
            source = catalog.BY_ID.get(row.source or "") if row is not None else None
            if precision != "int8" or row is None or row.runtime != "tensorrt" or row.precision != "int8":
                raise _fail(where + ".fallback", fallback, "null, or for an int8 engine a calibrated int8 engine id")
            if source is None or source.precision != "fp32":
                raise _fail(where + ".fallback", fallback, "an int8 engine calibrated from an fp32 ONNX")
        return cls(
            id=art_id,
            precision=precision,
            onnx=_path(doc["onnx"], where + ".onnx", root),
            onnx_sha256=_sha256(doc["onnx_sha256"], where + ".onnx_sha256"),
            fp16_onnx=None if fp16_onnx is None else _path(fp16_onnx, where + ".fp16_onnx", root),
            fp16_onnx_sha256=None
            if fp16_onnx is None
            else _sha256(doc.get("fp16_onnx_sha256"), where + ".fp16_onnx_sha256"),
            prebuilt=None if prebuilt is None else _path(prebuilt, where + ".prebuilt", root),
            fallback=fallback,
            fallback_onnx=None if fallback is None else _path(doc.get("fallback_onnx"), where + ".fallback_onnx", root),
            fallback_onnx_sha256=None
            if fallback is None
            else _sha256(doc.get("fallback_onnx_sha256"), where + ".fallback_onnx_sha256"),
            name=_file_name(doc, art_id, where),
        )

    def build_source(
        self, opts: trt_options.BuildOptions, trt_version: str, calibration_sha256: Optional[str] = None
    ) -> Tuple[str, str]:
        """(ONNX path, engine-cache source hash) of this engine built with `opts` on TensorRT `trt_version`.

        A strongly typed fp16 build (TensorRT >= 10) takes the fp16 ONNX when the entry has one; a calibrated
        build (int8 on the DLA) folds the calibration set's hash into the key (trt_options.calibrated_source).
        The host's engine cache keys engines the same way, so `--engines-only` finds what devices built.
        """
        plan = trt_options.build_plan(opts, trt_version)
        onnx, sha = self.onnx, self.onnx_sha256
        if plan.source == "fp16" and self.fp16_onnx and self.fp16_onnx_sha256:
            onnx, sha = self.fp16_onnx, self.fp16_onnx_sha256
        if opts.calibrated and self.fallback_onnx and self.fallback_onnx_sha256:
            onnx, sha = self.fallback_onnx, self.fallback_onnx_sha256
        return onnx, trt_options.calibrated_source(sha, calibration_sha256 if plan.calibrate else None)


@dataclass(frozen=True)
class Job:
    """job.json: the device, the validation batch (`val`) and the DLA int8 calibration set (`calibration`) by
    bundle path, how to measure, the ONNX Runtime providers, the engines' shared build options, what to time, and
    the catalogue id the bench file names as its `reference`.

    A job of ONNX files given to `edgekd bench` ships random inputs as `val` (no labels: nothing is scored)."""

    device: JobDevice
    val: str
    settings: JobSettings = field(default_factory=JobSettings)
    calibration: Optional[str] = None
    ort_providers: List[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    onnx: List[OnnxEntry] = field(default_factory=list)
    engines: List[EngineEntry] = field(default_factory=list)
    reference: str = catalog.REFERENCE
    schema: str = JOB_SCHEMA

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": self.schema,
            "device": {
                "name": self.device.name,
                "kind": self.device.kind,
                "record_power_mode": self.device.record_power_mode,
                "lock_clocks": self.device.lock_clocks,
            },
            "val": self.val,
            "calibration": self.calibration,
            "settings": self.settings.to_dict(),
            "ort_providers": list(self.ort_providers),
            "tensorrt": self.tensorrt.to_dict(),
            "onnx": [e.to_dict() for e in self.onnx],
            "engines": [e.to_dict() for e in self.engines],
            **({} if self.reference == catalog.REFERENCE else {"reference": self.reference}),
        }

    def to_json(self) -> bytes:
        """The bytes of job.json (sorted keys: the same job gives the same bytes, hence the same bundle id)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode()

    @classmethod
    def from_dict(cls, doc: Any, root: Optional[str]) -> "Job":
        """The job in `doc`, every field checked; paths must resolve inside the bundle folder `root` (None: paths
        are only checked to be relative paths of plain names, as the host does before the bundle exists)."""
        _obj(doc, "", tuple(f.name for f in fields(cls)), ("schema", "device", "val"))
        if doc["schema"] != JOB_SCHEMA:
            raise _fail("schema", doc["schema"], repr(JOB_SCHEMA))
        device = JobDevice.from_dict(doc["device"])
        val = _path(doc["val"], "val", root)
        settings = JobSettings.from_dict(doc.get("settings", {}))
        calibration = doc.get("calibration")  # the DLA int8 calibration set
        if calibration is not None:
            calibration = _path(calibration, "calibration", root)
        provider_docs = _list(doc.get("ort_providers", ["CPUExecutionProvider"]), "ort_providers")
        providers = [_name(p, f"ort_providers[{i}]") for i, p in enumerate(provider_docs)]
        build = TensorRTOptions.from_dict(doc.get("tensorrt", {}))
        onnx = [OnnxEntry.from_dict(e, f"onnx[{i}]", root) for i, e in enumerate(_list(doc.get("onnx", []), "onnx"))]
        engine_docs = _list(doc.get("engines", []), "engines")
        engines = [EngineEntry.from_dict(e, f"engines[{i}]", root) for i, e in enumerate(engine_docs)]
        seen = set()  # type: set
        for where, entry in [(f"onnx[{i}]", e) for i, e in enumerate(onnx)] + [
            (f"engines[{i}]", e) for i, e in enumerate(engines)
        ]:
            if (entry.id, entry.name) in seen:
                raise _fail(where + ".id", entry.id, "an id that appears once in the job (once per file name)")
            seen.add((entry.id, entry.name))
        for i, entry in enumerate(engines):
            if (entry.fallback, None) in seen:
                raise _fail(f"engines[{i}].fallback", entry.fallback, "an engine id the job does not build itself")
        for i, entry in enumerate(engines):  # what the host checked in devices.yaml, checked again
            problems = trt_options.validate_options(build.build_options(entry.precision))
            if problems:
                raise JobError(f"{JOB_FILE}: tensorrt: {problems[0]} (engines[{i}], {entry.id})")
        reference = doc.get("reference", catalog.REFERENCE)
        if not isinstance(reference, str) or reference not in catalog.BY_ID:
            raise _fail("reference", reference, "a catalogue id")
        return cls(device, val, settings, calibration, providers, build, onnx, engines, reference)

    @classmethod
    def read(cls, path: str) -> "Job":
        """The job file at `path`, checked against the folder it lies in (the bundle)."""
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_JOB_BYTES + 1)
        except OSError as e:
            raise JobError(f"{path}: cannot read the job file ({e.strerror or e})") from None
        if len(data) > MAX_JOB_BYTES:
            raise JobError(f"{path}: larger than {MAX_JOB_BYTES} bytes; not a job the host wrote")
        try:
            doc = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise JobError(f"{path}: nested too deeply; not a job the host wrote") from None
        except ValueError as e:  # UnicodeDecodeError is a ValueError
            raise JobError(f"{path}: not JSON ({str(e)[:120]})") from None
        return cls.from_dict(doc, os.path.dirname(os.path.abspath(path)))
