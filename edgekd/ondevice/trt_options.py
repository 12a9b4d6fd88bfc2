"""The pure parts of a TensorRT build: options and their checks, what each TensorRT release can build and how,
file naming, the sidecar, the trtexec line, the TensorRT-to-numpy dtype map.

No TensorRT import here, so the host can test and reuse all of it (Python 3.8, stdlib only).
"""

import hashlib
import os
import re
import shlex
from typing import Dict, List, Optional, Tuple

from .catalog import ENGINE_PRECISIONS as PRECISIONS  # the precisions an engine is built at
from .files import sha256_file  # noqa: F401  (re-exported: trt_build.py calls trt_options.sha256_file)

SIDECAR_SCHEMA = "edgekd.engine/1"

RELEASES = {"8.5": "8.5.2", "10": "10.16", "11": "11.1"}
"""API family -> the TensorRT release whose Python names that family's code is checked against
(../shared/tensorrt-api/tensorrt-<release>.names; tests/ondevice/test_trt_api_surface.py)."""

TRT_PATHS = {
    "_explicit_batch_network": ("8.5",),
    "_strongly_typed_network": ("10", "11"),
    "_weakly_typed_network": ("10",),
    "_set_precision_flags": ("8.5", "10"),
    "_attach_calibrator": ("8.5", "10"),
    "entropy_calibrator": ("8.5", "10"),
}
"""The functions of the TensorRT code (trt_build, trt_runtime, calibrate) that run on some API families only.

Every other function runs on all of them and may use only names all releases have. A build
calls these through BuildPlan.steps(), so what runs on a release is what this table claims.
"""

NUMPY_OF_TRT = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}
"""numpy dtype of each trt.DataType by name; trt.nptype is not used (8.5's builds its map with np.bool,
which numpy >= 1.24 removed: NVIDIA/TensorRT #2557)."""


STANDIN_SUFFIX = "-standin"
"""The version suffix of the TensorRT stand-in of the tests (tests/standins/tensorrt): it runs on the CPU."""


def runtime_name(trt_version: str) -> str:
    """`tensorrt`, or `tensorrt-standin` for the tests' stand-in: its figures are never TensorRT's."""
    return "tensorrt-standin" if str(trt_version).endswith(STANDIN_SUFFIX) else "tensorrt"


def numpy_dtype_name(trt_dtype: object) -> str:
    """`DataType.HALF` (a trt.DataType or its str) -> `float16`; ValueError for types numpy has no dtype for."""
    name = str(trt_dtype).split(".")[-1]
    if name not in NUMPY_OF_TRT:
        raise ValueError("TensorRT type {} has no numpy dtype (known: {})".format(name, ", ".join(NUMPY_OF_TRT)))
    return NUMPY_OF_TRT[name]


def version_tuple(version: str) -> Tuple[int, ...]:
    """`8.5.2.2` -> (8, 5, 2, 2); stops at the first part that is not a number (`10.0.0b6` -> (10, 0))."""
    parts = []
    for piece in str(version).split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def api_family(trt_version: str) -> str:
    """The API family of a TensorRT release: `8.5` (8.5, 8.6), `10` or `11` (11 and later); ValueError otherwise."""
    v = version_tuple(trt_version)
    if v[:1] == (8,) and v >= (8, 5):
        return "8.5"
    if v[:1] == (10,):
        return "10"
    if v and v[0] >= 11:
        return "11"
    raise ValueError(f"TensorRT {trt_version} is not supported; edgekd builds with 8.5/8.6, 10.x and 11.x")


class BuildPlan:
    """How one engine is built on one TensorRT release.

    `source`: the ONNX it needs (`fp32`, `fp16`: an fp16 ONNX, `qdq`: a Q/DQ int8 ONNX);
    `strongly_typed`: precision comes from the network's types, no precision flags;
    `flags`: builder flags by name; `calibrate`: implicit int8 with an entropy calibrator;
    `refused`: why this cannot be built on that release (None when it can).
    """

    def __init__(
        self,
        family: str,
        source: str,
        strongly_typed: bool,
        flags: Tuple[str, ...] = (),
        calibrate: bool = False,
        refused: Optional[str] = None,
    ) -> None:
        self.family = family
        self.source = source
        self.strongly_typed = strongly_typed
        self.flags = flags
        self.calibrate = calibrate
        self.refused = refused

    def steps(self) -> List[str]:
        """The release-specific functions (TRT_PATHS) a build with this plan calls, in order."""
        if self.refused:
            return []
        if self.family == "8.5":
            steps = ["_explicit_batch_network"]
        else:
            steps = ["_strongly_typed_network" if self.strongly_typed else "_weakly_typed_network"]
        if self.flags:
            steps.append("_set_precision_flags")
        if self.calibrate:
            steps += ["entropy_calibrator", "_attach_calibrator"]
        return steps


def build_plan(opts: "BuildOptions", trt_version: str) -> BuildPlan:
    """What building `opts` takes on TensorRT `trt_version` (see docs/jetson.md for the table).

    8.5: builder flags (FP16, INT8 with a Q/DQ ONNX); DLA int8 is implicit quantization with a calibrator
    (DLA takes no Q/DQ on 8.x: NVIDIA/TensorRT #2222). 10.x: strongly typed networks on the GPU (fp16 from an
    fp16 ONNX, int8 from a Q/DQ ONNX); the DLA only takes weakly typed networks before 11.4, so DLA engines are
    built as on 8.5 (flags, calibrated int8). Every DLA build prefers precision constraints, as trtexec's
    --useDLACore does. 11.x: strongly typed only and no calibrators, so no DLA int8; no DLA at all before 11.4.
    `opts.calibrated` asks for calibrated int8 on the GPU too (the fallback when a Q/DQ build fails), built
    like DLA int8: weakly typed with flags and a calibrator, so never on 11.x.
    """
    family = api_family(trt_version)
    dla = opts.dla_core is not None
    calibrated = opts.precision == "int8" and (dla or opts.calibrated)
    if family == "8.5" or (family == "10" and (dla or calibrated)):
        flags = {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[opts.precision]
        if dla:
            flags += ("PREFER_PRECISION_CONSTRAINTS",)
        return BuildPlan(family, "fp32" if opts.precision != "int8" or calibrated else "qdq", False, flags, calibrated)
    if dla and version_tuple(trt_version) < (11, 4):
        return BuildPlan(
            family,
            "fp32",
            False,
            refused=f"the DLA on TensorRT {trt_version} takes no network edgekd can build (11.x removed weakly "
            "typed networks; strongly typed ones run on the DLA from 11.4); use the GPU, or TensorRT 10.x",
        )
    if calibrated:
        where = "on the DLA" if dla else "calibrated on the GPU"
        other = "use fp16 on the DLA or int8 on the GPU" if dla else "use the Q/DQ int8 ONNX"
        return BuildPlan(
            family,
            "fp32",
            False,
            refused=f"int8 {where} needs a calibrator and TensorRT {trt_version} has none "
            f"(11.x removed implicit int8); {other}",
        )
    return BuildPlan(family, {"fp32": "fp32", "fp16": "fp16", "int8": "qdq"}[opts.precision], True)


class BuildOptions:
    """How one engine is built: precision, DLA core, workspace and the batch profile of the dynamic batch axis;
    `calibrated`: int8 by implicit quantization from an fp32 ONNX and a calibration set even on the GPU (the
    fallback when a Q/DQ int8 build fails; DLA int8 is always calibrated)."""

    def __init__(
        self,
        precision: str = "fp16",
        dla_core: Optional[int] = None,
        static_shapes: bool = False,
        workspace_mb: int = 1024,
        min_batch: int = 1,
        opt_batch: int = 8,
        max_batch: int = 32,
        calibrated: bool = False,
    ) -> None:
        self.precision = precision
        self.dla_core = dla_core
        self.static_shapes = static_shapes
        self.workspace_mb = workspace_mb
        self.min_batch = min_batch
        self.opt_batch = opt_batch
        self.max_batch = max_batch
        self.calibrated = calibrated

    def as_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, doc: Dict[str, object]) -> "BuildOptions":
        return cls(**doc)  # type: ignore[arg-type]

    def batch_profile(self) -> Tuple[int, int, int]:
        """(min, opt, max) batch; a static-shape build fixes all three to opt_batch."""
        if self.static_shapes:
            return (self.opt_batch, self.opt_batch, self.opt_batch)
        return (self.min_batch, self.opt_batch, self.max_batch)

    def variant(self) -> str:
        """A short name for the options that change the engine beyond its precision, e.g. `dla0-b8`."""
        parts = []
        if self.dla_core is not None:
            parts.append(f"dla{self.dla_core}")
        lo, opt, hi = self.batch_profile()
        parts.append(f"b{opt}" if lo == hi else f"b{lo}-{opt}-{hi}")
        parts.append(f"ws{self.workspace_mb}")
        if self.calibrated and self.dla_core is None:  # DLA int8 is always calibrated: its key stays as it was
            parts.append("cal")
        return "-".join(parts)


MAX_WORKSPACE_MB = 1 << 20
"""1 TiB: no GPU has more, and a larger number only makes names and allocations fail later."""
MAX_BATCH = 4096


def validate_options(opts: BuildOptions) -> List[str]:
    """Every problem with `opts`, one sentence each (empty when they are valid)."""
    problems = []
    if opts.precision not in PRECISIONS:
        problems.append("precision {!r} is not one of {}".format(opts.precision, ", ".join(PRECISIONS)))
    if opts.dla_core is not None:
        if opts.dla_core not in (0, 1):
            problems.append(f"dla_core {opts.dla_core} does not exist (Xavier and Orin have DLA cores 0 and 1)")
        if opts.precision == "fp32":
            problems.append("DLA runs fp16 or int8 only; precision fp32 cannot use dla_core")
        if not opts.static_shapes:
            problems.append("DLA needs static shapes; set static_shapes: true (the engine is built for opt_batch)")
    if opts.calibrated and opts.precision != "int8":
        problems.append(f"calibrated applies to int8 only, not precision {opts.precision!r}")
    if not 16 <= opts.workspace_mb <= MAX_WORKSPACE_MB:
        problems.append(f"workspace_mb {opts.workspace_mb} is outside 16..{MAX_WORKSPACE_MB}")
    if opts.max_batch > MAX_BATCH:
        problems.append(f"max_batch {opts.max_batch} is above {MAX_BATCH}")
    if not 1 <= opts.min_batch <= opts.opt_batch <= opts.max_batch:
        problems.append(
            f"need 1 <= min_batch <= opt_batch <= max_batch, got {opts.min_batch}, {opts.opt_batch}, {opts.max_batch}"
        )
    return problems


def slug(text: str) -> str:
    """`NVIDIA Tegra Xavier` -> `nvidia-tegra-xavier`: safe in file names."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def timing_cache_path(cache_dir: str, device_kind: str, trt_version: str) -> str:
    """The timing cache shared by builds on one device kind and TensorRT version (a cache from another GPU is invalid)."""
    return os.path.join(cache_dir, "timing", f"{slug(device_kind)}-trt{slug(trt_version)}.cache")


def engine_key(source_sha256: str, opts: BuildOptions, device_kind: str, trt_version: str) -> str:
    """The file stem of a cached engine: one per (ONNX, precision, build variant, device kind, TensorRT version)."""
    return f"{source_sha256[:16]}-{opts.precision}-{opts.variant()}-{slug(device_kind)}-trt{slug(trt_version)}"


def calibrated_source(onnx_sha256: str, calibration_sha256: Optional[str] = None) -> str:
    """The source hash an engine is keyed by: the ONNX's, combined with the calibration set's for a calibrated build."""
    if not calibration_sha256:
        return onnx_sha256
    return hashlib.sha256(f"{onnx_sha256}:{calibration_sha256}".encode()).hexdigest()


TRTEXEC_FLAGS = {"FP16": "--fp16", "INT8": "--int8", "PREFER_PRECISION_CONSTRAINTS": "--precisionConstraints=prefer"}
"""The trtexec option of each builder flag a BuildPlan sets (trtexec 8.5 and 10.x take all three)."""


def trtexec_command(
    onnx_path: str,
    engine_path: str,
    opts: BuildOptions,
    inputs: List[Dict[str, object]],
    timing_cache: Optional[str] = None,
    trtexec: str = "trtexec",
    trt_version: str = "8.5.2",
    calibration_cache: Optional[str] = None,
) -> str:
    """The trtexec line that builds the same engine as trt_build on TensorRT `trt_version`, for reproducing it by hand.

    `inputs` are the network inputs as {"name", "shape"} with -1 for the dynamic batch axis; a calibrated
    (DLA int8) build reads the calibration cache trt_build wrote (trtexec cannot calibrate from images).
    """
    plan = build_plan(opts, trt_version)
    args = [
        trtexec,
        "--onnx=" + onnx_path,
        "--saveEngine=" + engine_path,
        f"--memPoolSize=workspace:{opts.workspace_mb}",  # MiB; TensorRT 8.5 takes no unit suffix
        "--profilingVerbosity=detailed",
        "--exportLayerInfo=" + os.path.splitext(engine_path)[0] + ".layers.json",
    ]
    if plan.strongly_typed:
        args.append("--stronglyTyped")
    args += [TRTEXEC_FLAGS[flag] for flag in plan.flags]  # int8 engines keep fp16 for layers without int8 scales
    if plan.calibrate and calibration_cache:
        args.append("--calib=" + calibration_cache)
    if opts.dla_core is not None:
        args += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    if timing_cache:
        args.append("--timingCacheFile=" + timing_cache)
    dynamic = [i for i in inputs if -1 in list(i["shape"])]  # type: ignore[arg-type]
    if dynamic:
        shapes = {}
        for key, batch in zip(("min", "opt", "max"), opts.batch_profile()):
            shapes[key] = ",".join(
                "{}:{}".format(i["name"], "x".join(str(batch if d == -1 else d) for d in i["shape"]))  # type: ignore[union-attr]
                for i in dynamic
            )
        args += ["--minShapes=" + shapes["min"], "--optShapes=" + shapes["opt"], "--maxShapes=" + shapes["max"]]
    return " ".join(shlex.quote(a) for a in args)


def make_sidecar(
    opts: BuildOptions,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    device_kind: str,
    source_onnx: str,
    source_sha256: str,
    engine_sha256: str,
    inputs: List[Dict[str, object]],
    outputs: List[Dict[str, object]],
    dla: Optional[Dict[str, object]],
    build_seconds: float,
    created: str,
    sm_count: Optional[int] = None,
    plan: Optional[BuildPlan] = None,
    calibration: Optional[Dict[str, object]] = None,
    warnings: Optional[List[str]] = None,
    timing_cache: Optional[Dict[str, str]] = None,
) -> Dict[str, object]:
    """The JSON written beside an engine: what it was built from, with what, how, and for which GPU (name,
    compute capability and SM count: an AGX Xavier and a Xavier NX share the first two)."""
    return {
        "schema": SIDECAR_SCHEMA,
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "compute_capability": compute_capability,
        "sm_count": sm_count,
        "strongly_typed": plan.strongly_typed if plan else None,
        "calibration": calibration,
        "warnings": list(warnings or []),
        "timing_cache": timing_cache,  # {"file", "sha256"} of the timing cache after this build (NVIDIA/TensorRT #4730)
        "device_kind": device_kind,
        "precision": opts.precision,
        "dla_core": opts.dla_core,
        "options": opts.as_dict(),
        "inputs": inputs,
        "outputs": outputs,
        "source_onnx": source_onnx,
        "source_sha256": source_sha256,
        "engine_sha256": engine_sha256,
        "dla": dla,
        "build_seconds": build_seconds,
        "created": created,
    }


def fallback_failure(replaces: str, source_onnx: str, error: str) -> Dict[str, str]:
    """One entry of a sidecar's `fallback` list: the Q/DQ int8 engine this calibrated engine stands in for, the
    ONNX it failed to build from, and TensorRT's reason."""
    return {"replaces": replaces, "source_onnx": source_onnx, "error": error}


def fallback_note(sidecar: Dict[str, object]) -> Optional[str]:
    """What a bench record says about an engine whose sidecar has a `fallback` list (None when it has none):
    it is a calibrated int8 fallback, for which engines, and why (never a silent swap)."""
    failures = sidecar.get("fallback")
    if not isinstance(failures, list) or not failures:
        return None
    why = ["{}: {}".format(f.get("replaces"), f.get("error")) for f in failures if isinstance(f, dict)]
    return "calibrated int8 fallback (fp32 ONNX + calibration set) because the Q/DQ build failed: " + "; ".join(why)


def note_fallback(runtime: object, record: object) -> None:
    """measure.bench_artifacts' `inspect`: the record of an engine whose sidecar has a `fallback` list gets its
    fallback_note (a calibrated fallback says so and why, on the device and on the host)."""
    sidecar = getattr(runtime, "sidecar", None)
    if isinstance(sidecar, dict) and sidecar.get("fallback"):
        record.note = fallback_note(sidecar)  # type: ignore[attr-defined]


def sidecar_mismatch(
    sidecar: Dict[str, object],
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    sm_count: Optional[int] = None,
) -> Optional[str]:
    """Why an engine with this sidecar cannot run here (None when it can): engines only load on the GPU and TensorRT they were built with."""
    if sidecar.get("schema") != SIDECAR_SCHEMA:
        return "sidecar schema is {!r}, expected {!r}".format(sidecar.get("schema"), SIDECAR_SCHEMA)
    if sidecar.get("tensorrt") != trt_version:
        return "built with TensorRT {}, this device has TensorRT {}".format(sidecar.get("tensorrt"), trt_version)
    if sidecar.get("compute_capability") != compute_capability or sidecar.get("gpu") != gpu_name:
        return "built for GPU {} (sm {}), this device has {} (sm {})".format(
            sidecar.get("gpu"), sidecar.get("compute_capability"), gpu_name, compute_capability
        )
    if sm_count is not None and sidecar.get("sm_count") != sm_count:
        return "built for a {} with {} SMs, this one has {} SMs".format(
            gpu_name, sidecar.get("sm_count") or "an unknown number of", sm_count
        )
    return None


def dla_summary(layer_names: List[str], on_dla: List[bool]) -> Dict[str, object]:
    """Layers that fall back from DLA to the GPU, and the share of layers that run on DLA."""
    fallback = [name for name, ok in zip(layer_names, on_dla) if not ok]
    total = len(layer_names)
    return {
        "layers": total,
        "on_dla": total - len(fallback),
        "share_on_dla": (total - len(fallback)) / total if total else 0.0,
        "gpu_fallback": fallback,
    }


DLA_TRANSFER_SUFFIXES = (" to nvm", " from nvm", " copy finish")


def engine_dla_summary(layer_info: Dict[str, object]) -> Dict[str, object]:
    """DLA coverage of a built DLA engine from its inspector JSON (DETAILED verbosity).

    TensorRT folds each DLA subgraph into one `{ForeignNode[first...last]}` layer and adds copies in
    and out of DLA memory (`x to nvm`, `y from nvm`, `... copy finish`); every other layer runs on
    the GPU. Layers may be JSON objects with a "Name" or, at lower verbosity, plain names.
    """
    names = []
    for layer in layer_info.get("Layers", []) or []:  # type: ignore[union-attr]
        names.append(str(layer.get("Name", "")) if isinstance(layer, dict) else str(layer))
    dla = [n for n in names if n.startswith("{ForeignNode[")]
    transfers = [n for n in names if n.endswith(DLA_TRANSFER_SUFFIXES)]
    gpu = [n for n in names if n not in dla and n not in transfers]
    return {"engine_layers": len(names), "dla_subgraphs": dla, "dla_transfers": len(transfers), "gpu_layers": gpu}
