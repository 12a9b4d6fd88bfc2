"""The `edgekd` command: run, plan, validate, models (and bench, report, ship, devices)."""

from __future__ import annotations

import errno
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from edgekd import __version__
from edgekd.config import PipelineConfig, load_pipeline
from edgekd.errors import EdgekdError
from edgekd.progress import Reporter
from edgekd.rundir import RunDir, check_name

if TYPE_CHECKING:  # edgekd.pipeline imports torch (seconds): only the commands that run stages load it
    from edgekd.pipeline import Runner

ENVIRONMENT = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENAMETOOLONG}
"""Errors of the machine, not of edgekd: a full or read-only disk, a folder without write permission."""


class _Commands(TyperGroup):
    """edgekd's commands: a full or read-only disk is one line naming the file, exit 2, like a user error."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except OSError as e:
            if e.errno not in ENVIRONMENT or _debug:
                raise
            where = f"{e.filename}: " if e.filename else ""
            err.print(
                f"[bold red]error:[/] {escape(where)}{escape(e.strerror or str(e))}; finished stages are kept: "
                "free space or fix the permissions and run again",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    help="Distil, quantize, export and benchmark image classifiers for edge GPUs.",
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_debug = False


def _fail(e: EdgekdError) -> None:
    if _debug:
        raise e
    err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # paths may hold "[...]"
    raise typer.Exit(2)


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of user errors.")) -> None:
    global _debug
    _debug = debug


def _runner(pipeline: Path, run_dir: Path | None, storage: str | None = None) -> Runner:
    from edgekd.pipeline import Runner
    from edgekd.stages import all_stages

    cfg = load_pipeline(pipeline)
    if storage is not None and cfg.sweep is not None:  # a bad URL or journal path: said before any stage runs
        from edgekd.search.study import check_storage

        check_storage(storage, cfg.sweep)
    return Runner(cfg, all_stages(), run_dir, Reporter(err), sweep_storage=storage)


_STORAGE_HELP = (
    "The sweep's Optuna storage, shared by every worker: a database URL (postgresql://USER:PASSWORD@HOST/DB, "
    "mysql://..., sqlite:///PATH) or a journal file on a filesystem every worker mounts (journal:///ABS/PATH/study.log); "
    "default: RUN_DIR/distill/study.db. Or set EDGEKD_SWEEP_STORAGE."
)


def _print_summary(cfg: PipelineConfig, run_dir: Path, kd: bool = False) -> None:
    """This machine's rows of the run's report (the same rows, figures and speed-ups the report shows); with `kd`,
    what distillation bought where the run trained a baseline."""
    from edgekd.report.build import build_report
    from edgekd.report.terminal import kd_line, summary_table

    report = build_report([run_dir], cfg.benchmark.budget)
    local = next((d for d in report.devices if d.device == cfg.benchmark.device_name), None)
    if local is not None:
        out.print(summary_table(f"edgekd · {cfg.name}", local))
    gain = report.runs[0].kd if kd and report.runs else None
    if gain is not None:
        out.print(kd_line(gain), highlight=False, markup=False, soft_wrap=True)


@app.command()
def run(
    pipeline: Path = typer.Argument(..., help="pipeline.yaml"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Run directory (default runs/<name>)."),
    start: str | None = typer.Option(None, "--from", help="Re-run this stage and every later one."),
    only: str | None = typer.Option(None, "--only", help="Run only this stage (its inputs must exist)."),
    force: list[str] = typer.Option([], "--force", help="Re-run this stage even if cached (repeatable)."),
    require: list[str] = typer.Option(
        [], "--require", help="Fail if this stage is skipped, e.g. --require tensorrt (repeatable)."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Exit 1 when no deployable artifact meets the accuracy budget (and a device's latency budget, where "
        "benchmark.budget.latency_ms sets one) or a figure is unstable.",
    ),
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Training processes per machine (torchrun + DistributedDataParallel)."
    ),
    nnodes: str = typer.Option("1", "--nnodes", help="torchrun: number of machines (or MIN:MAX)."),
    node_rank: int = typer.Option(0, "--node-rank", help="torchrun: this machine's rank."),
    rdzv_endpoint: str | None = typer.Option(
        None, "--rdzv-endpoint", help="torchrun: rendezvous HOST:PORT for several machines."
    ),
    rdzv_id: str | None = typer.Option(None, "--rdzv-id", help="torchrun: rendezvous job id."),
    master_addr: str | None = typer.Option(
        None, "--master-addr", help="torchrun: rank 0's address (static rendezvous)."
    ),
    master_port: int | None = typer.Option(None, "--master-port", help="torchrun: rank 0's port (static rendezvous)."),
    peer_timeout: int = typer.Option(
        600,
        "--peer-timeout",
        min=1,
        help="Seconds a training process waits for another that does not answer (its node died or was cut off) "
        "before the run stops (NCCL's own default; gloo's is 30 minutes); raise it when rank 0 can keep the others "
        "waiting longer (a sweep scoring each trial on a large validation set, slow checkpoint writes).",
    ),
    allow_download: bool = typer.Option(
        False, "--allow-download", help="Let torchvision/timm download pretrained `weights:` missing from their cache."
    ),
    storage: str | None = typer.Option(None, "--storage", envvar="EDGEKD_SWEEP_STORAGE", help=_STORAGE_HELP),
) -> None:
    """Run a pipeline: stages whose config and inputs are unchanged are cached."""
    from edgekd import distributed
    from edgekd.pipeline import Selection

    argv = [
        "run",
        str(pipeline),
        *(["--run-dir", str(run_dir)] if run_dir else []),
        *(["--from", start] if start else []),
        *(["--only", only] if only else []),
        *[a for f in force for a in ("--force", f)],
        *[a for r in require for a in ("--require", r)],
        *(["--strict"] if strict else []),
        f"--peer-timeout={peer_timeout}",
    ]
    if (nproc > 1 or nnodes != "1") and "RANK" not in os.environ:
        rdzv = [
            f"--nnodes={nnodes}",
            f"--node-rank={node_rank}",
            *([f"--rdzv-endpoint={rdzv_endpoint}", "--rdzv-backend=c10d"] if rdzv_endpoint else []),
            *([f"--rdzv-id={rdzv_id}"] if rdzv_id else []),
            *([f"--master-addr={master_addr}"] if master_addr else []),
            *([f"--master-port={master_port}"] if master_port else []),
        ]
        try:
            code = distributed.launch(["--debug", *argv] if _debug else argv, nproc, rdzv)
        except EdgekdError as e:
            _fail(e)
            return
        raise typer.Exit(code)
    try:
        if allow_download:  # read by edgekd.models.weights, here and in torchrun's processes
            os.environ["EDGEKD_ALLOW_DOWNLOAD"] = "1"
        runner = _runner(pipeline, run_dir, storage)
        from edgekd.preflight import check_files, check_pipeline

        check_files(runner.cfg)  # weights, feature layers and every image checked before the first stage
        check_pipeline(runner.cfg, local_files=True)
        device = distributed.choose_device(runner.cfg.device)
        if distributed.init_from_env(device, timedelta(seconds=peer_timeout)) and not distributed.is_main():
            runner.reporter.quiet = True
            runner.reporter.console = Console(stderr=True, quiet=True)
        if distributed.is_main():
            err.print(
                f"run directory: {runner.run_dir}"
                + (f" ({distributed.world_size()} processes)" if distributed.world_size() > 1 else ""),
                highlight=False,
                markup=False,
            )
        manifest = runner.run(Selection(only=only, start=start, force=tuple(force), require=tuple(require)))
    except EdgekdError as e:
        _fail(e)
        return
    if not distributed.is_main():
        return
    _print_summary(runner.cfg, runner.run_dir, kd=True)
    report = manifest.stage("report")
    if report is not None and "report_html" in report.artifacts:
        out.print(f"report: {runner.rundir.path('report_html')}", highlight=False, markup=False)
    out.print(f"manifest: {manifest.path}", highlight=False, markup=False)
    from edgekd.report.terminal import strict_failures, unstable_message

    metrics, local = report.metrics if report else {}, runner.cfg.benchmark.device_name
    if strict and (problems := strict_failures(metrics, runner.run_dir, local)):
        for problem in problems:  # budget and unstable figures, one line each
            err.print(f"[bold red]strict:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if warning := unstable_message(metrics.get("unstable") or [], runner.run_dir, local):
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


@app.command()
def sweep(
    pipeline: Path = typer.Argument(..., help="pipeline.yaml (with a `sweep:` section)"),
    storage: str | None = typer.Option(None, "--storage", envvar="EDGEKD_SWEEP_STORAGE", help=_STORAGE_HELP),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="This worker's run directory (default runs/<name>); one worker per directory."
    ),
) -> None:
    """Work on the pipeline's distill sweep: run its trials until the study has its number of finished trials.

    Start one per GPU or machine against one --storage; `edgekd run PIPELINE --storage URL` then picks the winner
    (the stages before distill run, or are cached, in this worker's run directory first)."""
    try:
        runner = _runner(pipeline, run_dir, storage)
        from edgekd.preflight import check_files, check_pipeline
        from edgekd.stages.distill import DistillStage

        check_files(runner.cfg)
        check_pipeline(runner.cfg, local_files=True)
        if runner.cfg.sweep is None:
            raise EdgekdError(f"{pipeline}: has no `sweep:` section; add one (docs/sweeps.md)")
        err.print(f"run directory: {runner.run_dir}", highlight=False, markup=False)
        ctx, inputs = runner.helper_context("distill")
        with runner.rundir.locked("edgekd sweep"):
            trials = DistillStage().sweep_worker(ctx, inputs)
    except EdgekdError as e:
        _fail(e)
        return
    done = [t for t in trials if t.state == "complete"]
    out.print(
        f"study finished: {len(done)} complete, {sum(t.state == 'pruned' for t in trials)} pruned, "
        f"{sum(t.state == 'failed' for t in trials)} failed",
        highlight=False,
        markup=False,
    )


@app.command()
def scout(
    pipeline: Path = typer.Argument(..., help="pipeline.yaml"),
    device: list[str] = typer.Option(
        [], "--device", help="Scout on this device (repeatable; default: the pipeline's scout.devices)."
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="The run directory whose scout cache and tables are used (default runs/<name>)."
    ),
    fresh: bool = typer.Option(
        False, "--fresh", help="Time every candidate again (figures taken on a busy machine are cached too)."
    ),
    devices_file: Path | None = typer.Option(
        None, "--devices", help="The devices file that names the devices (default: the pipeline's scout.devices_file)."
    ),
) -> None:
    """Time candidate students on the target devices before any training: p50 latency with its spread, params,
    MACs, and whether each fits benchmark.budget.latency_ms (scout/tables/<device>.json and a plot). On a
    devices.yaml device the candidates are shipped there and timed as it ships them (docs/scout.md)."""
    try:
        runner = _runner(pipeline, run_dir)
        cfg = runner.cfg
        from edgekd.data.datasets import load_data
        from edgekd.data.preprocessing import data_inputs
        from edgekd.manifest import read_manifest
        from edgekd.models import ModelSpec, load_model
        from edgekd.search.candidates import check_names
        from edgekd.search.scout import scout_devices, settings_for, targets

        devices = [check_name(d, "--device") for d in device] or cfg.scout.devices
        devices_file = devices_file or cfg.scout.devices_file
        targets(devices, devices_file)  # an unknown device, or a misspelt candidate, is refused before the data loads
        check_names(cfg.scout.candidates)
        trained = read_manifest(runner.rundir).vouched().get("teacher")  # its spec is what the scout stage cuts
        teacher = load_model(trained)[1] if trained is not None else None
        if (
            teacher is None or teacher.name != cfg.teacher.model
        ):  # none trained yet: the registry's, at the data's input
            info = load_data(cfg.data, cfg.seed, data_inputs(cfg.data, cfg.student)).info
            teacher = ModelSpec(cfg.teacher.model, info.num_classes, info.in_channels, info.image_size)
        settings = settings_for(cfg.benchmark, cfg.seed)
        err.print(f"run directory: {runner.run_dir}", highlight=False, markup=False)
        with runner.rundir.locked("edgekd scout"):
            tables = scout_devices(
                cfg.scout.candidates,
                teacher,
                settings,
                cfg.export.opset,
                devices,
                cfg.benchmark.budget.latency_ms,
                runner.rundir,
                runner.reporter.log,
                fresh,
                devices_file,
                cfg.scout.headroom,
            )
    except EdgekdError as e:
        _fail(e)
        return
    from edgekd.report.terminal import scout_table

    for table in tables:
        out.print(scout_table(table))
        saved = f"saved: {runner.rundir.scout_table(table.device)} and {runner.rundir.scout_plot(table.device)}"
        out.print(saved, highlight=False, markup=False)


@app.command()
def plan(
    pipeline: Path = typer.Argument(..., help="pipeline.yaml"),
    run_dir: Path | None = typer.Option(None, "--run-dir"),
    start: str | None = typer.Option(None, "--from"),
    only: str | None = typer.Option(None, "--only"),
    force: list[str] = typer.Option([], "--force"),
) -> None:
    """Show which stages would run, which are cached, and why."""
    from edgekd.pipeline import Selection

    try:
        runner = _runner(pipeline, run_dir)
        entries = runner.plan(Selection(only=only, start=start, force=tuple(force)))
    except EdgekdError as e:
        _fail(e)
        return
    if holder := runner.rundir.lock_holder():
        err.print(f"[yellow]in use:[/] {escape(str(runner.run_dir))} is locked by {escape(holder)}", highlight=False)
    table = Table(title=escape(f"plan · {runner.run_dir}"))
    table.add_column("stage")
    table.add_column("action")
    table.add_column("why")
    colour = {"run": "bold", "cached": "green", "skip": "yellow", "leave": "dim", "check": "cyan"}
    for e in entries:
        table.add_row(e.stage, f"[{colour[e.action]}]{e.action}[/]", escape(e.why))
    out.print(table)


@app.command()
def validate(pipeline: Path = typer.Argument(..., help="pipeline.yaml")) -> None:
    """Check a pipeline file and the files it names (checkpoints, data root) without running anything."""
    try:
        cfg = load_pipeline(pipeline)  # before importing torch (preflight): a bad file fails in well under a second
        from edgekd.preflight import check_files, check_pipeline

        check_files(cfg)
        check_pipeline(cfg)
    except EdgekdError as e:
        _fail(e)
        return
    student = cfg.student.model or f"{cfg.teacher.model} pruned to {cfg.student.prune.target.text()}"
    if cfg.student.auto:
        device = cfg.scout.devices[0]
        student = f"auto (the scout's pick within {cfg.benchmark.budget.latency_ms[device]:g} ms on {device})"
    out.print(
        f"[green]ok[/] {escape(str(pipeline))}: pipeline '{cfg.name}', {cfg.data.dataset} → teacher {cfg.teacher.model}, student {student}"
    )


@app.command()
def bench(
    target: Path = typer.Argument(..., help="A run directory made by `edgekd run`, or an .onnx file to time as it is."),
    device: list[str] = typer.Option(
        [],
        "--device",
        help="Benchmark on this device from devices.yaml (repeatable): a run is shipped there, an .onnx file goes in "
        "a bundle of its own. For an .onnx file, `local` is this machine (the default).",
    ),
    devices_file: Path = typer.Option(Path("devices.yaml"), "--devices", help="The devices file."),
    pipeline: Path | None = typer.Option(
        None, "--pipeline", help="pipeline.yaml, when the run dir's own copy should not be used."
    ),
    repeat_unstable: bool = typer.Option(
        False,
        "--repeat-unstable",
        help="Re-measure artifacts whose figures are marked unstable (benchmark.repeat_unstable times, at least 2).",
    ),
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="An .onnx file: precisions to time, e.g. fp32,fp16,int8 (default: what the file is, int8 too with "
        "--calib; engines on a device: its tensorrt.precisions).",
    ),
    batch: str | None = typer.Option(
        None, "--batch", help="An .onnx file: batch sizes, e.g. 1,8 (default 1,8 here, devices.yaml's on a device)."
    ),
    calib: Path | None = typer.Option(
        None,
        "--calib",
        help="An .onnx file: images that calibrate its int8 Q/DQ copy: an .npz with an `images` array preprocessed "
        "as the model expects, or a folder of images (resized, scaled to [0, 1], normalised by --mean/--std).",
    ),
    mean: str | None = typer.Option(None, "--mean", help="--calib folder: per-channel mean (default ImageNet's)."),
    std: str | None = typer.Option(None, "--std", help="--calib folder: per-channel std (default ImageNet's)."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="An .onnx file: the output folder (default: bench-<file name> here)."
    ),
) -> None:
    """Re-run the benchmark of a run, or time an ONNX file as it is, on this machine or on devices."""
    if not target.is_dir():
        file_options = {"--pipeline": pipeline, "--repeat-unstable": repeat_unstable}
        _bench_file(target, device, devices_file, file_options, precision, batch, calib, mean, std, out_dir)
        return
    try:
        for name, value in {"--precision": precision, "--batch": batch, "--calib": calib, "--out": out_dir}.items():
            if value is not None:
                raise EdgekdError(
                    f"{name} applies to an .onnx file; {target} is a run directory (its pipeline's settings)"
                )
        if device and repeat_unstable:  # the device job measures every artifact again; it has no partial re-run
            raise EdgekdError(
                f"--repeat-unstable re-measures on this machine only; `edgekd bench {target} --device {device[0]}` "
                f"measures every artifact on {device[0]} again: drop one of the two options"
            )
        for name in device:
            _ship(target, name, devices_file, engines_only=False, force=True)
        if device:
            return
        cfg = load_pipeline(pipeline or _run_pipeline(target))
        if repeat_unstable:
            bench_cfg = cfg.benchmark.model_copy(update={"repeat_unstable": max(2, cfg.benchmark.repeat_unstable)})
            cfg = cfg.model_copy(update={"benchmark": bench_cfg})
        from edgekd.pipeline import Runner, Selection
        from edgekd.stages import all_stages

        runner = Runner(cfg, all_stages(), target, Reporter(err))
        manifest = runner.run(Selection(force=("benchmark",), start="benchmark"))
    except EdgekdError as e:
        _fail(e)
        return
    _print_summary(runner.cfg, runner.run_dir)
    from edgekd.report.terminal import unstable_message

    report_rec = manifest.stage("report")
    unstable = (report_rec.metrics.get("unstable") if report_rec else None) or []
    if warning := unstable_message(unstable, target, runner.cfg.benchmark.device_name, repeat_unstable):
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


def _bench_file(
    path: Path,
    devices: list[str],
    devices_file: Path,
    run_only: dict[str, object],
    precision: str | None,
    batch: str | None,
    calib: Path | None,
    mean: str | None,
    std: str | None,
    out_dir: Path | None,
) -> None:
    """`edgekd bench FILE.onnx`: the file timed as it is here and/or on devices (edgekd.fleet.files)."""
    from edgekd.bench.onnx_file import read_onnx_file
    from edgekd.ondevice.catalog import ENGINE_PRECISIONS

    try:
        for name, value in run_only.items():
            if value:
                raise EdgekdError(f"{name} applies to a run directory; {path} is not one")
        onnx_file = read_onnx_file(path)  # a missing or non-ONNX file fails here, before anything is loaded
        precisions = _csv(precision, "--precision", str, ENGINE_PRECISIONS)
        sizes = _csv(batch, "--batch", int)
        if sizes and not all(1 <= b <= 4096 for b in sizes):
            raise EdgekdError(f"--batch {batch}: batch sizes are from 1 to 4096")
        names = list(dict.fromkeys(devices or ["local"]))  # `local`: this machine
        if any(n != "local" for n in names):
            from edgekd.config import load_devices

            fleet = load_devices(devices_file)
        targets = {n: None if n == "local" else fleet.get(n) for n in names}
        from edgekd.bench.calib_images import load_calibration_images
        from edgekd.fleet.files import fp16_twins_needed, prepare_files, time_files
        from edgekd.report.files import NO_ACCURACY, files_table, write_files_report

        if calib is None and (mean or std):
            raise EdgekdError("--mean and --std normalise a --calib folder of images; give --calib DIR too")
        images = None
        if calib is not None:
            floats = (_csv(mean, "--mean", float), _csv(std, "--std", float))
            images = load_calibration_images(calib, onnx_file.shape, *floats)
        folder = out_dir or Path(f"bench-{onnx_file.name}")
        twins = fp16_twins_needed(list(targets.values()), precisions)
        given = prepare_files({onnx_file.name: path}, folder, images.images if images else None, twins)
        docs = [time_files(given, folder, d, precisions, sizes) for d in targets.values()]
        report = write_files_report(folder, [g.file for g in given], docs, images.source if images else None)
    except EdgekdError as e:
        _fail(e)
        return
    for doc in docs:
        out.print(files_table(doc))
    from edgekd.rundir import RunDir

    run = RunDir(folder)
    for doc in docs:
        out.print(f"bench: {run.bench_file(doc.device)}", highlight=False, markup=False)
    out.print(f"report: {report}\n{NO_ACCURACY}", highlight=False, markup=False)
    if unstable := [line for doc in docs for line in doc.unstable]:
        err.print(f"[yellow]warning:[/] {len(unstable)} figures are unstable: {escape(unstable[0])}", soft_wrap=True)


def _csv(text: str | None, option: str, kind: type, valid: tuple[str, ...] = ()) -> list | None:
    """`1,8` as [1, 8] (None when the option is not given); a value that is not of `kind` (or not in `valid`) fails."""
    if text is None:
        return None
    try:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    bad = [v for v in values if valid and v not in valid]
    if not values or bad:
        hint = f"one or more of {', '.join(valid)}" if valid else f"comma-separated {kind.__name__} values"
        raise EdgekdError(f"{option} {text}: expected {hint}")
    return list(dict.fromkeys(values))


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run directories, compared side by side."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Where to write the report (default: the first run's report/)."
    ),
    pipeline: Path | None = typer.Option(None, "--pipeline", help="pipeline.yaml whose accuracy budget to apply."),
) -> None:
    """Build report.md/.html/.json from the bench files of one or several runs (all their devices)."""
    from edgekd.report import write_report

    try:
        budget = load_pipeline(pipeline or _run_pipeline(run_dirs[0])).benchmark.budget
        summary = write_report(run_dirs, out_dir or RunDir(run_dirs[0]).stage_dir("report"), budget)
    except EdgekdError as e:
        _fail(e)
        return
    for key, name in summary.report.recommendations.items():
        out.print(f"{key}: recommended {name or '— nothing within budget'}", highlight=False)
    out.print(f"report: {summary.html}", highlight=False)


def _run_pipeline(run_dir: Path) -> Path:
    path = RunDir(run_dir).config
    if not path.is_file():
        raise EdgekdError(f"{run_dir}: no pipeline.yaml in this run directory; pass --pipeline")
    return path


def _ship(run_dir: Path, device: str, devices_file: Path, engines_only: bool, force: bool) -> None:
    from edgekd.config import load_devices
    from edgekd.fleet.ship import ship as ship_run
    from edgekd.report import write_report

    target = load_devices(devices_file).get(device)
    result = ship_run(run_dir, target, engines_only=engines_only, force=force)
    out.print(
        f"{device}: uploaded {result.uploaded_files} files ({result.uploaded_bytes / 1e6:.1f} MB), "
        f"{'ran the benchmark' if result.ran_bench else 'results were current'}",
        highlight=False,
    )
    for w in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if result.bench_json:
        budget = load_pipeline(_run_pipeline(run_dir)).benchmark.budget
        summary = write_report([run_dir], RunDir(run_dir).stage_dir("report"), budget)
        out.print(f"bench: {result.bench_json}\nreport: {summary.html}", highlight=False)


@app.command()
def ship(
    run_dir: Path = typer.Argument(..., help="A run directory made by `edgekd run`."),
    device: str = typer.Option(..., "--device", help="Device name from devices.yaml."),
    devices_file: Path = typer.Option(Path("devices.yaml"), "--devices", help="The devices file."),
    engines_only: bool = typer.Option(
        False, "--engines-only", help="Deploy prebuilt engines for this device kind and TensorRT version."
    ),
    force: bool = typer.Option(False, "--force", help="Re-run the device benchmark even if its results are current."),
) -> None:
    """Ship a run to a Jetson: build engines there, benchmark them, bring the report back."""
    try:
        _ship(run_dir, device, devices_file, engines_only, force)
    except EdgekdError as e:
        _fail(e)


devices_app = typer.Typer(help="Devices from devices.yaml.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")


@devices_app.command("check")
def devices_check(
    name: str = typer.Argument(..., help="Device name from devices.yaml."),
    devices_file: Path = typer.Option(Path("devices.yaml"), "--devices", help="The devices file."),
) -> None:
    """Connect to a device and report what it has (JetPack, TensorRT, CUDA, python, numpy, pycuda, disk)."""
    from edgekd.config import load_devices
    from edgekd.fleet.check import check_device

    try:
        found = check_device(load_devices(devices_file).get(name))
    except EdgekdError as e:
        _fail(e)
        return
    for line in found.summary():
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    if not found.ok:
        raise typer.Exit(2)


@devices_app.command("list")
def devices_list(
    devices_file: Path = typer.Option(Path("devices.yaml"), "--devices", help="The devices file."),
) -> None:
    """List the devices in devices.yaml."""
    from edgekd.config import load_devices

    try:
        devices = load_devices(devices_file)
    except EdgekdError as e:
        _fail(e)
        return
    for name, d in devices.devices.items():
        out.print(
            f"{name}: {d.user + '@' if d.user else ''}{d.host}{f':{d.port}' if d.port else ''} "
            f"({d.kind}; {', '.join(d.backends)})",
            highlight=False,
        )


@app.command()
def reference() -> None:
    """Print the pipeline.yaml / devices.yaml reference (Markdown)."""
    from edgekd.reference import render

    out.print(render(), markup=False, highlight=False, soft_wrap=True)


@app.command()
def artifacts() -> None:
    """The artifact catalogue: every file a pipeline makes, with the id it has everywhere."""
    from edgekd.ondevice import catalog

    table = Table(title="edgekd artifacts")
    for col in ("id", "stage", "file", "runtime", "precision", "ships", "benchmarked"):
        table.add_column(col, no_wrap=True)
    for a in catalog.ARTIFACTS:
        where = {"host": "host", "any": "host + devices", "built": "where built"}.get(a.bench, "")
        table.add_row(a.id, a.stage, a.file, a.runtime, a.precision, "yes" if a.ships else "", where)
    out.print(table)


@app.command()
def models() -> None:
    """List the model names a pipeline can use."""
    from edgekd.models import model_names

    for name in model_names():
        out.print(name)


quant_app = typer.Typer(help="Int8 quantization tools.", no_args_is_help=True)
app.add_typer(quant_app, name="quant")


@quant_app.command("sensitivity")
def quant_sensitivity(
    pipeline: Path = typer.Argument(..., help="pipeline.yaml"),
    run_dir: Path | None = typer.Option(None, "--run-dir"),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the record as JSON here."),
) -> None:
    """Per-layer int8 sensitivity of the run's distilled student (each layer float in turn), on training images."""
    import json

    from edgekd.manifest import read_manifest
    from edgekd.models import load_model
    from edgekd.pipeline import RunContext
    from edgekd.quant.sensitivity import measure_sensitivity

    try:
        runner = _runner(pipeline, run_dir)
        cfg, q = runner.cfg, runner.cfg.qat
        manifest = read_manifest(runner.rundir)
        student_path = manifest.vouched().get("student")
        if student_path is None:
            raise EdgekdError(
                f"{runner.run_dir}: no distilled student the manifest vouches for; run `edgekd run {pipeline}` first"
            )
        student, _ = load_model(student_path)
        data = RunContext(cfg, runner.rundir, runner.reporter, manifest).data  # the run's preprocessing
        rec, _, _, y = measure_sensitivity(student, data.train, q, cfg.data.batch_size, cfg.seed, list(q.keep_float))
        record, ranking = rec.to_dict(), rec.layers
    except EdgekdError as e:
        _fail(e)
        return
    table = Table(
        title=escape(
            f"int8 sensitivity · {len(y)} training images · fp32 {record['fp32_top1']:.2f}% · "
            f"all int8 {record['int8_top1']:.2f}%"
        )
    )
    for col in ("layer (float, rest int8)", "top-1 %", "gain", "KL to fp32"):
        table.add_column(col)
    for r in ranking:
        table.add_row(escape(r.layer), f"{r.top1:.2f}", f"{r.top1_gain:+.2f}", f"{r.kl:.4f}")
    out.print(table)
    if json_out:
        json_out.write_text(json.dumps(record, indent=2))


@app.command()
def version() -> None:
    """Print edgekd's version."""
    out.print(__version__)


if __name__ == "__main__":
    sys.exit(app())
