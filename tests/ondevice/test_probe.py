"""probe.py: what a device has, read here on a machine without TensorRT."""

import json
import subprocess
import sys
from pathlib import Path

from edgekd.ondevice import probe


def test_l4t_release_from_nv_tegra_release():
    line = "# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, DATE: Sun Mar 19 15:19:21 UTC 2023"
    assert probe.l4t_release(line) == "35.3.1"
    assert probe.JETPACK_OF_L4T[probe.l4t_release(line)] == "5.1.1"
    assert probe.l4t_release("# R32 (release), REVISION: 7") == "32.7.0"
    assert probe.l4t_release("not a tegra release file") is None


def test_probe_script_runs_alone_from_stdin(tmp_path):
    """The host sends probe.py on stdin; it must run without the package around it."""
    source = Path(probe.__file__).read_bytes()
    proc = subprocess.run(
        [sys.executable, "-I", "-", str(tmp_path), "--no-power-mode"], input=source, capture_output=True, check=True
    )
    found = json.loads(proc.stdout)
    assert found["schema"] == probe.PROBE_SCHEMA
    assert found["python"] == ".".join(map(str, sys.version_info[:3]))
    assert found["libraries"]["numpy"]["version"] and found["libraries"]["numpy"]["error"] is None
    assert found["workdir"] == str(tmp_path) and found["free_disk_gb"] > 0
    assert found["power_mode"] is None
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        assert found["libraries"]["tensorrt"] == {"version": None, "error": f"ModuleNotFoundError: {e}"}


def test_device_info_has_the_bench_schema_fields():
    info = probe.device_info("xav", "jetson-agx-xavier", record_power_mode=False)
    for key in ("name", "kind", "cpu", "cores", "memory_gb", "os", "python", "gpu", "power_mode", "libraries"):
        assert key in info
    assert info["name"] == "xav" and info["cores"] >= 1 and info["memory_gb"] > 0
    assert "numpy" in info["libraries"]
