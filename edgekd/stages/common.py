"""Small pieces several stages share."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.config import DistillConfig
from edgekd.data.augment import BatchAugment
from edgekd.data.datasets import DataInfo, ImageSet, data_fingerprint
from edgekd.distill.batchnorm import batchnorms, bn_check, reestimate_bn
from edgekd.distill.features import FeatureDistiller
from edgekd.distill.objectives import Distillation
from edgekd.distill.teacher_cache import CACHE_FILE, TeacherCache, cache_key
from edgekd.distill.trainer import TrainResult, evaluate, predict, train
from edgekd.errors import EdgekdError
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


def student_spec(ctx: RunContext, inputs: dict[str, Path]) -> ModelSpec:
    """The student's architecture: `student.model` from the registry, or the model an earlier stage made, the
    pruned teacher (student.prune) or the scout's choice (auto), whose spec carries its layer sizes; the one place
    training stages get it from."""
    made = made_student(ctx, inputs)
    return spec_for(ctx, ctx.config.student.model) if made is None else load_model(made)[1]


MADE_BY = {
    "pruned_student": ("student.prune", "the pruned teacher"),
    "scout_student": ("student.model auto", "the scout's choice"),
}
"""The student files earlier stages make: the field that asks for one, and what it is."""


def _made_id(ctx: RunContext) -> str | None:
    cfg = ctx.config.student
    return "pruned_student" if cfg.prune is not None else "scout_student" if cfg.auto else None


def made_student(ctx: RunContext, inputs: dict[str, Path]) -> Path | None:
    """The student file an earlier stage made for this pipeline: prune's (student.prune) or the scout's (auto);
    None for a registry student."""
    art = _made_id(ctx)
    if art is not None and art not in inputs:
        stage = catalog.get(art).stage
        raise EdgekdError(f"{MADE_BY[art][0]}: no student from the {stage} stage; run the pipeline with it first")
    return inputs[art] if art is not None else None


def initial_student(ctx: RunContext, spec: ModelSpec, inputs: dict[str, Path]) -> tuple[nn.Module, dict]:
    """The student a distillation starts from: the file an earlier stage made (the pruned teacher, the scout's
    choice), or `student.weights` adapted to the data (or a fresh model), then `student.init_checkpoint` when given;
    and the choices made, for the manifest."""
    cfg = ctx.config.student
    if (made := made_student(ctx, inputs)) is not None:
        art = _made_id(ctx)
        student, _ = load_model(made)
        return student.train(), {"weights": f"{MADE_BY[art][1]} ({catalog.path_of(art)})"}
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


def distil(
    ctx: RunContext,
    cfg: DistillConfig,
    student: nn.Module,
    teacher: nn.Module,
    teacher_path: Path,
    t_val: torch.Tensor,
    work_dir: Path,
    label: str,
    reuse_from: tuple[str, ...] = (),
    *,
    train_set: ImageSet | None = None,
    score_set: ImageSet | None = None,
    seed: int | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> tuple[TrainResult, dict, str]:
    """Train `student` in place against `teacher` with the distill section's objective (`cfg`: soft and hard
    losses, feature pairs, augmentation, the teacher cache) in `work_dir`; (TrainResult, val metrics,
    teacher-cache note). The distill stage and the prune stage's recovery both train through here.
    A sweep trial trains on `train_set` (default: the training split), is scored each epoch and at the end on
    `score_set` (default: the validation split; `t_val`: the teacher's logits on it), with its own `seed`, and
    `on_epoch` (the pruner) sees each epoch."""
    train_set = ctx.data.train if train_set is None else train_set
    score_set = ctx.data.val if score_set is None else score_set
    seed = ctx.config.seed if seed is None else seed
    data = ctx.data
    info = data.info
    features = None
    if cfg.features:  # checks the layer names before any training
        features = FeatureDistiller(
            cfg.features, teacher, student, (info.in_channels, info.image_size, info.image_size)
        )
    augment = BatchAugment(cfg.augment, info.num_classes, info.mean, info.std) if cfg.augment.active else None
    cache, cache_note = teacher_cache(ctx, cfg, teacher_path, teacher, features, reuse_from)
    ctx.reporter.log(f"  {label}: teacher cache {cache_note}")
    objective = Distillation(teacher, cfg, features=features, augment=augment, cache=cache, seed=seed)
    env = ctx.train_env(label, work_dir)
    env.seed = seed
    result = train(
        student,
        train_set,
        score_set,
        cfg,
        objective,
        env,
        reference_val_logits=t_val,
        tensorboard_dir=work_dir / "tb" if cfg.tensorboard else None,
        amp=cfg.amp,
        on_epoch=on_epoch,
    )
    bn = settle_batchnorm(ctx, student, cfg.bn_reestimate, "distill.bn_reestimate", train_set)
    student.cpu().eval()
    logits, labels = predict(student, score_set, ctx.config.data.eval_batch_size, "cpu")
    return result, {**evaluate(logits, labels, t_val), "bn_reestimate": bn}, cache_note


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


BN_CHECK_IMAGES = 512  # training images the BatchNorm check scores on
BN_IMAGES = 2048  # training images the running statistics are re-estimated from


def settle_batchnorm(
    ctx: RunContext, model: nn.Module, mode: str | bool, field: str, train_set: ImageSet | None = None
) -> dict:
    """BatchNorm re-estimation of a trained `model` (in place, on `ctx.device`) as `field` (`mode`: "auto",
    True, False) asks, before it is evaluated, saved, exported or calibrated, on the images it trained on
    (`train_set`, default: the training split; a sweep trial's never include its selection split); the record
    for the manifest: {"mode", "ran", "reason", "images", "eval_top1", "train_top1", "eval_top1_after"} (top-1s
    on those training images)."""
    if not batchnorms(model):
        return {"mode": mode, "ran": False, "reason": "no BatchNorm"}
    train_set = ctx.data.train if train_set is None else train_set
    seed, batch_size = ctx.config.seed, ctx.config.data.batch_size
    generator = torch.Generator().manual_seed(seed + 2)
    batches = train_set.batches(256, shuffle=True, generator=generator)
    xs, ys = zip(
        *((b[0].cpu(), b[1].cpu()) for b in itertools.islice(batches, -(-BN_CHECK_IMAGES // 256))), strict=True
    )
    x, y = torch.cat(xs)[:BN_CHECK_IMAGES], torch.cat(ys)[:BN_CHECK_IMAGES]
    model.to(ctx.device)
    check = bn_check(model, x, y)
    record: dict = {
        "mode": mode,
        "ran": False,
        "reason": check.reason,
        "eval_top1": check.eval_top1,
        "train_top1": check.train_top1,
    }
    if mode is True or (mode == "auto" and check.reason):
        generator = torch.Generator().manual_seed(seed + 3)
        train = train_set.batches(batch_size, shuffle=True, generator=generator, device=ctx.device)
        record.update(ran=True, images=reestimate_bn(model, train, BN_IMAGES))
        record["eval_top1_after"] = bn_check(model, x, y).eval_top1
        why = check.reason or f"{field}: true"
        ctx.reporter.log(
            f"  {ctx.stage_name}: BatchNorm statistics re-estimated on {record['images']} training images ({why}); "
            f"eval-mode top-1 on training images {check.eval_top1:.1f}% -> {record['eval_top1_after']:.1f}%"
        )
    elif check.reason:
        ctx.reporter.log(
            f"[yellow]  {ctx.stage_name}: {check.reason}, and {field} is false: statistics left as trained[/]"
        )
    model.cpu()
    return record
