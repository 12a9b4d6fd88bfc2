"""Report figures (matplotlib, Agg canvas, no global pyplot state): accuracy vs latency, distillation curves."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from edgekd.artifacts import write_bytes_atomic


@dataclass
class Point:
    """One artifact on the accuracy-vs-latency plane."""

    label: str
    latency_ms: float
    top1: float
    pareto: bool
    within_budget: bool | None


def pareto_front(latencies: list[float], accuracies: list[float]) -> list[bool]:
    """True where no other point is at least as fast and at least as accurate, and strictly better in one."""
    front = []
    for i, (li, ai) in enumerate(zip(latencies, accuracies)):
        dominated = any(
            lj <= li and aj >= ai and (lj < li or aj > ai)
            for j, (lj, aj) in enumerate(zip(latencies, accuracies))
            if j != i
        )
        front.append(not dominated)
    return front


def save_png(fig: Figure, path: Path) -> bytes:
    """Render `fig` to PNG, write it to `path` atomically and return the bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = buf.getvalue()
    write_bytes_atomic(path, data)
    return data


def accuracy_latency_scatter(points: list[Point], title: str, xlabel: str, path: Path) -> bytes:
    """Top-1 against p50 latency (log x), Pareto front joined by a line, over-budget points hollow."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for p in points:
        filled = p.within_budget is not False
        ax.scatter(
            p.latency_ms,
            p.top1,
            s=60,
            marker="o" if p.pareto else "s",
            facecolors="tab:blue" if filled else "none",
            edgecolors="tab:red" if p.pareto else "tab:blue",
            linewidths=1.5,
            zorder=3,
        )
        ax.annotate(p.label, (p.latency_ms, p.top1), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = sorted((p for p in points if p.pareto), key=lambda p: p.latency_ms)
    if len(front) > 1:
        ax.plot(
            [p.latency_ms for p in front],
            [p.top1 for p in front],
            "--",
            color="tab:red",
            label="Pareto front",
            zorder=2,
        )
        ax.legend(loc="lower right", fontsize=8)
    if points and min(p.latency_ms for p in points) > 0:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short ranges
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=10)
    fig.text(
        0.01,
        -0.02,
        "circle: on the Pareto front, square: dominated; filled: within the accuracy budget, hollow: over it",
        fontsize=7,
    )
    ax.grid(True, alpha=0.3, which="both")
    return save_png(fig, path)


def distillation_curves(curves: dict[str, list[dict]], path: Path) -> bytes:
    """Student val top-1 and teacher-student KL per epoch, one line per run."""
    fig = Figure(figsize=(10, 3.8))
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
    return save_png(fig, path)
