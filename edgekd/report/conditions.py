"""What may have disturbed a device's figures, in words: the "Measured under" line and the clocks note.

Reads BenchDoc.conditions and settings as the harness writes them: `before`/`after` are
sysload.snapshot() ({loadavg, busy_processes, governors, cores}), `figures` one {batch_size,
others_cores} per batch size (measure.bench_artifacts), `power` the power monitor's description
(tegrastats: {source, basis, ...} or None), `jetson` the device bench's {before, during, after:
probe.jetson_state(), lock_clocks: {requested, locked_by_bench, error}} (ondevice/bench.py) and
`repeats_of_unstable` one entry per re-measurement (bench/benchmark.remeasure_unstable).
A bench file comes back from devices, so every value is type-checked; what is missing is "unknown".
"""

from __future__ import annotations

from typing import Any

DVFS = "figures may move with DVFS; set `lock_clocks: true` in devices.yaml"
CLOCKS_NOT_LOCKED = "clocks not locked: " + DVFS


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _load(conditions: dict[str, Any]) -> str:
    """1-minute load average before and after, against the core count."""
    before, after = _dict(conditions.get("before")), _dict(conditions.get("after"))
    loads = [_num((_list(s.get("loadavg")) or [None])[0]) for s in (before, after)]
    if loads == [None, None]:
        return "load unknown"
    cores = _num(before.get("cores")) or _num(after.get("cores"))
    text = "load {} before, {} after".format(*("?" if x is None else f"{x:.2f}" for x in loads))
    return text + (f" (1-min average, {cores:g} cores)" if cores else " (1-min average)")


def _others(conditions: dict[str, Any]) -> str | None:
    """CPU other processes used while each batch size was timed (what marks figures unstable)."""
    parts = []
    for fig in _list(conditions.get("figures")):
        cores, batch = _num(_dict(fig).get("others_cores")), _dict(fig).get("batch_size")
        if cores is not None and isinstance(batch, int):
            parts.append(f"b{batch} {cores:.2f} cores")
    return "others' CPU while timing " + ", ".join(parts) if parts else None


def _busy(conditions: dict[str, Any], most: int = 3) -> str:
    """Other busy processes (>= 20% of a core) seen before and after, busiest first."""
    seen = {}
    for when in ("before", "after"):
        procs = _dict(conditions.get(when)).get("busy_processes")
        if not isinstance(procs, list):
            seen[when] = None
            continue
        names = [
            f"{p['name']} ({_num(p.get('cores')) or 0:.1f} cores)"
            for p in procs
            if isinstance(p, dict) and isinstance(p.get("name"), str)
        ]
        seen[when] = ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
    if seen["before"] is None and seen["after"] is None:
        return "other busy processes unknown"
    if not seen["before"] and not seen["after"]:
        return "no other busy process before or after"
    return "busy processes before: {}; after: {}".format(
        *("unknown" if seen[w] is None else seen[w] or "none" for w in ("before", "after"))
    )


def _governor(conditions: dict[str, Any]) -> str:
    govs = {k: v for k, v in _dict(_dict(conditions.get("before")).get("governors")).items() if isinstance(v, int)}
    if not govs:
        return "CPU governor unknown"
    if len(govs) == 1:
        return f"CPU governor {next(iter(govs))}"
    return "CPU governors " + ", ".join(f"{g} ({n} CPUs)" for g, n in govs.items())


def clocks_locked(conditions: dict[str, Any]) -> bool | None:
    """Whether the Jetson's clocks were locked while figures were taken (None: not a device bench, or unknown)."""
    jetson = _dict(conditions.get("jetson"))
    for state in (jetson.get("during"), jetson.get("before")):
        locked = _dict(state).get("clocks_locked")
        if isinstance(locked, bool):
            return locked
    return None


def _hottest(state: Any) -> str | None:
    temps = {k: v for k, v in _dict(_dict(state).get("temps_c")).items() if _num(v) is not None}
    if not temps:
        return None
    zone = max(temps, key=lambda k: temps[k])
    return f"{temps[zone]:.1f} °C ({zone})"


def _jetson(conditions: dict[str, Any], system: dict[str, Any]) -> list[str]:
    """Power mode, clocks, hottest zone before and after, throttling: only for a device bench (`conditions.jetson`)."""
    jetson = _dict(conditions.get("jetson"))
    if not jetson:
        return []
    before, after = _dict(jetson.get("before")), _dict(jetson.get("after"))
    parts = []
    mode = before.get("power_mode") or system.get("power_mode")
    parts.append(f"power mode {mode}" if isinstance(mode, str) else "power mode unknown")
    lock = _dict(jetson.get("lock_clocks"))
    locked = clocks_locked(conditions)
    if locked and lock.get("locked_by_bench"):
        parts.append("clocks locked by the bench (lock_clocks)")
    elif locked:
        parts.append("clocks locked")
    else:
        state = "clocks NOT locked" if locked is False else "clock state unknown (`jetson_clocks --show` did not run)"
        if isinstance(lock.get("error"), str):
            state += f" (lock_clocks failed: {lock['error']})"
        parts.append(state)
    temps = [_hottest(before), _hottest(after)]
    if any(temps):
        parts.append("hottest zone {} before, {} after".format(*(t or "unknown" for t in temps)))
    hot = []
    for when in ("before", "during", "after"):
        zones = [z for z in _list(_dict(jetson.get(when)).get("throttling")) if isinstance(z, str)]
        hot += [f"{z} ({when})" for z in zones]
    parts.append("THROTTLING seen: " + ", ".join(hot) if hot else "no throttling seen")
    return parts


def measured_under(conditions: dict[str, Any], settings: dict[str, Any], system: dict[str, Any]) -> str:
    """One line: load, other processes, governor, threads; on a device bench power mode, clocks, temperatures."""
    parts = [_load(conditions)]
    others = _others(conditions)
    if others:
        parts.append(others)
    parts += [_busy(conditions), _governor(conditions)]
    threads = settings.get("threads")
    parts.append(f"{threads} CPU threads" if isinstance(threads, int) else "CPU threads unknown")
    parts += _jetson(conditions, system)
    power = _dict(conditions.get("power"))
    if isinstance(power.get("source"), str):
        basis = power.get("basis")
        parts.append(f"power from {power['source']}" + (f" ({basis})" if isinstance(basis, str) else ""))
    repeats = len(_list(conditions.get("repeats_of_unstable")))
    if repeats:
        parts.append(f"unstable figures re-measured {repeats} time{'s' if repeats > 1 else ''}")
    return "; ".join(parts)


def clocks_note(conditions: dict[str, Any], kind: str) -> str | None:
    """The note beside a Jetson's figures when its clocks were not locked (or could not be read on a Jetson)."""
    locked = clocks_locked(conditions)
    if locked is False:
        return CLOCKS_NOT_LOCKED
    if locked is None and "jetson" in conditions and kind.startswith("jetson"):
        return "clock state unknown (`jetson_clocks --show` did not run): " + DVFS
    return None
