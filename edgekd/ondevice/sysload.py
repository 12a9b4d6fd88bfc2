"""What else the machine is doing while figures are taken: load, other busy processes, CPU governor (Linux /proc, /sys).

Python 3.8, stdlib only (host and device). Everything degrades to None where /proc or /sys is
missing (macOS, containers that hide them): "not known", never "quiet".
"""

import os
import time
from typing import Dict, List, Optional, Tuple

BUSY_PROCESS_SHARE = 0.2
"""A process counts as busy when it used at least this share of one core while sampled."""


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


def cpu_busy_seconds() -> Optional[float]:
    """Seconds of CPU time all processes have used since boot (non-idle time of /proc/stat), or None."""
    text = _read("/proc/stat")
    if not text or not text.startswith("cpu "):
        return None
    fields = [int(x) for x in text.splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy = user + nice + system + irq + softirq
    return (sum(fields[0:3]) + sum(fields[5:7])) / float(_clock_ticks())


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    t = os.times()
    return t.user + t.system


class OthersMeter:
    """CPU used by every other process between `start()` and `stop()`, in cores (1.0 = one core fully busy)."""

    def __init__(self) -> None:
        self.begin = None  # type: Optional[Tuple[float, float, float]]

    def start(self) -> None:
        busy = cpu_busy_seconds()
        self.begin = None if busy is None else (time.monotonic(), busy, own_cpu_seconds())

    def stop(self) -> Optional[float]:
        busy = cpu_busy_seconds()
        if self.begin is None or busy is None:
            return None
        t0, busy0, own0 = self.begin
        wall = time.monotonic() - t0
        if wall <= 0:
            return None
        return max(0.0, ((busy - busy0) - (own_cpu_seconds() - own0)) / wall)


def _process_times() -> Dict[int, Tuple[str, int]]:
    """{pid: (command name, utime + stime ticks)} of every readable process."""
    out = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        text = _read(f"/proc/{entry}/stat")
        if not text or ")" not in text:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        rest = text[text.rindex(")") + 2 :].split()
        try:
            out[int(entry)] = (name, int(rest[11]) + int(rest[12]))  # fields 14 and 15 of proc(5)
        except (IndexError, ValueError):
            continue
    return out


def busy_processes(window_s: float = 0.5) -> Optional[List[Dict[str, object]]]:
    """Other processes that used at least BUSY_PROCESS_SHARE of a core over `window_s`, busiest first; None without /proc."""
    if not os.path.isdir("/proc"):
        return None
    before = _process_times()
    t0 = time.monotonic()
    time.sleep(window_s)
    after = _process_times()
    wall = time.monotonic() - t0
    me = os.getpid()
    ticks = float(_clock_ticks())
    busy = []
    for pid, (name, used) in after.items():
        if pid == me or pid not in before:
            continue
        share = (used - before[pid][1]) / ticks / wall
        if share >= BUSY_PROCESS_SHARE:
            busy.append({"pid": pid, "name": name, "cores": round(share, 2)})
    return sorted(busy, key=lambda p: -float(p["cores"]))


def governors() -> Optional[Dict[str, int]]:
    """{CPU frequency governor: number of CPUs using it}, or None where cpufreq is not exposed."""
    base = "/sys/devices/system/cpu"
    found = {}  # type: Dict[str, int]
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if entry.startswith("cpu") and entry[3:].isdigit():
            text = _read(os.path.join(base, entry, "cpufreq", "scaling_governor"))
            if text:
                found[text.strip()] = found.get(text.strip(), 0) + 1
    return found or None


def snapshot(window_s: float = 0.5) -> Dict[str, object]:
    """Load averages (1, 5, 15 min), other busy processes over `window_s`, CPU governors, core count."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]  # type: Optional[List[float]]
    except (OSError, AttributeError):
        load = None
    return {
        "loadavg": load,
        "busy_processes": busy_processes(window_s),
        "governors": governors(),
        "cores": os.cpu_count() or 1,
    }
