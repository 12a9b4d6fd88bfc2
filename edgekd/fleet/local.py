"""This machine as a TensorRT device: build engines here when TensorRT, pycuda and a CUDA GPU exist."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.config import TensorRTConfig
from edgekd.fleet import engine_cache
from edgekd.fleet.bundle import plan_engines
from edgekd.manifest import read_manifest
from edgekd.ondevice import catalog, trt_options
from edgekd.ondevice.files import write_json_atomic
from edgekd.ondevice.job import EngineEntry
from edgekd.ondevice.text import first_line, one_line
from edgekd.ondevice.trt_options import BuildOptions, slug
from edgekd.rundir import RunDir


@dataclass
class LocalEngines:
    """Engines built under tensorrt/local/ (name -> path), those that failed (name -> why), or why nothing was built."""

    engines: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None


def local_gpu() -> tuple[str | None, str | None]:
    """(GPU name, None) when TensorRT can build here, else (None, why not)."""
    try:
        import tensorrt  # noqa: F401

        from edgekd.ondevice.trt_runtime import gpu_identity
    except ImportError as e:
        return None, f"TensorRT or pycuda is not installed here ({e})"
    try:
        name, _ = gpu_identity()
    except Exception as e:  # pycuda raises its own errors when there is no driver or no device
        return None, f"no CUDA GPU here ({first_line(e)})"
    return name, None


def build_local_engines(
    run_dir: str | Path, sources: dict[str, Path], cfg: TensorRTConfig, device: str, out: Callable[[str], Path]
) -> LocalEngines:
    """Build the catalogue engines for `cfg.precisions` from `sources` (ONNX id -> path), each to `out(engine id)`
    with its sidecar and logs beside it.

    fp32/fp16 engines come from fp32 ONNX files (fp16 from the fp16 ONNX on TensorRT >= 10: EngineEntry.build_source),
    int8 from Q/DQ ONNX files; a Q/DQ int8 build that fails is followed by the calibrated int8 engine of the same
    model from its fp32 ONNX and the run's calibration set, whose sidecar says so (`fallback`), as on a device.
    The timing and engine caches live under the user cache dir, keyed by this GPU (device kind `host-<gpu>`).
    """
    run_dir = Path(run_dir)
    gpu, why = local_gpu()
    if gpu is None:
        return LocalEngines(skipped=why)
    import tensorrt

    from edgekd.ondevice.trt_build import BuildError, build_engine

    calibration = sources.get("calib_set") or read_manifest(run_dir).vouched().get("calib_set")  # calibrated int8
    kind = "host-" + slug(gpu)
    version = tensorrt.__version__
    result = LocalEngines()
    fallbacks: dict[str, tuple[EngineEntry, BuildOptions, list[dict[str, str]]]] = {}

    def build(art_id: str, onnx: str, opts: BuildOptions) -> None:
        calibrated = trt_options.build_plan(opts, version).calibrate and calibration is not None
        engine = out(art_id)
        build_engine(
            str(RunDir(run_dir).inside(onnx, "engine source")),
            str(engine),
            opts,
            kind,
            str(engine_cache.cache_root()),
            shown_paths=(onnx, catalog.path_of(art_id, device)),
            calibration_images=str(calibration) if calibrated else None,
        )
        result.engines[art_id] = engine

    for entry in plan_engines(run_dir, sources, list(cfg.precisions), cfg.dla_core is not None):
        opts = BuildOptions(
            entry.precision,
            cfg.dla_core,
            cfg.static_shapes,
            cfg.workspace_mb,
            cfg.min_batch,
            cfg.opt_batch,
            cfg.max_batch,
        )
        onnx, _ = entry.build_source(opts, version)
        try:
            build(entry.id, onnx, opts)
        except Exception as e:  # BuildError, or TensorRT/pycuda failing: one engine's failure keeps the others
            result.failed[entry.id] = one_line(e)
            qdq = trt_options.build_plan(opts, version).source == "qdq"
            if entry.fallback and qdq and calibration is not None and isinstance(e, BuildError):
                failure = trt_options.fallback_failure(entry.id, onnx, one_line(e))
                fallbacks.setdefault(entry.fallback, (entry, opts, []))[2].append(failure)
                result.failed[entry.id] += (
                    f"; fell back to {entry.fallback} (int8 calibrated from {entry.fallback_onnx})"
                )
    for fb_id, (entry, opts, failures) in fallbacks.items():  # as the device bench does (ondevice/bench.py)
        calibrated = BuildOptions.from_dict(dict(opts.as_dict(), calibrated=True))
        try:
            build(fb_id, entry.build_source(calibrated, version)[0], calibrated)
        except Exception as e:
            result.failed[fb_id] = (
                f"{trt_options.fallback_note({'fallback': failures})}; the fallback failed too: {one_line(e)}"
            )
            continue
        sidecar = out(fb_id).with_suffix(".json")
        write_json_atomic(sidecar, {**json.loads(sidecar.read_text()), "fallback": failures})
    for engine in result.engines.values():
        engine_cache.store(engine, kind)
    return result
