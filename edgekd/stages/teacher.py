"""`teacher` stage: load the user's checkpoint, or train the teacher (from scratch or fine-tuned from `weights`).

Either way its val top-1 must reach twice chance (the sanity gate) unless `teacher.allow_weak` is set.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgekd.config import PipelineConfig, TeacherConfig
from edgekd.data.datasets import DataInfo
from edgekd.data.preprocessing import teacher_inputs
from edgekd.distill.finetune import FineTune, param_groups
from edgekd.distill.trainer import evaluate, predict, train
from edgekd.errors import EdgekdError
from edgekd.models import ModelSpec, load_state_dict_file, save_model
from edgekd.models.inputs import InputSpec, default_resize
from edgekd.models.normalisation import check_normalisation
from edgekd.models.weights import check_class_names, initial_model
from edgekd.pipeline import RunContext, StageResult
from edgekd.stages.common import model_summary

WEAK_FACTOR = 2.0  # the gate: val top-1 must reach this many times chance (100 / classes)


class TeacherStage:
    name = "teacher"
    section = "teacher"
    reads = ("seed", "device", "data", "teacher")
    toolchain = ("torch", "torchvision")
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    distributed = True

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None

    def run(self, ctx: RunContext, cfg: TeacherConfig, inputs: dict[str, Path]) -> StageResult:
        data = ctx.data
        info = data.info
        given = pipeline_input_spec(info)
        wanted = teacher_inputs(ctx.config, given).fit_channels(info.in_channels)
        adapter = {"given": given.to_dict(), "wanted": wanted.to_dict()} if wanted != given else None
        spec = ModelSpec(cfg.model, info.num_classes, info.in_channels, info.image_size, adapter)
        choices: dict = {}
        history: list[dict] = []
        if cfg.checkpoint is not None:
            model = spec.build()
            names = load_state_dict_file(model, cfg.checkpoint)
            if names is not None:
                check_class_names(names, info.class_names, f"teacher.checkpoint {cfg.checkpoint}")
            source = str(cfg.checkpoint)
        else:
            model, choices = self._initial(ctx, cfg, spec, info)
            groups = None
            objective = FineTune(model, cfg.freeze_backbone_epochs, cfg.label_smoothing)
            if cfg.weights and cfg.backbone_lr_factor != 1.0:
                groups = param_groups(model, cfg.backbone_lr_factor)
            result = train(model, data.train, data.val, cfg, objective, ctx.train_env("teacher"), param_groups=groups)
            history = result.history
            source = f"fine-tuned from {cfg.weights}" if cfg.weights else "trained"
        model.cpu().eval()
        logits, labels = predict(model, data.val, ctx.config.data.eval_batch_size, "cpu")
        val = evaluate(logits, labels)
        check_teacher(val["val_top1"], info.num_classes, cfg, source)
        if cfg.checkpoint is not None and cfg.mean is None and cfg.std is None:  # stated mean/std are trusted
            check_normalisation(spec, cfg.checkpoint, given, wanted, data.val, ctx.config.data.eval_batch_size)
        out = ctx.out("teacher")
        save_model(out, model, spec, data=info.to_dict())
        metrics = {
            **val,
            **model_summary(out),
            "source": source,
            "epochs": len(history),
            **choices,
            "inputs": {
                "pipeline": given.to_dict(),
                "teacher": wanted.to_dict(),
                "teacher_adapted": adapter is not None,
            },
        }
        if data.skipped:
            metrics["skipped_images"] = [f"{rel}: {why}" for rel, why in data.skipped]
        return StageResult({"teacher": out}, metrics)

    def _initial(self, ctx: RunContext, cfg: TeacherConfig, spec: ModelSpec, info: DataInfo) -> tuple[nn.Module, dict]:
        """The model training starts from: pretrained weights adapted to the data, or a fresh one."""
        model, choices = initial_model(
            spec.name,
            cfg.weights,
            spec.num_classes,
            spec.in_channels,
            download=cfg.download,
            field="teacher.weights",
            class_names=info.class_names,
        )
        return spec.adapt_inputs(model), choices


def pipeline_input_spec(info: DataInfo) -> InputSpec:
    """The preprocessing the pipeline's images had, from the data's own record."""
    return InputSpec(info.image_size, info.resize_size or default_resize(info.image_size), info.mean, info.std)


def check_teacher(top1: float, num_classes: int, cfg: TeacherConfig, source: str) -> None:
    """The sanity gate: a teacher near chance stops the run (unless teacher.allow_weak) with the likely causes."""
    chance = 100.0 / num_classes
    if top1 >= WEAK_FACTOR * chance or cfg.allow_weak:
        return
    raise EdgekdError(
        f"teacher: val top-1 {top1:.1f}% is under {WEAK_FACTOR:g}x chance ({chance:.1f}% for {num_classes} classes; "
        f"teacher {source}); likely causes: wrong mean/std (set teacher.mean/std to what it was trained with), "
        f"channel order (RGB vs BGR), class order (folders sort alphabetically), a checkpoint of another model or "
        f"data set, or too little training; set teacher.allow_weak: true to go on anyway"
    )
