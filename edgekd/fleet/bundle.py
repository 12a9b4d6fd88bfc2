"""What goes to a device: the run's ONNX files, bench/val.npz, the edgekd/ondevice package and a job file.

A bundle mirrors the run directory, so paths in the device's bench file are run-dir paths:

    job.json                   what to build and measure (edgekd.job/1, read by edgekd_device.bench)
    edgekd_device/*.py         edgekd/ondevice/, copied alone (it imports nothing else from edgekd)
    bench/val.npz              fixed validation batch
    export/*.onnx  qat/*_qdq.onnx  dynamic_quant/*.onnx   the ONNX files the device needs
    engines/<name>.engine + .json                         prebuilt engines (--engines-only)

Every file is content-addressed (sha256), and the bundle id is the hash of that manifest,
so shipping an unchanged run copies nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import edgekd.ondevice as device_package
from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.ondevice.bench import JOB_SCHEMA
from edgekd.ondevice.trt_options import BuildOptions, sha256_file

VAL_PATH = "bench/val.npz"
PACKAGE = "edgekd_device"


@dataclass(frozen=True)
class OnnxArtifact:
    """An ONNX file a pipeline stage writes, and what it holds."""

    path: str  # relative to the run dir
    model: str  # teacher | student
    precision: str  # fp32 | int8 (Q/DQ) | int8-dynamic
    source_stage: str
    tag: str = ""  # tells apart two files of one model and precision (qat, ptq)

    @property
    def stem(self) -> str:
        return f"{self.model}_{self.tag}" if self.tag else self.model


ONNX_ARTIFACTS = (
    OnnxArtifact("export/teacher.onnx", "teacher", "fp32", "export"),
    OnnxArtifact("export/student.onnx", "student", "fp32", "export"),
    OnnxArtifact("qat/student_int8_qdq.onnx", "student", "int8", "qat", "qat"),
    OnnxArtifact("qat/student_ptq_int8_qdq.onnx", "student", "int8", "qat", "ptq"),
    OnnxArtifact("dynamic_quant/student_dynamic_int8.onnx", "student", "int8-dynamic", "dynamic_quant"),
)


@dataclass(frozen=True)
class EngineJob:
    """One engine to build (or deploy): from which ONNX, at which precision."""

    name: str  # e.g. student_trt_fp16, student_qat_trt_int8
    model: str
    precision: str
    onnx: str  # run-dir relative ONNX path
    onnx_sha256: str

    def entry(self, prebuilt: str | None = None) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "precision": self.precision,
            "source_stage": "tensorrt",
            "onnx": self.onnx,
            "onnx_sha256": self.onnx_sha256,
            "prebuilt": prebuilt,
        }


def present_onnx(run_dir: Path) -> list[OnnxArtifact]:
    """The known ONNX artifacts that exist in `run_dir`."""
    return [a for a in ONNX_ARTIFACTS if (run_dir / a.path).is_file()]


def plan_engines(run_dir: Path, precisions: list[str], only: set[str] | None = None) -> list[EngineJob]:
    """Engines for `precisions`: fp32/fp16 from the fp32 ONNX files, int8 from the Q/DQ ONNX files.

    `only` limits the sources to these run-dir relative ONNX paths.
    """
    jobs = []
    for art in present_onnx(run_dir):
        if only is not None and art.path not in only:
            continue
        wanted = (
            [p for p in precisions if p in ("fp32", "fp16")]
            if art.precision == "fp32"
            else (["int8"] if art.precision == "int8" and "int8" in precisions else [])
        )
        digest = sha256_file(str(run_dir / art.path)) if wanted else ""
        jobs += [EngineJob(f"{art.stem}_trt_{p}", art.model, p, art.path, digest) for p in wanted]
    return jobs


def build_options(device: DeviceConfig, precision: str) -> BuildOptions:
    t = device.tensorrt
    return BuildOptions(precision, t.dla_core, t.static_shapes, t.workspace_mb, t.min_batch, t.opt_batch, t.max_batch)


@dataclass
class Bundle:
    """Files by bundle path (local source and sha256), plus the job file's bytes."""

    files: dict[str, Path] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    job: bytes = b""

    def add(self, rel: str, path: Path) -> None:
        self.files[rel] = path
        self.digests[rel] = sha256_file(str(path))

    def set_job(self, job: dict) -> None:
        self.job = json.dumps(job, indent=2, sort_keys=True).encode()
        self.digests["job.json"] = hashlib.sha256(self.job).hexdigest()

    @property
    def id(self) -> str:
        """Hash of the manifest (bundle path -> sha256): equal bundles have equal ids."""
        return hashlib.sha256(json.dumps(self.digests, sort_keys=True).encode()).hexdigest()[:20]

    def objects(self) -> dict[str, Path | bytes]:
        """Content by sha256: a local file, or the job's bytes."""
        found: dict[str, Path | bytes] = {self.digests[rel]: path for rel, path in self.files.items()}
        found[self.digests["job.json"]] = self.job
        return found


def make_bundle(
    run_dir: Path, device: DeviceConfig, prebuilt: dict[str, Path] | None = None
) -> tuple[Bundle, list[str]]:
    """The bundle for `device` and the warnings about what it leaves out.

    `prebuilt` maps engine names to engine files (their .json sidecar beside them) for
    --engines-only: then no ONNX is shipped and the device only measures those engines.
    """
    run_dir = Path(run_dir)
    val = run_dir / VAL_PATH
    if not val.is_file():
        raise EdgekdError(f"{val}: validation batch not found; run the benchmark stage first (it writes {VAL_PATH})")
    bundle, warnings = Bundle(), []
    package = Path(device_package.__file__).parent
    for src in sorted(package.glob("*.py")):
        bundle.add(f"{PACKAGE}/{src.name}", src)
    bundle.add(VAL_PATH, val)

    engines: list[dict] = []
    onnx: list[dict] = []
    if prebuilt is not None:
        for job in plan_engines(run_dir, device.tensorrt.precisions):
            engine = prebuilt[job.name]
            bundle.add(f"engines/{job.name}.engine", engine)
            bundle.add(f"engines/{job.name}.json", engine.with_suffix(".json"))
            engines.append(job.entry(prebuilt=f"engines/{job.name}.engine"))
    else:
        if "tensorrt" in device.backends and device.tensorrt.enabled:
            for job in plan_engines(run_dir, device.tensorrt.precisions):
                bundle.add(job.onnx, run_dir / job.onnx)
                engines.append(job.entry())
            if "int8" in device.tensorrt.precisions and not any(e["precision"] == "int8" for e in engines):
                warnings.append(f"{run_dir}: no Q/DQ int8 ONNX (qat/*_qdq.onnx): no int8 engines")
        if "onnxruntime" in device.backends:
            for art in present_onnx(run_dir):
                bundle.add(art.path, run_dir / art.path)
                onnx.append(
                    {
                        "name": f"{art.stem}_onnx_{art.precision.replace('-', '_')}",
                        "model": art.model,
                        "precision": art.precision,
                        "source_stage": art.source_stage,
                        "path": art.path,
                    }
                )
    if not engines and not onnx:
        raise EdgekdError(
            f"{run_dir}: nothing to benchmark on {device.name}: no ONNX files for backends {device.backends} "
            f"(expected some of {', '.join(a.path for a in ONNX_ARTIFACTS)})"
        )
    b = device.benchmark
    bundle.set_job(
        {
            "schema": JOB_SCHEMA,
            "device": {"name": device.name, "kind": device.kind, "record_power_mode": device.record_power_mode},
            "val": VAL_PATH,
            "settings": {
                "batch_sizes": b.batch_sizes,
                "warmup": b.warmup,
                "min_runs": b.min_runs,
                "min_seconds": b.min_seconds,
                "repeats": b.repeats,
                "threads": b.threads,
            },
            "ort_providers": device.ort_providers,
            "tensorrt": {k: v for k, v in build_options(device, "fp16").as_dict().items() if k != "precision"},
            "onnx": onnx,
            "engines": engines,
        }
    )
    return bundle, warnings
