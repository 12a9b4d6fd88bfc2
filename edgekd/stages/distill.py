"""`distill` stage: train the student against the frozen teacher."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgekd.config import DistillConfig, PipelineConfig, SweepConfig
from edgekd.distill.trainer import METRICS, evaluate, predict
from edgekd.errors import EdgekdError
from edgekd.models import load_model, save_model
from edgekd.ondevice.files import write_bytes_atomic
from edgekd.pipeline import RunContext, StageResult
from edgekd.run_records import SWEPT, DistillChoice, SweepTrial
from edgekd.stages.common import distil, initial_student, model_summary, student_spec


class DistillStage:
    name = "distill"
    section = "distill"
    reads = ("seed", "device", "data", "student", "distill", "sweep")
    toolchain = ("torch", "torchvision")
    needs = ("teacher",)
    uses = ("pruned_student",)  # the student to start from, with student.prune
    distributed = True

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None

    def run(self, ctx: RunContext, cfg: DistillConfig, inputs: dict[str, Path]) -> StageResult:
        data = ctx.data
        teacher, t_spec = load_model(inputs["teacher"])
        spec = student_spec(ctx, inputs)
        if t_spec.num_classes != spec.num_classes:
            raise EdgekdError(
                f"teacher: {inputs['teacher']} predicts {t_spec.num_classes} classes but the data has "
                f"{spec.num_classes}; teacher and student must share the label set"
            )
        teacher.to(ctx.device)
        t_val, labels = predict(teacher, data.val, ctx.config.data.eval_batch_size, ctx.device)
        teacher_val = evaluate(t_val, labels)
        runs = []
        for choice in sweep_grid(ctx.config.sweep):
            trial = cfg.model_copy(update=choice.overrides)
            work_dir = ctx.stage_dir / "sweep" / choice.name if choice.overrides else ctx.stage_dir
            if choice.overrides:
                ctx.reporter.log(f"  distill sweep: {choice.name}")
            runs.append(
                (choice, work_dir, *self._train(ctx, trial, inputs["teacher"], teacher, t_val, work_dir, inputs))
            )
        choice, work_dir, student, result, val, cache_note = max(runs, key=lambda r: r[4]["val_top1"])
        out = ctx.out("student")
        save_model(out, student, spec, data=data.info.to_dict())
        metrics = {
            **val,
            **model_summary(out),
            "teacher_val_top1": teacher_val["val_top1"],
            "epochs": len(result.history),
            "resumed_from_epoch": result.resumed_from,
            "teacher_cache": cache_note,
            "feature_pairs": len(cfg.features),
        }
        settings = ctx.out("distill_settings")  # the winning settings, for qat's KD
        choice.write(settings)
        artifacts = {"student": out, "distill_settings": settings}
        if choice.overrides:
            trials = [SweepTrial(c.overrides, v["val_top1"], v["val_kl"]) for c, _, _, _, v, _ in runs]
            metrics["sweep"] = [t.to_dict() for t in trials]
            metrics["sweep_best"] = choice.overrides
            ctx.reporter.log(f"  distill sweep: best {choice.name} at val top-1 {val['val_top1']:.2f}%")
        chance = 100.0 / spec.num_classes
        if val["val_top1"] < 1.5 * chance:  # a diverged student fails parity checks stages later otherwise
            losses = ", ".join(f"{h.get('train_loss', float('nan')):.3g}" for h in result.history)
            metrics["diverged"] = True
            bn = val["bn_reestimate"]
            if bn.get("reason") and not bn["ran"]:  # trained fine, evaluated with statistics that do not match
                why = (
                    f"its BatchNorm running statistics do not match the weights ({bn['reason']}; train-mode top-1 "
                    f"on training images {bn['train_top1']:.1f}%); set distill.bn_reestimate: auto (or true)"
                )
            else:
                why = f"diverged or under-trained at distill.lr {cfg.lr:g}; train loss by epoch: {losses}"
            metrics["diverged_reason"] = why
            ctx.reporter.log(
                f"[yellow]  distill: student val top-1 {val['val_top1']:.2f}% is near chance ({chance:.1f}%): {why}[/]"
            )
        if result.history:  # the winner's curves
            metrics_file = ctx.out("distill_metrics")
            write_bytes_atomic(metrics_file, (work_dir / METRICS).read_bytes())
            artifacts["distill_metrics"] = metrics_file
        return StageResult(artifacts, metrics)

    def _train(
        self,
        ctx: RunContext,
        cfg: DistillConfig,
        teacher_path: Path,
        teacher: nn.Module,
        t_val,
        work_dir: Path,
        inputs: dict[str, Path],
    ):
        """Distil one student with `cfg` in `work_dir`: (student, TrainResult, val metrics, teacher-cache note)."""
        student, init = initial_student(ctx, student_spec(ctx, inputs), inputs)
        ctx.reporter.log(f"  distill: student from {init['weights']}")
        result, val, cache_note = distil(
            ctx, cfg, student, teacher, teacher_path, t_val, work_dir, "distill", reuse_from=("prune",)
        )
        return student, result, {**val, "student_init": init}, cache_note


def sweep_grid(sweep: SweepConfig | None) -> list[DistillChoice]:
    """Every combination of the swept values, as overrides of the distill section (one empty choice without a sweep)."""
    grid: list[dict] = [{}]
    for name in SWEPT:
        values = getattr(sweep, name) if sweep else []
        grid = [{**g, name: v} for g in grid for v in values] if values else grid
    return [DistillChoice(g) for g in grid]
