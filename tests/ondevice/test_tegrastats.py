"""tegrastats power rails on the three board families, and the sampler that runs it during a bench.

Recorded lines, written from NVIDIA's documentation of tegrastats and of each module's power rails:
- Nano (L4T 32.x, JetPack 4): "Jetson Nano ... Power Management" and "Appendix: TegraStats" of the L4T 32
  Development Guide (docs.nvidia.com/jetson/archives/l4t-archived/l4t-325/...AppendixTegraStats.html): rails
  POM_5V_IN/POM_5V_GPU/POM_5V_CPU as `current/average` milliwatts without a unit.
- Xavier (L4T 32.x): AGX Xavier rails GPU/CPU/SOC/CV/VDDRQ/SYS5V, Xavier NX rails VDD_IN/VDD_CPU_GPU_CV/VDD_SOC
  (Xavier NX and AGX Xavier "Platform Power and Performance", L4T 32 and r35 guides), no unit.
- Orin (L4T 35/36, JetPack 5/6): AGX Orin rails VDD_GPU_SOC/VDD_CPU_CV/VIN_SYS_5V0/VDDQ_VDD2_1V8AO, Orin Nano
  VDD_IN/VDD_CPU_GPU_CV/VDD_SOC, printed as `NNNmW/NNNmW`, lines led by a date and time (r35.x and r36.x
  "Jetson Orin ... Platform Power and Performance", section on tegrastats and the power monitors).
"""

import os
import stat
import time

import pytest

from edgekd.ondevice import tegrastats
from edgekd.ondevice.measure import PowerMonitor

NANO = (
    "RAM 1772/3956MB (lfb 125x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [12%@1479,3%@1479,5%@1479,2%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 "
    "PLL@30C CPU@32.5C PMIC@100C GPU@31C AO@38C thermal@31.75C POM_5V_IN 2237/2237 POM_5V_GPU 40/40 POM_5V_CPU 489/489"
)
AGX_XAVIER = (
    "RAM 2448/31919MB (lfb 7051x4MB) SWAP 0/15959MB (cached 0MB) CPU [2%@1190,1%@1190,off,off,off,off,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 0% AO@40.5C GPU@40C Tdiode@42.25C PMIC@100C AUX@40C CPU@41.5C thermal@40.6C "
    "GPU 0/0 CPU 310/310 SOC 1241/1241 CV 0/0 VDDRQ 155/155 SYS5V 1595/1595"
)
XAVIER_NX = (
    "RAM 2010/7772MB (lfb 1090x4MB) SWAP 0/3886MB (cached 0MB) CPU [4%@1190,3%@1190,2%@1190,1%@1190,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 0% AUX@33C CPU@35C thermal@34.2C AO@33.5C GPU@33C PMIC@50C "
    "VDD_IN 4990/4990 VDD_CPU_GPU_CV 1015/1015 VDD_SOC 1421/1421"
)
AGX_ORIN = (
    "08-28-2023 10:20:01 RAM 2914/30536MB (lfb 6594x4MB) SWAP 0/15268MB (cached 0MB) "
    "CPU [0%@729,0%@729,0%@729,0%@729,off,off,off,off,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305,305] "
    "VIC_FREQ 729 APE 174 CV0@-256C CPU@44.5C SOC2@41.781C SOC0@42.562C CV1@-256C GPU@-256C tj@44.5C SOC1@41.5C "
    "CV2@-256C VDD_GPU_SOC 2395mW/2395mW VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 2825mW/2825mW VDDQ_VDD2_1V8AO 302mW/302mW"
)
ORIN_NANO = (
    "04-17-2024 09:12:44 RAM 1890/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729,0%@729,0%@729,"
    "0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305] NVDEC off NVJPG off VIC off OFA off APE 200 cpu@45.5C "
    "soc2@44.2C soc0@45C gpu@44.8C tj@46.1C soc1@44.3C VDD_IN 4974mW/4974mW VDD_CPU_GPU_CV 516mW/516mW VDD_SOC 1432mW/1432mW"
)


@pytest.mark.parametrize(
    "line, rails, power, basis",
    [
        (NANO, {"POM_5V_IN": 2.237, "POM_5V_GPU": 0.040, "POM_5V_CPU": 0.489}, 2.237, "POM_5V_IN"),
        (XAVIER_NX, {"VDD_IN": 4.990, "VDD_CPU_GPU_CV": 1.015, "VDD_SOC": 1.421}, 4.990, "VDD_IN"),
        (
            AGX_XAVIER,
            {"GPU": 0.0, "CPU": 0.310, "SOC": 1.241, "CV": 0.0, "VDDRQ": 0.155, "SYS5V": 1.595},
            0.310 + 1.241 + 0.155 + 1.595,
            "sum of CPU+CV+GPU+SOC+SYS5V+VDDRQ",
        ),
        (
            AGX_ORIN,
            {"VDD_GPU_SOC": 2.395, "VDD_CPU_CV": 0.399, "VIN_SYS_5V0": 2.825, "VDDQ_VDD2_1V8AO": 0.302},
            2.395 + 0.399 + 2.825 + 0.302,
            "sum of VDDQ_VDD2_1V8AO+VDD_CPU_CV+VDD_GPU_SOC+VIN_SYS_5V0",
        ),
        (ORIN_NANO, {"VDD_IN": 4.974, "VDD_CPU_GPU_CV": 0.516, "VDD_SOC": 1.432}, 4.974, "VDD_IN"),
    ],
    ids=["nano", "xavier-nx", "agx-xavier", "agx-orin", "orin-nano"],
)
def test_rails_and_board_power_of_each_family(line, rails, power, basis) -> None:
    parsed = tegrastats.parse_line(line)
    assert parsed == pytest.approx(rails)
    assert set(parsed) == set(rails)  # RAM 1772/3956MB, SWAP, IRAM and the temperatures are not rails
    got, got_basis = tegrastats.board_power(parsed)
    assert got == pytest.approx(power) and got_basis == basis


def test_a_line_without_rails_gives_no_power() -> None:
    line = "RAM 1772/3956MB (lfb 125x4MB) SWAP 0/1978MB (cached 0MB) CPU [12%@1479] GR3D_FREQ 0%@921"
    assert tegrastats.parse_line(line) == {} and tegrastats.board_power({}) is None
    assert tegrastats.mean_of([]) is None


def test_mean_of_samples() -> None:
    got = tegrastats.mean_of([{"VDD_IN": 4.0, "VDD_SOC": 1.0}, {"VDD_IN": 6.0, "VDD_SOC": 2.0}])
    assert got == {"power_w": 5.0, "basis": "VDD_IN", "rails": {"VDD_IN": 5.0, "VDD_SOC": 1.5}, "samples": 2}


def test_hosts_without_tegrastats_measure_nothing(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    if os.path.exists("/usr/bin/tegrastats"):
        pytest.skip("a real tegrastats is installed")
    monitor = tegrastats.TegrastatsMonitor.if_available()
    assert type(monitor) is PowerMonitor and monitor.mean_power([(0.0, 1e9)]) is None


def test_sampler_keeps_lines_inside_the_timed_windows(tmp_path) -> None:
    """A stand-in tegrastats (a script printing recorded Orin Nano lines) run by the real sampler."""
    tool = tmp_path / "tegrastats"
    tool.write_text(f"#!/bin/sh\nwhile true; do echo '{ORIN_NANO}'; sleep 0.05; done\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monitor = tegrastats.TegrastatsMonitor(str(tool), interval_ms=50)
    monitor.start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        time.sleep(0.3)
        window = (t0, time.monotonic())
    finally:
        monitor.stop()
    assert monitor.process is None
    got = monitor.mean_power([window])
    assert got["power_w"] == pytest.approx(4.974) and 1 <= got["samples"] < len(monitor.samples)
    assert monitor.mean_power([(0.0, 1.0)]) is None  # no sample in a window long gone
    assert monitor.describe()["source"] == "tegrastats"
