"""`baseline` stage: the same student trained on hard labels alone, with the distillation budget.

It measures what distillation buys: same model, same data and augmentation, same optimizer settings
(the distill section's, unless set under `baseline:`), no teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekd.config import BaselineConfig, OptimConfig, PipelineConfig
from edgekd.data.augment import BatchAugment
from edgekd.distill.objectives import CrossEntropy
from edgekd.distill.trainer import evaluate, predict, train
from edgekd.models import save_model
from edgekd.pipeline import RunContext, StageResult
from edgekd.run_records import ValOutcome
from edgekd.stages.common import initial_student, model_summary, settle_batchnorm, student_spec


def baseline_optim(cfg: PipelineConfig) -> OptimConfig:
    """The distill section's optimizer settings, overridden by those set under `baseline:`."""
    values = {k: getattr(cfg.distill, k) for k in OptimConfig.model_fields}
    values.update({k: v for k in values if (v := getattr(cfg.baseline, k)) is not None})
    return OptimConfig(**values)


class BaselineStage:
    name = "baseline"
    section = "baseline"
    reads = (
        "seed",
        "device",
        "data",
        "student",
        "baseline",
        "distill.augment",
        *(f"distill.{f}" for f in OptimConfig.model_fields),
    )
    toolchain = ("torch", "torchvision")
    needs: tuple[str, ...] = ()
    uses = ("pruned_student", "scout_student")  # the architecture to train, with student.prune or auto
    distributed = True

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None if cfg.baseline.enabled else "baseline.enabled is false"

    def run(self, ctx: RunContext, cfg: BaselineConfig, inputs: dict[str, Path]) -> StageResult:
        data, config = ctx.data, ctx.config
        spec = student_spec(ctx, inputs)
        torch.manual_seed(config.seed)
        if config.student.prune is not None:  # the pruned architecture, from scratch: what pruning + KD bought
            student, init = spec.build(), {"weights": "none (the pruned architecture, freshly initialised)"}
        elif config.student.auto:  # the scout's architecture, from scratch (its file may hold the teacher, cut)
            student, init = spec.build(), {"weights": "none (the scout's architecture, freshly initialised)"}
        else:
            student, init = initial_student(ctx, spec, inputs)
        optim = baseline_optim(config)
        augment = None
        if config.distill.augment.active:
            augment = BatchAugment(config.distill.augment, spec.num_classes, data.info.mean, data.info.std)
        objective = CrossEntropy(optim.label_smoothing, augment=augment, seed=config.seed)
        result = train(student, data.train, data.val, optim, objective, ctx.train_env("baseline"))
        bn = settle_batchnorm(ctx, student, cfg.bn_reestimate, "baseline.bn_reestimate")
        student.cpu().eval()
        logits, labels = predict(student, data.val, config.data.eval_batch_size, "cpu")
        val = evaluate(logits, labels)
        out = ctx.out("baseline_student")
        save_model(out, student, spec, data=data.info.to_dict())
        metrics = {
            **val,
            **model_summary(out),
            "epochs": len(result.history),
            "resumed_from_epoch": result.resumed_from,
            "student_init": init,
            "bn_reestimate": bn,
            "val_correct": ValOutcome.of((logits.argmax(1) == labels).numpy()).to_dict(),
        }
        return StageResult({"baseline_student": out}, metrics)
