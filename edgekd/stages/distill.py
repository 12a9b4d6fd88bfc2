"""`distill` stage: train the student against the frozen teacher."""

from __future__ import annotations

from pathlib import Path

from edgekd.config import DistillConfig, PipelineConfig
from edgekd.distill.objectives import Distillation
from edgekd.distill.trainer import evaluate, predict, train
from edgekd.errors import EdgekdError
from edgekd.models import build_model, load_model, load_state_dict_file, save_model
from edgekd.pipeline import RunContext, StageResult
from edgekd.stages.common import model_summary, spec_for


class DistillStage:
    name = "distill"
    section = "distill"
    sections = ("data", "student", "distill")
    needs = ("teacher",)
    makes = ("student", "distill_metrics")

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None

    def key_extras(self, cfg: PipelineConfig) -> dict:
        return {}

    def run(self, ctx: RunContext, cfg: DistillConfig, inputs: dict[str, Path]) -> StageResult:
        data = ctx.data
        teacher, t_spec = load_model(inputs["teacher"])
        spec = spec_for(ctx, ctx.config.student.model)
        if t_spec.num_classes != spec.num_classes:
            raise EdgekdError(f"teacher: {inputs['teacher']} predicts {t_spec.num_classes} classes but the data has "
                              f"{spec.num_classes}; teacher and student must share the label set")
        student = build_model(spec.name, spec.num_classes, spec.in_channels)
        if ctx.config.student.init_checkpoint:
            load_state_dict_file(student, ctx.config.student.init_checkpoint)
        teacher.to(ctx.device)
        t_val, labels = predict(teacher, data.val, ctx.config.data.eval_batch_size, ctx.device)
        teacher_val = evaluate(t_val, labels)
        result = train(student, data.train, data.val, cfg, Distillation(teacher, cfg),
                       work_dir=ctx.stage_dir, key=ctx.key, seed=ctx.config.seed,
                       batch_size=ctx.config.data.batch_size, eval_batch_size=ctx.config.data.eval_batch_size,
                       device=ctx.device, reference_val_logits=t_val, reporter=ctx.reporter, label="distill")
        student.cpu().eval()
        logits, labels = predict(student, data.val, ctx.config.data.eval_batch_size, "cpu")
        val = evaluate(logits, labels, t_val)
        out = ctx.stage_dir / "student.pt"
        save_model(out, student, spec, data=data.info.to_dict())
        metrics = {**val, **model_summary(out), "teacher_val_top1": teacher_val["val_top1"],
                   "epochs": len(result.history), "resumed_from_epoch": result.resumed_from}
        artifacts = {"student": out}
        if result.history:
            artifacts["distill_metrics"] = ctx.stage_dir / "metrics.jsonl"
        return StageResult(artifacts, metrics)
