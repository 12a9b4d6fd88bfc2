"""What a device sends back is untrusted: every field is checked before it becomes a path or a cache key.

A device (or whoever controls it) writes the engine sidecars and the bench file that `edgekd ship`
downloads. Nothing from them is joined into a path unless it passed these checks, and every path
built from them is resolved and kept inside the folder it belongs to (the run dir or the cache).
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.ondevice.catalog import ENGINE_PRECISIONS
from edgekd.ondevice.files import sha256_file
from edgekd.ondevice.text import first_line
from edgekd.ondevice.trt_options import SIDECAR_SCHEMA, BuildOptions, validate_options

SHA256 = re.compile(r"^[0-9a-f]{64}$")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
"""A plain file or device name: no separators, no leading dot (so never `.` or `..`)."""
KIND = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
TRT_VERSION = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,6}){1,3}(\.?(a|b|rc|post|dev)[0-9]{1,4})?(-standin)?$")
OPTION_TYPES = {
    "precision": (str,),
    "dla_core": (int, type(None)),
    "static_shapes": (bool,),
    "workspace_mb": (int,),
    "min_batch": (int,),
    "opt_batch": (int,),
    "max_batch": (int,),
    "calibrated": (bool,),
}
OPTIONAL_OPTIONS = ("calibrated",)
"""Options a sidecar written before they existed leaves out (BuildOptions' default applies)."""
MAX_JSON_BYTES = 16 << 20


def inside(path: Path, root: Path, what: str) -> Path:
    """`path` resolved, or an EdgekdError when it resolves outside `root` (symlinks followed)."""
    resolved, top = Path(path).resolve(), Path(root).resolve()
    if resolved != top and top not in resolved.parents:
        raise EdgekdError(f"{what}: {path} resolves to {resolved}, outside {top}; refused")
    return resolved


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a regular file of at most MAX_JSON_BYTES, or a one-line EdgekdError."""
    try:
        info = path.lstat()
    except OSError as e:
        raise EdgekdError(f"{what}: {path}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise EdgekdError(f"{what}: {path} is not a regular file; refused")
    if info.st_size > MAX_JSON_BYTES:
        raise EdgekdError(f"{what}: {path} holds {info.st_size} bytes, more than {MAX_JSON_BYTES}; refused")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EdgekdError(f"{what}: {path}: not valid JSON: {first_line(e)}") from None
    except RecursionError:
        raise EdgekdError(f"{what}: {path}: JSON nested too deeply; refused") from None
    if not isinstance(doc, dict):
        raise EdgekdError(f"{what}: {path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _field(doc: dict, key: str, pattern: re.Pattern, what: str, valid: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise EdgekdError(f"{what}: {key} is {str(value)[:80]!r}; expected {valid}")
    return value


def check_options(doc: Any, what: str) -> BuildOptions:
    """BuildOptions from a sidecar's `options`: exactly the known keys (those of OPTIONAL_OPTIONS may be left out),
    each of its type, and valid together."""
    required = set(OPTION_TYPES) - set(OPTIONAL_OPTIONS)
    if not isinstance(doc, dict) or not required <= set(doc) <= set(OPTION_TYPES):
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise EdgekdError(f"{what}: options are {keys}; expected exactly {sorted(OPTION_TYPES)}")
    for key, types in OPTION_TYPES.items():
        if key not in doc:
            continue
        value = doc[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise EdgekdError(f"{what}: options.{key} is {value!r}; expected {' or '.join(t.__name__ for t in types)}")
    opts = BuildOptions.from_dict(doc)
    problems = validate_options(opts)
    if problems:
        raise EdgekdError(f"{what}: options: {problems[0]}")
    return opts


class Sidecar:
    """The checked fields of an engine's sidecar: safe to build the cache key and path from."""

    def __init__(
        self,
        source_sha256: str,
        opts: BuildOptions,
        device_kind: str,
        tensorrt: str,
        calibration_sha256: str | None = None,
    ) -> None:
        self.source_sha256 = source_sha256
        self.opts = opts
        self.device_kind = device_kind
        self.tensorrt = tensorrt
        self.calibration_sha256 = calibration_sha256  # the calibration set of a calibrated (DLA int8) engine


def check_sidecar(engine: Path, device_kind: str) -> Sidecar:
    """The sidecar beside `engine`, every field checked; its device kind must be `device_kind` (the configured one)
    and its engine_sha256 must match the engine file."""
    what = f"engine sidecar {engine.with_suffix('.json').name}"
    doc = read_json(engine.with_suffix(".json"), what)
    if doc.get("schema") != SIDECAR_SCHEMA:
        raise EdgekdError(f"{what}: schema is {str(doc.get('schema'))[:80]!r}; expected {SIDECAR_SCHEMA!r}")
    source = _field(doc, "source_sha256", SHA256, what, "64 lowercase hex digits")
    engine_sha = _field(doc, "engine_sha256", SHA256, what, "64 lowercase hex digits")
    precision = doc.get("precision")
    if precision not in ENGINE_PRECISIONS:
        raise EdgekdError(
            f"{what}: precision is {str(precision)[:80]!r}; expected one of {', '.join(ENGINE_PRECISIONS)}"
        )
    kind = _field(doc, "device_kind", KIND, what, "a device kind like `jetson-agx-xavier`")
    if kind != device_kind:
        raise EdgekdError(f"{what}: device_kind is {kind!r} but the device is configured as {device_kind!r}; refused")
    trt = _field(doc, "tensorrt", TRT_VERSION, what, "a TensorRT version like `8.5.2.2`")
    opts = check_options(doc.get("options"), what)
    calibration = doc.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        raise EdgekdError(f"{what}: calibration is {str(calibration)[:80]!r}; expected an object or null")
    calibration_sha = (
        _field(calibration, "images", SHA256, what + ": calibration", "64 lowercase hex digits")
        if calibration
        else None
    )
    if opts.precision != precision:
        raise EdgekdError(f"{what}: options.precision {opts.precision!r} differs from precision {precision!r}")
    info = engine.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise EdgekdError(f"{what}: {engine} is not a regular file; refused")
    if sha256_file(str(engine)) != engine_sha:
        raise EdgekdError(f"{what}: engine_sha256 does not match {engine.name}; refused")
    return Sidecar(source, opts, kind, trt, calibration_sha)


def check_tree(root: Path, what: str) -> None:
    """Every entry under `root` is a plain-named regular file or folder: no symlinks, devices or fifos."""
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if not NAME.fullmatch(path.name):
            raise EdgekdError(f"{what}: {path.relative_to(root)}: not a plain file name; refused")
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            raise EdgekdError(f"{what}: {path.relative_to(root)} is not a regular file or folder; refused")


def _safe_relpath(value: Any) -> bool:
    if not isinstance(value, str) or not value or value.startswith("/") or "\\" in value:
        return False
    return all(NAME.fullmatch(part) for part in value.split("/"))


def check_bench(path: Path, device_name: str, shipped: dict[str, str] | None = None) -> dict[str, Any]:
    """A downloaded bench file: a JSON object of bounded size naming the configured device, whose artifact
    records carry plain relative paths and 64-hex hashes (the typed reader checks the rest). With `shipped`
    (bundle path -> sha256), a record of a shipped file must carry the sha256 that was shipped: the device
    hashes the file it measured, so a replaced object cannot pass for the artifact."""
    what = f"bench file from device '{device_name}'"
    doc = read_json(path, what)
    device = doc.get("device")
    found = device.get("name") if isinstance(device, dict) else device
    if found != device_name:
        raise EdgekdError(f"{what}: device is {str(found)[:80]!r}; expected {device_name!r}; refused")
    artifacts = doc.get("artifacts")
    if not isinstance(artifacts, list) or not all(isinstance(rec, dict) for rec in artifacts):
        raise EdgekdError(f"{what}: artifacts must be a list of objects")
    for i, rec in enumerate(artifacts):
        where = f"{what}: artifacts[{i}]"
        if rec.get("path") is not None and not _safe_relpath(rec["path"]):
            raise EdgekdError(f"{where}: path {str(rec['path'])[:80]!r} is not a plain relative path; refused")
        if rec.get("sha256") is not None:
            _field(rec, "sha256", SHA256, where, "64 lowercase hex digits or null")
        expected = (shipped or {}).get(rec.get("path"))
        if expected is not None and rec.get("status") == "done" and rec.get("sha256") != expected:
            raise EdgekdError(
                f"{where}: {rec['path']} was measured with sha256 {str(rec.get('sha256'))[:16]}..., not the "
                f"{expected[:16]}... that was shipped; the device's copy was replaced or damaged: refused"
            )
    return doc
