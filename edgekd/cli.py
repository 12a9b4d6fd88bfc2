"""The `edgekd` command: run, plan, validate, models (and bench, report, ship, devices)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from edgekd import __version__
from edgekd.config import PipelineConfig, load_pipeline
from edgekd.errors import EdgekdError
from edgekd.pipeline import Manifest, Runner, Selection
from edgekd.progress import Reporter

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Distil, quantize, export and benchmark image classifiers for edge GPUs.")
out = Console()
err = Console(stderr=True)
_debug = False


def _fail(e: EdgekdError) -> None:
    if _debug:
        raise e
    err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of user errors.")) -> None:
    global _debug
    _debug = debug


def _runner(pipeline: Path, run_dir: Optional[Path]) -> Runner:
    from edgekd.stages import all_stages

    cfg = load_pipeline(pipeline)
    return Runner(cfg, all_stages(), run_dir, Reporter(err))


def _summary(cfg: PipelineConfig, manifest: Manifest) -> Table:
    table = Table(title=f"edgekd · {cfg.name}")
    for col in ("model", "role", "val top-1", "params", "size"):
        table.add_column(col, justify="right" if col not in ("model", "role") else "left")
    for stage, role in (("teacher", "teacher"), ("distill", "student")):
        m = manifest.stage(stage).get("metrics", {})
        if m:
            table.add_row(m.get("model", "?"), role, f"{m['val_top1']:.2f}%", f"{m['params']:,}", f"{m['size_bytes'] / 1e6:.2f} MB")
    return table


@app.command()
def run(
    pipeline: Path = typer.Argument(..., help="pipeline.yaml"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (default runs/<name>)."),
    start: Optional[str] = typer.Option(None, "--from", help="Re-run this stage and every later one."),
    only: Optional[str] = typer.Option(None, "--only", help="Run only this stage (its inputs must exist)."),
    force: list[str] = typer.Option([], "--force", help="Re-run this stage even if cached (repeatable)."),
) -> None:
    """Run a pipeline: stages whose config and inputs are unchanged are cached."""
    try:
        runner = _runner(pipeline, run_dir)
        err.print(f"run directory: {runner.run_dir}", highlight=False)
        manifest = runner.run(Selection(only=only, start=start, force=tuple(force)))
    except EdgekdError as e:
        _fail(e)
        return
    out.print(_summary(runner.cfg, manifest))
    out.print(f"manifest: {manifest.path}", highlight=False)


@app.command()
def plan(
    pipeline: Path = typer.Argument(..., help="pipeline.yaml"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir"),
    start: Optional[str] = typer.Option(None, "--from"),
    only: Optional[str] = typer.Option(None, "--only"),
    force: list[str] = typer.Option([], "--force"),
) -> None:
    """Show which stages would run, which are cached, and why."""
    try:
        runner = _runner(pipeline, run_dir)
        entries = runner.plan(Selection(only=only, start=start, force=tuple(force)))
    except EdgekdError as e:
        _fail(e)
        return
    table = Table(title=f"plan · {runner.run_dir}")
    table.add_column("stage")
    table.add_column("action")
    table.add_column("why")
    colour = {"run": "bold", "cached": "green", "skip": "yellow", "leave": "dim"}
    for e in entries:
        table.add_row(e.stage, f"[{colour[e.action]}]{e.action}[/]", e.why)
    out.print(table)


@app.command()
def validate(pipeline: Path = typer.Argument(..., help="pipeline.yaml")) -> None:
    """Check a pipeline file without running anything."""
    try:
        cfg = load_pipeline(pipeline)
    except EdgekdError as e:
        _fail(e)
        return
    out.print(f"[green]ok[/] {pipeline}: pipeline '{cfg.name}', {cfg.data.dataset} → teacher {cfg.teacher.model}, student {cfg.student.model}")


@app.command()
def models() -> None:
    """List the model names a pipeline can use."""
    from edgekd.models import model_names

    for name in model_names():
        out.print(name)


@app.command()
def version() -> None:
    """Print edgekd's version."""
    out.print(__version__)


if __name__ == "__main__":
    sys.exit(app())
