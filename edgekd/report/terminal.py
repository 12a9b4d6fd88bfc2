"""What the terminal shows of a report: the summary table of one device, the unstable-figures warning and
the verdicts of `edgekd run --strict`. Built from the report model (edgekd.report.model), never recomputed;
and the scout's table of one device (`edgekd scout`), from its record."""

from __future__ import annotations

import re
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from edgekd.ondevice import catalog
from edgekd.report.layout import kd_test
from edgekd.report.model import DeviceSection, KdGain
from edgekd.run_records import ScoutTable

WORST_SHOWN = 3
"""How many unstable figures the terminal names; the report lists them all."""


def summary_table(title: str, section: DeviceSection) -> Table:
    """One row per artifact of a device section: top-1, Δ vs teacher, p50 and speed-up at batch 1, size, the budget
    verdict (accuracy and, where the device has one, latency; the recommended artifact is marked; `latency only` for
    the scout's untrained choice, never judged), note."""
    limit = f"; latency budget {section.latency_limit}" if section.latency_limit else ""
    table = Table(title=escape(f"{title} · speed-up vs {catalog.REFERENCE} at batch 1{limit}"))
    for col in ("artifact", "val top-1", "Δ vs teacher", "p50 b=1", "speed-up", "size", "budget"):
        table.add_column(col, justify="left" if col in ("artifact", "budget") else "right", no_wrap=True)
    table.add_column("note", no_wrap=True, overflow="ellipsis", max_width=50)
    for row in section.rows:
        if row.status != "done":
            table.add_row(row.id, "", "", "", "", "", "", escape(f"{row.status}: {row.reason}"[:90]))
            continue
        fig = row.at(1)
        table.add_row(
            row.id,
            f"{row.top1:.2f}%" if row.top1 is not None else "",
            f"{row.top1_delta:+.2f}" if row.top1_delta is not None else "",
            f"{fig.p50_ms:.2f} ms" if fig else "",
            f"{fig.speedup:.2f}×" if fig and fig.speedup else "",
            f"{row.size_bytes / 1e6:.2f} MB" if row.size_bytes else "",
            "latency only" if row.latency_only else row.verdict + (", recommended" if row.recommended else ""),
            escape("; ".join(n for n in (row.note, f"unstable: {fig.unstable}" if fig and fig.unstable else "") if n)),
        )
    return table


def kd_line(kd: KdGain) -> str:
    """What distillation bought, in one line: the report's sentence and its image-by-image test."""
    return (
        f"distillation: {kd.gain:+.2f} points of top-1 over the hard-label baseline "
        f"({kd.distilled_top1:.2f}% against {kd.baseline_top1:.2f}%).{kd_test(kd)}"
    )


def _spread(line: str) -> float:
    """The percentage an unstable figure's rounds differ by ("... differ by 31% ..."), for ordering; 0 if none."""
    found = re.search(r"(\d+(?:\.\d+)?)%", line)
    return float(found.group(1)) if found else 0.0


def unstable_message(unstable: list[str], run_dir: Path, local: str, repeated: bool = False) -> str | None:
    """One short line: how many figures are unstable, the worst few, and how to re-measure them.

    `local` is this machine's device name (benchmark.device_name): other devices are re-measured by
    benchmarking on them again. None when there are no unstable figures.
    """
    if not unstable:
        return None
    worst = sorted(unstable, key=_spread, reverse=True)[:WORST_SHOWN]
    more = f"; {len(unstable) - len(worst)} more in the report" if len(unstable) > len(worst) else ""
    named = f"{len(unstable)} unstable figure{'s' if len(unstable) > 1 else ''} (worst: {'; '.join(worst)}{more})"
    fix = f"`edgekd bench {run_dir} --repeat-unstable`"
    remote = sorted({u.split(":", 1)[0] for u in unstable} - {local})
    if remote:
        fix += f" ({', '.join(remote)}: `edgekd bench {run_dir} --device NAME`)"
    if repeated:
        return f"{named} after re-measuring: stop other busy programs (on a Jetson lock the clocks) and run {fix} again"
    return f"{named}; re-measure them with {fix}"


def strict_failures(metrics: dict, run_dir: Path, local: str) -> list[str]:
    """Why `edgekd run --strict` fails, one line each, from the report stage's metrics ([]: it passes).

    It fails when no deployable artifact meets the accuracy budget (or an artifact failed, or the
    report did not run), on each device whose latency budget no deployable artifact meets together with
    the accuracy budget (one line each, from `latency_unmet`), and when any figure is marked unstable.
    """
    problems = []
    latency = metrics.get("latency_unmet") or []
    if not metrics.get("meets_budget"):
        why = "; ".join(metrics.get("unmet", []) + metrics.get("failed", []))
        if why or not latency:
            problems.append(
                f"no deployable artifact meets the accuracy budget ({why or 'the report stage did not run'})"
            )
        problems += latency
    unstable = unstable_message(metrics.get("unstable") or [], run_dir, local)
    return problems + ([unstable] if unstable else [])


def scout_table(table: ScoutTable) -> Table:
    """The scout's candidates on one device, fastest first, then those not timed: p50 and the spread of its rounds
    (slowest - fastest round median, over their mean), params, MACs, within the latency budget or not, and why a
    candidate was not timed or is unstable."""
    budget = f"budget {table.budget_ms:g} ms" if table.budget_ms is not None else "no latency budget"
    title = f"scout · {table.device} · {table.runtime} {table.precision} · batch {table.batch_size} · {budget}"
    out = Table(title=escape(title))
    for col in ("candidate", "p50 (ms)", "spread", "params (M)", "MACs (M)", "budget"):
        out.add_column(col, justify="left" if col == "candidate" else "right", no_wrap=True)
    out.add_column("note", overflow="fold", max_width=70)
    for e in table.timed():
        mark = table.mark(e) or "—"
        lat = e.latency
        row = f"{e.artifact} ({e.runtime})" if e.artifact else ""  # on a device: the row judged, and what ran it
        note = "; ".join(
            n for n in ("cached" if e.cached else "", row, f"unstable: {lat.unstable}" if lat.unstable else "") if n
        )
        out.add_row(
            escape(e.candidate),
            f"{e.p50_ms:.3f}",
            f"{lat.spread:.0%}",
            f"{e.params / 1e6:.3f}" if e.params is not None else "",
            f"{e.macs / 1e6:.1f}" if e.macs is not None else "",
            mark,
            escape(note),
        )
    for e in (e for e in table.entries if e.status != "done"):
        out.add_row(escape(e.candidate), "", "", "", "", "", escape(f"{e.status}: {e.reason}"))
    return out
