"""Board power from tegrastats: a parser of its lines and a background sampler for the bench (Python 3.8, stdlib).

tegrastats prints the INA3221 power monitors' rails as `NAME current/average`: in milliwatts
without a unit up to L4T 32 (JetPack 4: Nano `POM_5V_IN 2237/2237`, Xavier NX `VDD_IN 4990/4990`,
AGX Xavier `GPU 0/0 CPU 310/310 SOC 1241/1241 ...`), with `mW` from L4T 34 on (JetPack 5/6: AGX Orin
`VDD_GPU_SOC 2395mW/2395mW VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 2825mW/2825mW`, Orin Nano
`VDD_IN 4974mW/4974mW ...`). The board's power is its input rail where tegrastats reports one
(VDD_IN, POM_5V_IN), else the sum of the rails it reports (AGX Xavier, AGX Orin): `basis` says which.
"""

import os
import re
import shutil
import subprocess
import threading
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from .measure import PowerMonitor, Window

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
"""Rails that measure the whole module's input; when one is present it is the board's power."""

_RAIL = re.compile(r"(?:^|\s)([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")


def parse_line(line: str) -> Dict[str, float]:
    """{rail: current watts} of one tegrastats line ({} when it reports no rails)."""
    return {m.group(1): int(m.group(2)) / 1000.0 for m in _RAIL.finditer(line.strip())}


def board_power(rails: Dict[str, float]) -> Optional[Tuple[float, str]]:
    """(watts, basis) of one sample: the input rail when there is one, else the sum of all rails; None without rails."""
    if not rails:
        return None
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name], name
    return sum(rails.values()), "sum of " + "+".join(sorted(rails))


class TegrastatsMonitor(PowerMonitor):
    """Runs `tegrastats --interval N` while figures are taken and keeps (arrival time, rails) of each line."""

    def __init__(self, tool: str, interval_ms: int = 100) -> None:
        self.tool = tool
        self.interval_ms = interval_ms
        self.samples = []  # type: List[Tuple[float, Dict[str, float]]]
        self.process = None  # type: Optional[subprocess.Popen]
        self.reader = None  # type: Optional[threading.Thread]

    @classmethod
    def if_available(cls, interval_ms: int = 100) -> PowerMonitor:
        """A tegrastats sampler on a Jetson, else the base monitor that measures nothing (figures say n/a)."""
        tool = shutil.which("tegrastats") or next((p for p in ("/usr/bin/tegrastats",) if os.path.exists(p)), None)
        return cls(tool, interval_ms) if tool else PowerMonitor()

    def _read(self) -> None:
        for line in self.process.stdout:
            rails = parse_line(line)
            if rails:
                self.samples.append((time.monotonic(), rails))

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.tool, "--interval", str(self.interval_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)
        self.process = None

    def mean_power(self, windows: Sequence[Window]) -> Optional[Dict[str, Any]]:
        inside = [rails for t, rails in self.samples if any(t0 <= t <= t1 for t0, t1 in windows)]
        return mean_of(inside)

    def describe(self) -> Optional[Dict[str, Any]]:
        every = mean_of([rails for _, rails in self.samples])
        return {"source": "tegrastats", "interval_ms": self.interval_ms, "samples": len(self.samples), **(every or {})}


def mean_of(samples: Sequence[Dict[str, float]]) -> Optional[Dict[str, Any]]:
    """{"power_w", "basis", "rails": {name: W}, "samples": n} averaged over rail samples; None when there are none."""
    powers = [board_power(s) for s in samples]
    powers = [p for p in powers if p is not None]
    if not powers:
        return None
    names = sorted({name for s in samples for name in s})
    return {
        "power_w": sum(p for p, _ in powers) / len(powers),
        "basis": powers[-1][1],
        "rails": {n: sum(s.get(n, 0.0) for s in samples) / len(samples) for n in names},
        "samples": len(powers),
    }
