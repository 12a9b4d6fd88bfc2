"""Small pieces several stages share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from edgekd.config import DistillConfig
from edgekd.data.datasets import DataInfo, data_fingerprint
from edgekd.distill.features import FeatureDistiller
from edgekd.distill.teacher_cache import CACHE_FILE, TeacherCache, cache_key
from edgekd.export import Preprocessing
from edgekd.export.parity import percent_equal, predicted_classes
from edgekd.models import ModelSpec, count_params, load_model, load_state_dict_file
from edgekd.models.weights import initial_model
from edgekd.ondevice import catalog
from edgekd.ondevice.files import sha256_file
from edgekd.pipeline import RunContext


def spec_for(ctx: RunContext, model_name: str) -> ModelSpec:
    info = ctx.data.info
    return ModelSpec(model_name, info.num_classes, info.in_channels, info.image_size)


def model_summary(path: Path) -> dict:
    """Parameters and size on disk of a saved model file."""
    model, spec = load_model(path)
    return {"model": spec.name, "params": count_params(model), "size_bytes": path.stat().st_size}


def teacher_cache(
    ctx: RunContext,
    cfg: DistillConfig,
    teacher_path: Path,
    teacher: nn.Module,
    features: FeatureDistiller | None,
    reuse_from: tuple[str, ...] = (),
) -> tuple[TeacherCache | None, str]:
    """The teacher's outputs per training sample, when allowed; and what happened, for the log. A cache
    with the same key in the directory of a stage in `reuse_from` is read instead of computed again."""
    if not cfg.teacher_cache:
        return None, "off (teacher_cache: false)"
    if cfg.augment.active:
        return None, "skipped: random augmentation shows the teacher new images every epoch"
    info = ctx.data.info
    layers = features.teacher_layers if features else []
    transforms = {
        "image_size": info.image_size,
        "channels": info.in_channels,
        "mean": info.mean,
        "std": info.std,
        "augment": cfg.augment.model_dump(mode="json"),
    }
    key = cache_key(sha256_file(teacher_path), data_fingerprint(ctx.config.data, ctx.config.seed), transforms, layers)
    cache = TeacherCache.load_or_compute(
        ctx.stage_dir / CACHE_FILE,
        key,
        teacher,
        ctx.data.train,
        layers,
        ctx.config.data.eval_batch_size,
        ctx.device,
        elsewhere=tuple(ctx.rundir.stage_dir(stage) / CACHE_FILE for stage in reuse_from),
    )
    if cache.nbytes <= 2**30:  # small enough to keep beside the model: lookups without copies
        cache.to(ctx.device)
    where = f"{cache.source.parent.name}/{cache.source.name}"
    return cache, f"{'built' if cache.built else 'reused'} ({where}, key {key[:12]})"


def initial_student(ctx: RunContext, spec: ModelSpec) -> tuple[nn.Module, dict]:
    """The student a training stage starts from: `student.weights` adapted to the data (or a fresh model),
    then `student.init_checkpoint` when given; and the choices made, for the manifest."""
    cfg = ctx.config.student
    student, init = initial_model(
        spec.name,
        cfg.weights,
        spec.num_classes,
        spec.in_channels,
        download=cfg.download,
        field="student.weights",
        class_names=ctx.data.info.class_names,
    )
    if cfg.init_checkpoint:
        load_state_dict_file(student, cfg.init_checkpoint)
    return student, init


def preprocessing_of(info: DataInfo) -> Preprocessing:
    """What an exported file records about the images it expects."""
    return Preprocessing(
        image_size=info.image_size,
        channels=info.in_channels,
        mean=tuple(info.mean),
        std=tuple(info.std),
        class_names=tuple(info.class_names),
        resize_size=info.resize_size,
    )


def artifact_metrics(
    ctx: RunContext, artifact_id: str, parity: object | None = None, fp32_classes: np.ndarray | None = None
) -> dict:
    """size, val top-1 of the file the stage just wrote for `artifact_id`, and its parity record; with the fp32
    model's top-1 class per validation image, `agreement_vs_fp32` (percent of images with the same class)."""
    path = ctx.out(artifact_id)
    preds, labels = predicted_classes(path, ctx.data.val.batches(ctx.config.data.eval_batch_size))
    out = {
        "path": catalog.path_of(artifact_id),
        "size_bytes": path.stat().st_size,
        "val_top1": percent_equal(preds, labels),
    }
    if fp32_classes is not None:
        out["agreement_vs_fp32"] = percent_equal(preds, fp32_classes)
    if parity is not None:
        out["parity"] = {k: v for k, v in parity.as_dict().items() if k != "path"}
    return out
