"""A description of the machine a benchmark ran on (the bench file's `device` record)."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("numpy", "torch", "torchvision", "onnx", "onnxruntime", "tensorrt")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


# x86 flags of the instructions that add int8 products in 32 bits (VNNI, AMX); without them ONNX Runtime's
# u8 x s8 kernels sum pairs of products in saturating 16-bit lanes (vpmaddubsw), so int8 files can lose accuracy
_X86_INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_dot() -> str | None:
    """How this CPU multiplies int8: "vnni", "no-vnni" (x86 without it: saturating 16-bit sums), "dotprod"
    (Arm SDOT) or None (neither could be read)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        flags = value.split()
        if key.strip() == "flags":
            return "vnni" if any(f in flags for f in _X86_INT8_DOT) else "no-vnni"
        if key.strip() == "Features" and "asimddp" in flags:
            return "dotprod"
    return None


def memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions (None when absent), read from package metadata without importing."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions.get("onnxruntime") is None:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions["onnxruntime"] = metadata.version("onnxruntime-gpu")
    return versions


def gpu_name() -> str | None:
    """The first CUDA GPU torch sees, or None."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def describe_system(name: str = "local", kind: str = "host", power_mode: str | None = None) -> dict[str, Any]:
    """The bench file's `device` record for this machine."""
    return {
        "name": name,
        "kind": kind,
        "cpu": cpu_model(),
        "int8_dot": int8_dot(),
        "cores": os.cpu_count() or 1,
        "memory_gb": memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu_name(),
        "power_mode": power_mode,
        "libraries": library_versions(),
    }
