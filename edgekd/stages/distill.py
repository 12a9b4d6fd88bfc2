"""`distill` stage: train the student against the frozen teacher."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edgekd.artifacts import sha256_file
from edgekd.config import DistillConfig, PipelineConfig
from edgekd.data.augment import BatchAugment
from edgekd.data.datasets import data_fingerprint
from edgekd.distill.features import FeatureDistiller
from edgekd.distill.objectives import Distillation
from edgekd.distill.teacher_cache import CACHE_FILE, TeacherCache, cache_key
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
    uses: tuple[str, ...] = ()
    makes = ("student", "distill_metrics")
    distributed = True

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
        features = None
        if cfg.features:  # checks the layer names before any training
            features = FeatureDistiller(cfg.features, teacher, student, (spec.in_channels, spec.image_size, spec.image_size))
        augment = BatchAugment(cfg.augment, spec.num_classes, data.info.mean, data.info.std) if cfg.augment.active else None
        cache, cache_note = self._teacher_cache(ctx, cfg, inputs["teacher"], teacher, features)
        ctx.reporter.log(f"  distill: teacher cache {cache_note}")
        objective = Distillation(teacher, cfg, features=features, augment=augment, cache=cache, seed=ctx.config.seed)
        result = train(student, data.train, data.val, cfg, objective,
                       work_dir=ctx.stage_dir, key=ctx.key, seed=ctx.config.seed,
                       batch_size=ctx.config.data.batch_size, eval_batch_size=ctx.config.data.eval_batch_size,
                       device=ctx.device, reference_val_logits=t_val, reporter=ctx.reporter, label="distill",
                       tensorboard_dir=ctx.stage_dir / "tb" if cfg.tensorboard else None,
                       amp=cfg.amp, channels_last=cfg.channels_last)
        student.cpu().eval()
        logits, labels = predict(student, data.val, ctx.config.data.eval_batch_size, "cpu")
        val = evaluate(logits, labels, t_val)
        out = ctx.stage_dir / "student.pt"
        save_model(out, student, spec, data=data.info.to_dict())
        metrics = {**val, **model_summary(out), "teacher_val_top1": teacher_val["val_top1"],
                   "epochs": len(result.history), "resumed_from_epoch": result.resumed_from,
                   "teacher_cache": cache_note, "feature_pairs": len(cfg.features)}
        artifacts = {"student": out}
        if result.history:
            artifacts["distill_metrics"] = ctx.stage_dir / "metrics.jsonl"
        return StageResult(artifacts, metrics)

    def _teacher_cache(self, ctx: RunContext, cfg: DistillConfig, teacher_path: Path, teacher: nn.Module,
                       features: FeatureDistiller | None) -> tuple[TeacherCache | None, str]:
        """The teacher's outputs per training sample, when allowed; and what happened, for the log."""
        if not cfg.teacher_cache:
            return None, "off (teacher_cache: false)"
        if cfg.augment.active:
            return None, "skipped: random augmentation shows the teacher new images every epoch"
        info = ctx.data.info
        layers = features.teacher_layers if features else []
        transforms = {"image_size": info.image_size, "channels": info.in_channels, "mean": info.mean, "std": info.std,
                      "augment": cfg.augment.model_dump(mode="json")}
        key = cache_key(sha256_file(teacher_path), data_fingerprint(ctx.config.data, ctx.config.seed), transforms, layers)
        cache = TeacherCache.load_or_compute(ctx.stage_dir / CACHE_FILE, key, teacher, ctx.data.train, layers,
                                             ctx.config.data.eval_batch_size, ctx.device)
        if cache.nbytes <= 2**30:  # small enough to keep beside the model: lookups without copies
            cache.to(ctx.device)
        return cache, f"{'built' if cache.built else 'reused'} ({ctx.stage_dir.name}/{CACHE_FILE}, key {key[:12]})"
