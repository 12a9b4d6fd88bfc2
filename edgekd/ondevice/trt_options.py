"""The pure parts of a TensorRT build: options and their checks, file naming, the sidecar, the trtexec line.

No TensorRT import here, so the host can test and reuse all of it (Python 3.8, stdlib only).
"""

import hashlib
import os
import re
import shlex
from typing import Dict, List, Optional, Tuple

PRECISIONS = ("fp32", "fp16", "int8")
SIDECAR_SCHEMA = "edgekd.engine/1"


class BuildOptions:
    """How one engine is built: precision, DLA core, workspace and the batch profile of the dynamic batch axis."""

    def __init__(
        self,
        precision: str = "fp16",
        dla_core: Optional[int] = None,
        static_shapes: bool = False,
        workspace_mb: int = 1024,
        min_batch: int = 1,
        opt_batch: int = 8,
        max_batch: int = 32,
    ) -> None:
        self.precision = precision
        self.dla_core = dla_core
        self.static_shapes = static_shapes
        self.workspace_mb = workspace_mb
        self.min_batch = min_batch
        self.opt_batch = opt_batch
        self.max_batch = max_batch

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
        return "-".join(parts)


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
    if opts.workspace_mb < 16:
        problems.append(f"workspace_mb {opts.workspace_mb} is below 16")
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


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trtexec_command(
    onnx_path: str,
    engine_path: str,
    opts: BuildOptions,
    inputs: List[Dict[str, object]],
    timing_cache: Optional[str] = None,
    trtexec: str = "trtexec",
) -> str:
    """The trtexec line that builds the same engine, for reproducing a build by hand.

    `inputs` are the network inputs as {"name", "shape"} with -1 for the dynamic batch axis.
    """
    args = [
        trtexec,
        "--onnx=" + onnx_path,
        "--saveEngine=" + engine_path,
        f"--memPoolSize=workspace:{opts.workspace_mb}",
    ]  # MiB; TensorRT 8.5 takes no unit suffix
    if opts.precision in ("fp16", "int8"):
        args.append("--fp16")  # int8 engines keep fp16 for layers without Q/DQ scales, as trt_build does
    if opts.precision == "int8":
        args.append("--int8")
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
) -> Dict[str, object]:
    """The JSON written beside an engine: what it was built from, with what, and for which GPU."""
    return {
        "schema": SIDECAR_SCHEMA,
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "compute_capability": compute_capability,
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


def sidecar_mismatch(
    sidecar: Dict[str, object], trt_version: str, gpu_name: str, compute_capability: str
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
