"""Write a report model to report.json, report.md, report.html and the PNG figures beside them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgekd.config import BudgetConfig
from edgekd.ondevice import catalog
from edgekd.ondevice.files import write_text_atomic
from edgekd.report import plots
from edgekd.report.build import build_report
from edgekd.report.layout import (
    CURVES,
    FigureFile,
    document,
    energy_name,
    scatter_name,
    scout_name,
    sensitivity_name,
    sweep_name,
    sweep_setting,
)
from edgekd.report.model import Report
from edgekd.report.render_html import render_html
from edgekd.report.render_md import render_markdown


@dataclass
class ReportFiles:
    """The model a report was rendered from and the files it was written to."""

    report: Report
    markdown: Path
    html: Path
    json: Path


def figures(report: Report, out_dir: Path) -> dict[str, FigureFile]:
    """Every figure of the report as a PNG in `out_dir`, by the name the layout refers to it."""
    out: dict[str, FigureFile] = {}
    for d in report.devices:
        rows = [r for r in d.rows if r.top1 is not None and r.at(d.primary_batch) is not None]
        budget = [None if r.budget == "n/a" else r.budget == "within" for r in rows]
        figs = [r.at(d.primary_batch) for r in rows]
        plots_of = [(scatter_name(d), [f.p50_ms for f in figs], [r.pareto for r in rows], "p50 latency", "ms")]
        if d.energy:
            plots_of.append(
                (energy_name(d), [f.energy_mj for f in figs], [r.pareto_energy for r in rows], "energy", "mJ/img")
            )
        for name, costs, front, what, unit in plots_of if rows else []:
            points = [plots.Point(r.id, c, r.top1, p, b) for r, c, p, b in zip(rows, costs, front, budget)]
            path = out_dir / f"{name}.png"
            png, dropped = plots.accuracy_scatter(
                points, f"{d.key}: top-1 vs {what}", f"{what} at batch {d.primary_batch} ({unit}, log scale)", path
            )
            out[name] = FigureFile(path, png, dropped)
    for run in report.runs:
        for table in run.scout.tables if run.scout else []:
            path = out_dir / f"{scout_name(run, table.device)}.png"
            png, dropped = plots.scout_scatter(table, path)
            out[scout_name(run, table.device)] = FigureFile(path, png, dropped)
        if run.sensitivity:
            path = out_dir / f"{sensitivity_name(run)}.png"
            png = plots.sensitivity_bars(run.sensitivity, path)
            out[sensitivity_name(run)] = FigureFile(path, png, [])
        setting = sweep_setting(run)
        if run.sweep and setting:
            path = out_dir / f"{sweep_name(run)}.png"
            png = plots.sweep_scatter(run.sweep, setting, run.sweep_importance.get(setting), path)
            out[sweep_name(run)] = FigureFile(path, png, [])
    curves = {run.label: run.curves for run in report.runs if run.curves}
    if curves:
        path = out_dir / f"{CURVES}.png"
        out[CURVES] = FigureFile(path, plots.distillation_curves(curves, path), [])
    return out


def write_report(
    run_dirs: list[Path], out_dir: Path, budget: BudgetConfig, omit_stage: str | None = None
) -> ReportFiles:
    """Build the model of one or several runs and render it into `out_dir` (see build.build_report)."""
    report = build_report(run_dirs, budget, omit_stage)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = figures(report, out_dir)
    blocks = document(report, figs)
    name = {a: Path(catalog.path_of(a)).name for a in ("report_md", "report_html", "report_json")}
    files = ReportFiles(
        report, out_dir / name["report_md"], out_dir / name["report_html"], out_dir / name["report_json"]
    )
    write_text_atomic(files.json, json.dumps(report.to_dict(), indent=2) + "\n")
    write_text_atomic(files.markdown, render_markdown(blocks, figs))
    write_text_atomic(files.html, render_html(blocks, figs, report.title))
    return files
