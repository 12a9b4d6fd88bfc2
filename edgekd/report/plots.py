"""Report figures (matplotlib, Agg canvas, no global pyplot state): accuracy vs latency (or energy per image),
distillation curves, per-layer quantization sensitivity, the scout's MACs vs latency.

Point labels are placed so that none overlaps another label, a marker or the axes' edge; a label
that finds no free place is dropped and returned, so the caller can list it beside the figure.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import Bbox

from edgekd.ondevice.files import write_bytes_atomic
from edgekd.report.model import Sensitivity
from edgekd.run_records import ScoutTable

DPI = 110
MARKER_PX = 6  # half the size of a marker's box, in pixels


@dataclass
class Point:
    """One artifact on the accuracy-vs-cost plane; `cost` is p50 latency (ms) or energy per image (mJ)."""

    label: str
    cost: float
    top1: float
    pareto: bool
    within_budget: bool | None


def save_png(fig: Figure, path: Path) -> bytes:
    """Render `fig` to PNG, write it to `path` atomically and return the bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    data = buf.getvalue()
    write_bytes_atomic(path, data)
    return data


def _candidates() -> list[tuple[float, float]]:
    """Label offsets from the point (in points), nearest first; far ones get a leader line."""
    out = []
    for r in (1.0, 2.2, 3.6):
        for dx, dy in ((6, 3), (6, -11), (-6, 3), (-6, -11), (0, 9), (0, -17)):
            out.append((dx * r, dy * r))
    return out


def place_labels(ax, xs: list[float], ys: list[float], labels: list[str], fontsize: float = 7) -> list[Text | None]:
    """Annotate each (x, y) with its label where the label overlaps no other label, marker or the axes edge.

    Returns the placed Text per point, None where no free place was found (the label is left out).
    """
    fig = ax.figure
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    fig.draw(renderer)  # settle the limits and scales before measuring
    frame = ax.get_window_extent(renderer)
    centres = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    taken = [Bbox.from_extents(cx - MARKER_PX, cy - MARKER_PX, cx + MARKER_PX, cy + MARKER_PX) for cx, cy in centres]
    placed: list[Text | None] = []
    for x, y, label in zip(xs, ys, labels):
        found = None
        for dx, dy in _candidates():
            far = abs(dx) > 8 or abs(dy) > 18
            text = ax.annotate(
                label,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=fontsize,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if far else None,
            )
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer)  # the text alone, without the leader line
            if (
                frame.contains(box.x0, box.y0)
                and frame.contains(box.x1, box.y1)
                and not any(box.overlaps(t) for t in taken)
            ):
                taken.append(box)
                found = text
                break
            text.remove()
        placed.append(found)
    return placed


def accuracy_scatter(points: list[Point], title: str, xlabel: str, path: Path) -> tuple[bytes, list[str]]:
    """Top-1 against a cost (latency or energy, log x), Pareto front joined by a line, over-budget points hollow.

    Returns the PNG and the labels that had no free place (the caller lists them under the figure).
    """
    fig = Figure(figsize=(7.5, 4.6), dpi=DPI)
    ax = fig.add_subplot()
    for p in points:
        ax.scatter(
            p.cost,
            p.top1,
            s=40,
            marker="o" if p.pareto else "s",
            facecolors="tab:blue" if p.within_budget is not False else "none",
            edgecolors="tab:red" if p.pareto else "tab:blue",
            linewidths=1.5,
            zorder=3,
        )
    front = sorted((p for p in points if p.pareto), key=lambda p: p.cost)
    if len(front) > 1:
        ax.plot([p.cost for p in front], [p.top1 for p in front], "--", color="tab:red", zorder=2)
    if points and min(p.cost for p in points) > 0:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # labelled ticks on short ranges too
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # unlabelled minor ticks: their labels would collide
    if points:  # room for labels at the edges
        ax.margins(x=0.25, y=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    fig.text(
        0.01,
        -0.02,
        "circle: on the Pareto front (red dashes), square: dominated; filled: within the accuracy budget, hollow: over",
        fontsize=7,
    )
    placed = place_labels(ax, [p.cost for p in points], [p.top1 for p in points], [p.label for p in points])
    dropped = [p.label for p, t in zip(points, placed) if t is None]
    return save_png(fig, path), dropped


def distillation_curves(curves: dict[str, list[dict]], path: Path) -> bytes:
    """Student val top-1 and teacher-student KL per epoch, one line per run."""
    fig = Figure(figsize=(10, 3.6), dpi=DPI)
    ax_acc, ax_kl = fig.subplots(1, 2)
    for label, rows in curves.items():
        epochs = [r["epoch"] for r in rows]
        if any(r.get("val_top1") is not None for r in rows):
            ax_acc.plot(epochs, [r.get("val_top1") for r in rows], marker=".", label=label)
        if any(r.get("val_kl") is not None for r in rows):
            ax_kl.plot(epochs, [r.get("val_kl") for r in rows], marker=".", label=label)
    ax_acc.set(xlabel="epoch", ylabel="student val top-1 (%)", title="Student accuracy")
    ax_kl.set(xlabel="epoch", ylabel="KL(teacher || student)", title="Teacher-student KL")
    for ax in (ax_acc, ax_kl):
        ax.grid(True, alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def sensitivity_bars(sens: Sensitivity, path: Path) -> bytes:
    """Per-layer quantization sensitivity: top-1 with that layer alone float (the rest int8), most
    sensitive layer on top, with the fp32 and all-int8 top-1 as lines."""
    layers = sens.layers[::-1]  # barh draws the first bar at the bottom
    fig = Figure(figsize=(7.5, 0.8 + 0.28 * len(layers)), dpi=DPI)
    ax = fig.add_subplot()
    ax.barh([s.layer for s in layers], [s.top1 for s in layers], color="tab:blue")
    lines = [(sens.fp32_top1, "tab:red", "--", "fp32"), (sens.int8_top1, "tab:gray", ":", "all int8")]
    shown = [(v, c, ls, label) for v, c, ls, label in lines if v is not None]
    for value, color, style, label in shown:
        ax.axvline(value, color=color, linestyle=style, lw=1, label=f"{label} {value:.2f}%")
    low = min([s.top1 for s in layers] + [v for v, *_ in shown])
    ax.set_xlim(max(0.0, low - 2.0), 100.0)
    ax.set_xlabel("top-1 (%) on training images with this layer alone float, the rest int8")
    if shown:
        ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Quantization sensitivity per layer", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def sweep_scatter(rows: list, setting: str, importance: float | None, path: Path) -> bytes:
    """Each sweep trial's selection top-1 against one searched setting (the most important), the winner marked."""
    fig = Figure(figsize=(6, 3.6), dpi=DPI)
    ax = fig.add_subplot()
    done = [r for r in rows if r.selection_top1 is not None and setting in r.settings]
    for state, marker in (("complete", "o"), ("pruned", "x")):
        pts = [r for r in done if r.state == state and not r.best]
        ax.scatter([r.settings[setting] for r in pts], [r.selection_top1 for r in pts], marker=marker, label=state)
    best = [r for r in done if r.best]
    if best:
        ax.scatter(
            [best[0].settings[setting]], [best[0].selection_top1], marker="*", s=160, color="tab:red", label="best"
        )
    share = f" ({importance:.0%} of the variance)" if importance is not None else ""
    ax.set(xlabel=f"{setting}{share}", ylabel="selection top-1 (%)", title="Sweep: selection score per trial")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def scout_scatter(table: ScoutTable, path: Path) -> tuple[bytes, list[str]]:
    """The scout's candidates on one device: MACs against p50 latency (both log), the Pareto front (fewer ms, more
    MACs) joined, the latency budget as a vertical line, candidates over it hollow. Returns the PNG and the labels
    that had no free place."""
    fig = Figure(figsize=(7.5, 4.6), dpi=DPI)
    ax = fig.add_subplot()
    timed = [e for e in table.timed() if e.macs]
    front = set(table.pareto())
    for e in timed:
        on_front = e.candidate in front
        ax.scatter(
            e.p50_ms,
            e.macs / 1e6,
            s=40,
            marker="o" if on_front else "s",
            facecolors="tab:blue" if e.within_budget is not False else "none",
            edgecolors="tab:red" if on_front else "tab:blue",
            linewidths=1.5,
            zorder=3,
        )
    line = sorted((e for e in timed if e.candidate in front), key=lambda e: e.p50_ms)
    if len(line) > 1:
        ax.plot([e.p50_ms for e in line], [e.macs / 1e6 for e in line], "--", color="tab:red", zorder=2)
    if table.budget_ms is not None:
        ax.axvline(table.budget_ms, color="tab:gray", linestyle=":", lw=1.2, label=f"budget {table.budget_ms:g} ms")
        if table.headroom:
            ax.axvline(
                table.limit_ms, color="tab:gray", linestyle="--", lw=1.0, label=f"less {table.headroom:.0%} headroom"
            )
        ax.legend(fontsize=7, loc="lower right")
    if timed:
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # labelled ticks on short ranges too, unlabelled minor ones
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.25, y=0.2)
    ax.set_xlabel(f"p50 latency at batch {table.batch_size} (ms, log scale), {table.runtime} {table.precision}")
    ax.set_ylabel("MACs per image (M, log scale)")
    ax.set_title(f"{table.device}: scout candidates, MACs vs latency", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    fig.text(
        0.01,
        -0.02,
        "circle: on the Pareto front (red dashes), square: dominated; filled: within the latency budget, hollow: over",
        fontsize=7,
    )
    placed = place_labels(ax, [e.p50_ms for e in timed], [e.macs / 1e6 for e in timed], [e.candidate for e in timed])
    return save_png(fig, path), [e.candidate for e, t in zip(timed, placed) if t is None]
