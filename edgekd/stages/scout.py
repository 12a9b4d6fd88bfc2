"""`scout` stage: with `student.model: auto`, the candidate students are timed on scout.devices (edgekd.search.scout)
and the one with the most MACs within the latency budget of the first device becomes the student. With
`scout.top_k` > 1 and `scout.train_epochs`, the top k are distilled briefly instead and the best on a split carved
from the training data (never the validation split) wins.

The choice is saved as scout/student.pt: its spec, and as weights the trained teacher cut to it (a `prune/<share>`
candidate) or a seeded fresh initialisation (any other). Every later stage takes its student from that file, as
they take the pruned teacher from the prune stage's. The choice is also kept as the scout exports a candidate
(scout/chosen.onnx, those weights): the benchmark times it again beside the trained student, in the same rounds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgekd.config import PipelineConfig, ScoutConfig
from edgekd.data.datasets import carve
from edgekd.distill.trainer import predict
from edgekd.fleet.timing import machine
from edgekd.models import ModelSpec, load_model, save_model
from edgekd.pipeline import RunContext, StageResult
from edgekd.run_records import ScoutChoice, ScoutEntry, ScoutTable, ScoutTrial
from edgekd.search.candidates import build, file_name, size
from edgekd.search.scout import TOOLCHAIN, choose, export_candidate, limit_text, scout_devices, settings_for, targets
from edgekd.stages.common import distil, model_summary


class ScoutStage:
    name = "scout"
    section = "scout"
    reads = (
        "seed",
        "device",
        "data",
        "scout",
        "distill",  # the brief distillation of the top k: the distill section's objective, for scout.train_epochs
        "!distill.epochs",
        "export.opset",
        "benchmark.budget.latency_ms",
        "benchmark.budget.latency_batch",
        *(f"benchmark.{f}" for f in ("warmup", "min_runs", "min_seconds", "repeats", "threads")),
    )
    toolchain = TOOLCHAIN
    needs = ("teacher",)  # the input's classes, channels and size; the model `prune/<share>` cuts
    uses: tuple[str, ...] = ()
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None if cfg.student.auto else "student.model is not auto"

    def environment(self, cfg: PipelineConfig, run_dir: Path) -> dict:
        """The machines the candidates are timed on (a device: its devices.yaml entry; the runtime versions it
        reports key each figure in the scout's cache)."""
        return {t.name: machine(t) for t in targets(cfg.scout.devices, cfg.scout.devices_file)}

    def run(self, ctx: RunContext, cfg: ScoutConfig, inputs: dict[str, Path]) -> StageResult:
        config = ctx.config
        teacher, t_spec = load_model(inputs["teacher"])
        settings = settings_for(config.benchmark, config.seed)
        budgets = config.benchmark.budget.latency_ms
        tables = scout_devices(
            cfg.candidates,
            t_spec,
            settings,
            config.export.opset,
            cfg.devices,
            budgets,
            ctx.rundir,
            ctx.reporter.log,
            devices_file=cfg.devices_file,
            headroom=cfg.headroom,
        )
        table = tables[0]
        chosen = choose(table)  # nothing within the budget stops the run here
        top = table.fitting()[: cfg.top_k]
        trials: list[ScoutTrial] = []
        if len(top) > 1 and cfg.train_epochs > 0:
            trials = self._rank(ctx, cfg, top, teacher, t_spec, inputs["teacher"])
            best = max(trials, key=lambda t: (t.selection_top1, table.entry(t.candidate).macs or 0))
            chosen = table.entry(best.candidate)
        why = _why(chosen, table, trials, cfg, config.seed)
        ctx.reporter.log(f"  scout: chose {why}")
        torch.manual_seed(config.seed)  # a registry choice starts where `student.model: <it>` would
        student, spec = build(chosen.candidate, t_spec, trained=teacher)
        if size(student, spec)[1] != chosen.macs:
            raise RuntimeError(f"{chosen.candidate}: built with other MACs than the scout timed ({chosen.macs})")
        out = ctx.out("scout_student")
        save_model(out, student, spec, data=ctx.data.info.to_dict())
        onnx = export_candidate(student, t_spec, ctx.out("scout_onnx"), config.export.opset)
        record = ScoutChoice(chosen.candidate, table.device, table.budget_ms, why, tables, trials)
        metrics = {
            **model_summary(out),
            "chosen": chosen.candidate,
            "macs": chosen.macs,
            "p50_ms": chosen.p50_ms,
            "fitting": [e.candidate for e in table.fitting()],
            "scout": record.to_dict(),
        }
        return StageResult({"scout_student": out, "scout_onnx": onnx}, metrics)

    def _rank(
        self,
        ctx: RunContext,
        cfg: ScoutConfig,
        top: list[ScoutEntry],
        teacher: nn.Module,
        t_spec: ModelSpec,
        teacher_path: Path,
    ) -> list[ScoutTrial]:
        """Each of the top candidates distilled for scout.train_epochs on the training data less the selection split,
        scored on that split."""
        config = ctx.config
        fit, selection = carve(ctx.data.train, cfg.selection_split, config.seed)
        teacher.to(ctx.device)
        t_sel, _ = predict(teacher, selection, config.data.eval_batch_size, ctx.device)
        brief = config.distill.model_copy(update={"epochs": cfg.train_epochs})
        trials = []
        for entry in top:
            torch.manual_seed(config.seed)
            student, _ = build(entry.candidate, t_spec, trained=teacher)
            work_dir = ctx.rundir.scout_trial_dir(file_name(entry.candidate))
            label = f"scout {entry.candidate}"
            _, scores, _ = distil(
                ctx,
                brief,
                student.train(),
                teacher,
                teacher_path,
                t_sel,
                work_dir,
                label,
                train_set=fit,
                score_set=selection,
            )
            trials.append(ScoutTrial(entry.candidate, scores["val_top1"], cfg.train_epochs))
            ctx.reporter.log(f"  scout: {entry.candidate}: selection top-1 {scores['val_top1']:.2f}%")
        teacher.cpu()
        return trials


def _why(chosen: ScoutEntry, table: ScoutTable, trials: list[ScoutTrial], cfg: ScoutConfig, seed: int) -> str:
    """Why `chosen` won, in one sentence for the log, the manifest and the report."""
    within = f"within {limit_text(table)} on {table.device}"
    timed = f"p50 {chosen.p50_ms:.3f} ms at batch {table.batch_size}"
    if trials:
        top1 = next(t.selection_top1 for t in trials if t.candidate == chosen.candidate)
        return (
            f"{chosen.candidate} ({timed}): the best top-1 ({top1:.2f}%) on {cfg.selection_split:.0%} of the training "
            f"data held out (seed {seed}) among the {len(trials)} candidates with the most MACs {within}, each "
            f"distilled {cfg.train_epochs} epoch(s) on the rest; the validation split was not used"
        )
    return (
        f"{chosen.candidate} ({timed}): the most MACs ({(chosen.macs or 0) / 1e6:.1f} M, the proxy for capacity) "
        f"of the {len(table.fitting())} candidates (of {len(table.entries)} scouted) {within}"
    )
