"""What this device has: L4T/JetPack release, TensorRT, CUDA, Python and libraries, free disk, power mode.

Self-contained (stdlib only, no package-relative imports) so the host can run it before
anything is copied: `ssh DEVICE python3 - WORKDIR < probe.py` prints the JSON.
"""

import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

PROBE_SCHEMA = "edgekd.probe/1"
LIBRARIES = ("numpy", "tensorrt", "pycuda", "onnxruntime")
JETPACK_OF_L4T = {
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}


def l4t_release(text: str) -> Optional[str]:
    """`# R35 (release), REVISION: 3.1, ...` (the first line of /etc/nv_tegra_release) -> `35.3.1`."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return None
    revision = match.group(2).split(".")
    return "{}.{}.{}".format(match.group(1), revision[0], revision[1] if len(revision) > 1 else "0")


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().replace("\x00", "").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cuda_version() -> Optional[str]:
    text = _read("/usr/local/cuda/version.json")
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    text = _read("/usr/local/cuda/version.txt") or ""
    match = re.search(r"CUDA Version ([\d.]+)", text)
    return match.group(1) if match else None


def _gpu() -> Optional[str]:
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device(0).name() if cuda.Device.count() else None
    except Exception:  # no pycuda, no driver, or no GPU: report none
        return None


def power_mode() -> Optional[str]:
    """The Jetson power mode from `nvpmodel -q`, e.g. `MAXN (0)`; None where nvpmodel is missing."""
    tool = shutil.which("nvpmodel") or ("/usr/sbin/nvpmodel" if os.path.exists("/usr/sbin/nvpmodel") else None)
    if tool is None:
        return None
    try:
        out = subprocess.run(
            [tool, "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10, text=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            mode = line.split(":", 1)[1].strip()
            return f"{mode} ({lines[i + 1]})" if i + 1 < len(lines) and lines[i + 1].isdigit() else mode
    return lines[0] if lines else None


_CPU_CLOCK = re.compile(r"^(cpu\d+): Online=(\d) Governor=(\S+) MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)")
_UNIT_CLOCK = re.compile(r"^([A-Z][A-Z0-9_]*) MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)")


def parse_jetson_clocks(text: str) -> Dict[str, object]:
    """`jetson_clocks --show` -> {"cpus": {cpu0: {...}}, "units": {GPU|EMC|DLA0_CORE...: {...}}, "locked": bool}.

    Frequencies as printed (kHz for CPUs, Hz for the others). Clocks count as locked when every
    online CPU and the GPU run at MinFreq == MaxFreq == CurrentFreq and EMC at its MaxFreq (what
    `jetson_clocks` sets); None when the text has no clock lines.
    """
    cpus, units = {}, {}  # type: Dict[str, Dict[str, object]], Dict[str, Dict[str, int]]
    for line in text.splitlines():
        line = line.strip()
        m = _CPU_CLOCK.match(line)
        if m:
            cpus[m.group(1)] = {
                "online": m.group(2) == "1",
                "governor": m.group(3),
                "min": int(m.group(4)),
                "max": int(m.group(5)),
                "cur": int(m.group(6)),
            }
            continue
        m = _UNIT_CLOCK.match(line)
        if m:
            units[m.group(1)] = {"min": int(m.group(2)), "max": int(m.group(3)), "cur": int(m.group(4))}
    if not cpus and not units:
        return {"cpus": {}, "units": {}, "locked": None}
    pinned = [c for c in cpus.values() if c["online"]] + [units[u] for u in ("GPU",) if u in units]
    locked = all(c["min"] == c["max"] == c["cur"] for c in pinned)
    if "EMC" in units:
        locked = locked and units["EMC"]["cur"] == units["EMC"]["max"]
    return {"cpus": cpus, "units": units, "locked": locked}


def find_tool(name: str) -> Optional[str]:
    for folder in ("/usr/bin", "/usr/sbin"):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return shutil.which(name)


def as_root(argv: List[str]) -> List[str]:
    """`argv` run as root: directly when we are root, else through `sudo -n` (never asks for a password)."""
    return argv if os.geteuid() == 0 else ["sudo", "-n"] + argv


def jetson_clocks() -> Optional[Dict[str, object]]:
    """Parsed `jetson_clocks --show`, or None where the tool is missing or may not run (needs root or sudo -n)."""
    tool = find_tool("jetson_clocks")
    if tool is None:
        return None
    try:
        done = subprocess.run(
            as_root([tool, "--show"]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20, text=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    parsed = parse_jetson_clocks(done.stdout)
    return parsed if parsed["locked"] is not None else None


def thermal(root: str = "/sys/class/thermal") -> Dict[str, object]:
    """{"temps_c": {zone type: degrees C}, "throttling": [zones at or above their first passive trip point]}."""
    temps, hot = {}, []  # type: Dict[str, float], List[str]
    for zone in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if not zone.startswith("thermal_zone"):
            continue
        folder = os.path.join(root, zone)
        kind, temp = _read(os.path.join(folder, "type")), _read(os.path.join(folder, "temp"))
        if not kind or not temp or not temp.lstrip("-").isdigit():
            continue
        temps[kind] = int(temp) / 1000.0
        for i in range(16):
            trip = _read(os.path.join(folder, f"trip_point_{i}_type"))
            if trip is None:
                break
            limit = _read(os.path.join(folder, f"trip_point_{i}_temp"))
            if trip == "passive" and limit and limit.lstrip("-").isdigit():
                if int(temp) >= int(limit) > 0:
                    hot.append(kind)
                break
    return {"temps_c": temps, "throttling": hot}


def jetson_state(record_power_mode: bool = True) -> Dict[str, object]:
    """Power mode, clocks (and whether they are locked), temperatures and throttling, as they are now."""
    clocks = jetson_clocks()
    return {
        "power_mode": power_mode() if record_power_mode else None,
        "clocks": clocks,
        "clocks_locked": clocks["locked"] if clocks else None,
        **thermal(),
    }


def _cpu() -> str:
    model = _read("/proc/device-tree/model")
    if model:
        return model
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gb() -> float:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024.0 / 1024.0, 2)
    return 0.0


def _free_disk_gb(path: str) -> float:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return round(shutil.disk_usage(path).free / 1e9, 2)


def libraries() -> Dict[str, Dict[str, Optional[str]]]:
    """{name: {"version": str or None, "error": why it does not import, or None}} for numpy, tensorrt, pycuda, onnxruntime."""
    found = {}
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
            version = getattr(module, "__version__", None) or getattr(module, "VERSION_TEXT", None)
            found[name] = {"version": str(version) if version else "unknown", "error": None}
        except Exception as e:  # ImportError, or a library that fails while loading its native part
            found[name] = {"version": None, "error": f"{type(e).__name__}: {e}".splitlines()[0]}  # stdlib only here
    return found


def probe(workdir: str = ".", record_power_mode: bool = True) -> Dict[str, object]:
    """Everything the host checks before shipping, as one JSON-ready dict."""
    tegra = _read("/etc/nv_tegra_release")
    release = l4t_release(tegra) if tegra else None
    libs = libraries()
    providers = None
    if libs["onnxruntime"]["error"] is None:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    return {
        "schema": PROBE_SCHEMA,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "machine": platform.machine(),
        "os": platform.platform(),
        "cpu": _cpu(),
        "cores": os.cpu_count() or 1,
        "memory_gb": _memory_gb(),
        "l4t": release,
        "jetpack": JETPACK_OF_L4T.get(release or ""),
        "cuda": _cuda_version(),
        "gpu": _gpu(),
        "libraries": libs,
        "onnxruntime_providers": providers,
        "workdir": workdir,
        "free_disk_gb": _free_disk_gb(workdir),
        "power_mode": power_mode() if record_power_mode else None,
    }


def device_info(name: str, kind: str, record_power_mode: bool) -> Dict[str, object]:
    """The bench file's `device` record."""
    found = probe(".", record_power_mode)
    libs = found["libraries"]  # type: Dict[str, Dict[str, Optional[str]]]
    return {
        "name": name,
        "kind": kind,
        "cpu": found["cpu"],
        "cores": found["cores"],
        "memory_gb": found["memory_gb"],
        "os": found["os"],
        "python": found["python"],
        "gpu": found["gpu"],
        "power_mode": found["power_mode"],
        "libraries": {k: v["version"] for k, v in libs.items() if v["version"] is not None},
        "l4t": found["l4t"],
        "jetpack": found["jetpack"],
        "cuda": found["cuda"],
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(probe(args[0] if args else ".", record_power_mode="--no-power-mode" not in args)))
