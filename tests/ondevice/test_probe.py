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


# `jetson_clocks --show` as the L4T 32/35 script prints it (its show() function: one line per CPU,
# then GPU and EMC with MinFreq/MaxFreq/CurrentFreq, Orin adds DLA lines); frequencies in kHz (CPU), Hz (others).
XAVIER_SHOW_UNLOCKED = """SOC family:tegra194  Machine:Jetson-AGX
Online CPUs: 0-7
cpu0: Online=1 Governor=schedutil MinFreq=1190400 MaxFreq=2265600 CurrentFreq=1190400 IdleStates: C1=1 c6=1
cpu1: Online=1 Governor=schedutil MinFreq=1190400 MaxFreq=2265600 CurrentFreq=2265600 IdleStates: C1=1 c6=1
GPU MinFreq=114750000 MaxFreq=1377000000 CurrentFreq=114750000
EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=0
Fan: PWM=0
NV Power Mode: MAXN
"""
ORIN_SHOW_LOCKED = """SOC family:tegra234  Machine:Jetson AGX Orin
Online CPUs: 0-11
cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0
cpu11: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0
GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
DLA0_CORE MinFreq=1600000000 MaxFreq=1600000000 CurrentFreq=1600000000
NV Power Mode: MAXN
"""


def test_jetson_clocks_show_is_parsed_and_locked_state_found():
    unlocked = probe.parse_jetson_clocks(XAVIER_SHOW_UNLOCKED)
    assert unlocked["locked"] is False
    assert unlocked["cpus"]["cpu0"] == {
        "online": True,
        "governor": "schedutil",
        "min": 1190400,
        "max": 2265600,
        "cur": 1190400,
    }
    assert unlocked["units"]["GPU"] == {"min": 114750000, "max": 1377000000, "cur": 114750000}
    locked = probe.parse_jetson_clocks(ORIN_SHOW_LOCKED)
    assert locked["locked"] is True and set(locked["units"]) == {"GPU", "EMC", "DLA0_CORE"}
    assert probe.parse_jetson_clocks("jetson_clocks: must be run as root")["locked"] is None


def test_thermal_zones_and_passive_trip_points(tmp_path):
    def zone(i, kind, milli_c, trips):
        folder = tmp_path / f"thermal_zone{i}"
        folder.mkdir()
        (folder / "type").write_text(kind + "\n")
        (folder / "temp").write_text(f"{milli_c}\n")
        for k, (trip, limit) in enumerate(trips):
            (folder / f"trip_point_{k}_type").write_text(trip + "\n")
            (folder / f"trip_point_{k}_temp").write_text(f"{limit}\n")

    zone(0, "CPU-therm", 97500, [("critical", 102000), ("passive", 97000)])  # hot
    zone(1, "GPU-therm", 41000, [("passive", 97000)])
    zone(2, "PMIC-Die", 100000, [])  # no trip points
    got = probe.thermal(str(tmp_path))
    assert got == {"temps_c": {"CPU-therm": 97.5, "GPU-therm": 41.0, "PMIC-Die": 100.0}, "throttling": ["CPU-therm"]}


def test_jetson_state_on_a_host_without_jetson_tools():
    state = probe.jetson_state(record_power_mode=False)
    assert set(state) == {"power_mode", "clocks", "clocks_locked", "temps_c", "throttling"}
    if probe.find_tool("jetson_clocks") is None:
        assert state["clocks"] is None and state["clocks_locked"] is None
