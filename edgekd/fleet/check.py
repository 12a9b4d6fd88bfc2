"""`edgekd devices check NAME`: run the probe on the device and say what is missing for its backends."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import edgekd.ondevice.probe as probe_module
from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.fleet.ssh import Ssh, remote_command

MIN_TENSORRT = (8, 5)
MIN_FREE_GB = 1.0


@dataclass
class CheckReport:
    """The probe's findings on one device, with the problems that block shipping and the warnings that do not."""

    device: str
    probe: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> list[str]:
        """Lines for the terminal: what the device has, then each problem and warning."""
        p = self.probe
        libs = {k: (v.get("version") or "missing") for k, v in p.get("libraries", {}).items()}
        lines = [
            f"{self.device}: python {p.get('python', '?')} ({p.get('machine', '?')}), L4T {p.get('l4t') or '-'}, "
            f"JetPack {p.get('jetpack') or '-'}, CUDA {p.get('cuda') or '-'}, GPU {p.get('gpu') or '-'}, "
            f"power mode {p.get('power_mode') or '-'}, free disk {p.get('free_disk_gb', '?')} GB"
        ]
        if libs:
            lines.append("libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()))
        lines += [f"problem: {x}" for x in self.problems] + [f"warning: {x}" for x in self.warnings]
        return lines

    def require_ok(self) -> None:
        if self.problems:
            more = (
                f" (and {len(self.problems) - 1} more: run `edgekd devices check {self.device}`)"
                if len(self.problems) > 1
                else ""
            )
            raise EdgekdError(f"device '{self.device}' is not ready: {self.problems[0]}{more}")


def _version(text: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (text or "").split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def numpy_tensorrt_warning(numpy_version: str | None, trt_version: str | None) -> str | None:
    """Why this numpy and TensorRT are known not to work together, or None.

    TensorRT 8.5's `trt.nptype` builds its map with `np.bool`, which numpy 1.24 removed
    (NVIDIA/TensorRT #2557, #2567; fixed in 8.6). edgekd's own code does not call it.
    """
    if not numpy_version or not trt_version:
        return None
    if _version(numpy_version)[:2] >= (1, 24) and (8, 0) <= _version(trt_version)[:2] < (8, 6):
        return (
            f"numpy {numpy_version} with TensorRT {trt_version} is a known-bad pair: trt.nptype fails "
            "(np.bool was removed in numpy 1.24; NVIDIA/TensorRT #2557); edgekd avoids it, other scripts may not "
            "(numpy < 1.24 works with both)"
        )
    return None


NUMPY_ABI_ERRORS = (
    "compiled against api version",  # numpy 1.x C API newer than the installed numpy
    "numpy.core.multiarray failed to import",
    "_array_api not found",  # built against numpy 2, run under numpy 1
    "numpy.dtype size changed",
)
PYCUDA_RECIPE = "pycuda<2024.1.2"


def pycuda_numpy_fix(error: str | None, numpy_version: str | None, python: str) -> str | None:
    """The fix when pycuda does not import because its C extension was built against another numpy, else None.

    pip builds pycuda in an isolated environment with the newest numpy it may use (>= 1.24 for pycuda
    >= 2024.1.2), and an extension built against a newer numpy C API does not import under JetPack 5's
    numpy 1.17; building without isolation compiles it against the numpy that will run it.
    """
    if not error or not any(marker in error.lower() for marker in NUMPY_ABI_ERRORS):
        return None
    return (
        f"pycuda was built against a newer numpy than this device's numpy {numpy_version or '?'} ({error}); rebuild it "
        f"against the installed numpy: `PATH=/usr/local/cuda/bin:$PATH {python} -m pip install --user --force-reinstall "
        f"--no-deps --no-build-isolation '{PYCUDA_RECIPE}'` (docs/jetson.md, Preparing the board)"
    )


def assess(device: DeviceConfig, found: dict) -> CheckReport:
    """Problems and warnings for `device`'s backends given its probe output."""
    report = CheckReport(device.name, found)
    libs = found.get("libraries", {})
    py = device.python

    def missing(lib: str, why: str, install: str) -> None:
        err = libs.get(lib, {}).get("error") or "not found"
        report.problems.append(f"{lib} is not importable by {py} ({err}); {why}; {install}")

    if _version(found.get("python")) < (3, 8):
        report.problems.append(f"{py} is Python {found.get('python')}; edgekd's device code needs 3.8 or newer")
    if libs.get("numpy", {}).get("version") is None:
        missing("numpy", "the benchmark needs it", "install python3-numpy")
    if "tensorrt" in device.backends:
        trt_version = libs.get("tensorrt", {}).get("version")
        if trt_version is None:
            missing("tensorrt", "backend tensorrt needs it", "JetPack installs it as python3-libnvinfer")
        elif _version(trt_version) < MIN_TENSORRT:
            report.problems.append(
                f"TensorRT {trt_version} is too old; backend tensorrt needs 8.5 or newer (JetPack 5.1+)"
            )
        elif _version(trt_version)[:1] == (9,):  # the builder refuses it too (trt_options.api_family)
            report.problems.append(
                f"TensorRT {trt_version} is not supported; edgekd builds with 8.5/8.6, 10.x and 11.x"
            )
        numpy_fix = pycuda_numpy_fix(libs.get("pycuda", {}).get("error"), libs.get("numpy", {}).get("version"), py)
        if numpy_fix:
            report.problems.append(numpy_fix)
        elif libs.get("pycuda", {}).get("version") is None:
            missing(
                "pycuda", "backend tensorrt needs it for GPU buffers", f"install it with `{py} -m pip install pycuda`"
            )
        elif found.get("gpu") is None:
            report.problems.append("no CUDA GPU visible to pycuda; backend tensorrt needs one")
    pair = numpy_tensorrt_warning(libs.get("numpy", {}).get("version"), libs.get("tensorrt", {}).get("version"))
    if pair:
        report.warnings.append(pair)
    if "onnxruntime" in device.backends and libs.get("onnxruntime", {}).get("version") is None:
        missing("onnxruntime", "backend onnxruntime needs it", "install the onnxruntime-gpu wheel for your JetPack")
    if found.get("free_disk_gb", MIN_FREE_GB) < MIN_FREE_GB:
        report.warnings.append(f"only {found['free_disk_gb']} GB free under {found.get('workdir')}")
    if device.kind.startswith("jetson") and found.get("l4t") is None:
        report.warnings.append(
            f"no /etc/nv_tegra_release: this does not look like a Jetson, yet its kind is {device.kind}"
        )
    if device.record_power_mode and found.get("power_mode") is None:
        report.warnings.append("nvpmodel not found: the power mode will not be recorded")
    return report


def probe_device(ssh: Ssh, before: Sequence[Sequence[str]] = ()) -> tuple[list[str], dict]:
    """Run probe.py on the device (sent on stdin: nothing needs copying first) after the commands `before`.

    Returns the output lines of `before` and the probe's JSON; one SSH connection in all.
    """
    d = ssh.device
    args = [d.python, "-", d.workdir] + ([] if d.record_power_mode else ["--no-power-mode"])
    source = Path(probe_module.__file__).read_bytes()
    proc = ssh.run(remote_command(*before, args), "probe", timeout=d.connect_timeout_s + 120, input=source, check=False)
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode == 127:
        raise EdgekdError(f"{ssh.where()}: python '{d.python}' not found on the device; set `python` in devices.yaml")
    if proc.returncode != 0:
        raise EdgekdError(
            f"{ssh.where()}: the probe failed with {d.python}: {err[-1] if err else f'exit status {proc.returncode}'}"
        )
    lines = proc.stdout.decode(errors="replace").splitlines()
    try:
        return lines[:-1], json.loads(lines[-1])
    except (ValueError, IndexError):
        raise EdgekdError(f"{ssh.where()}: the probe printed no JSON (is '{d.python}' Python 3?)") from None


def check_device(device: DeviceConfig) -> CheckReport:
    """Probe `device` over SSH and assess it for its backends."""
    return assess(device, probe_device(Ssh(device))[1])
