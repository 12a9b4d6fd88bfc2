"""Engines kept on this machine by (ONNX sha256, precision and build options, device kind, TensorRT version).

A calibrated engine (int8 on the DLA) is keyed by its ONNX and its calibration set together
(trt_options.calibrated_source), as the device's own cache keys it (edgekd_device.job.EngineEntry.build_source).

Filled by every ship that builds engines and by local builds; read by `edgekd ship --engines-only`
to deploy engines to another device of the same kind and TensorRT version without rebuilding.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.fleet.device_results import check_sidecar, inside
from edgekd.ondevice.trt_options import BuildOptions, calibrated_source, engine_key


def cache_root() -> Path:
    """$EDGEKD_CACHE_DIR, else $XDG_CACHE_HOME/edgekd, else ~/.cache/edgekd."""
    if os.environ.get("EDGEKD_CACHE_DIR"):
        return Path(os.environ["EDGEKD_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekd"


def cached_engine(onnx_sha256: str, opts: BuildOptions, device_kind: str, trt_version: str) -> Path:
    """Where that engine lives in the cache (its sidecar is the same path with .json); always inside the cache."""
    folder = cache_root() / "engines"
    path = folder / f"{engine_key(onnx_sha256, opts, device_kind, trt_version)}.engine"
    if path.parent != folder:
        raise EdgekdError(f"engine cache: key {path.name!r} is not a plain file name; refused")
    return path


def lookup(source_sha256: str, opts: BuildOptions, device_kind: str, trt_version: str) -> Path | None:
    """The cached engine built from `source_sha256` (an ONNX's hash, or calibrated_source's for a calibrated one)."""
    path = cached_engine(source_sha256, opts, device_kind, trt_version)
    return path if path.is_file() and path.with_suffix(".json").is_file() else None


def store(engine: Path, device_kind: str) -> Path:
    """Copy an engine and its sidecar into the cache under the key its sidecar describes; returns the cached engine.

    The sidecar comes from a device and is untrusted: every field is checked first (see
    device_results.check_sidecar), its device kind must be `device_kind` (the configured one), and
    the target is resolved and refused unless it lies in the cache's engines/ folder.
    """
    sidecar = check_sidecar(engine, device_kind)
    source = calibrated_source(sidecar.source_sha256, sidecar.calibration_sha256)
    target = cached_engine(source, sidecar.opts, sidecar.device_kind, sidecar.tensorrt)
    target.parent.mkdir(parents=True, exist_ok=True)
    inside(target, cache_root() / "engines", "engine cache")
    for src, dst in ((engine, target), (engine.with_suffix(".json"), target.with_suffix(".json"))):
        tmp = dst.with_name(f".tmp-{os.getpid()}-{dst.name}")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    return target
