"""`qat` stage: int8 post-training quantization (PTQ) and quantization-aware fine-tuning (QAT) of the
distilled student, to Q/DQ ONNX with TensorRT's placement (`edgekd.quant.placement`).

QAT trains with the distill stage's loop and objective (KD loss with its feature pairs and the distill
stage's teacher cache, when `qat.distill`). Moving-average activation ranges are frozen for the last
`qat.freeze_observers_epochs` epochs and BatchNorm statistics for the last `qat.freeze_bn_epochs`.
Layers in `qat.keep_float` (and, with `qat.auto_keep_float`, the most sensitive ones until the budget
is met on training images) stay float. A PTQ artifact that fails its checks is recorded as failed with the reason; QAT goes on. A QAT
file more than `qat.max_below_ptq` points under the PTQ file is recorded as failed with the reason
(the PTQ file is the int8 that ships) and kept in qat/failed/.

Activation ranges are fixed at their calibrated values unless `qat.activation_ranges: moving_average`;
the collapse watch (`qat.watch_every`) stops a run whose ranges run away or whose top-1 on training
images falls to chance; `qat.bn_reestimate` recomputes BatchNorm statistics before export.

Metrics: `artifacts.<id>` per artifact (val top-1 of the file, `agreement_vs_fp32`: percent of validation
images where it picks the fp32 student's class, parity, or `{"status": "failed", "reason"}`),
`keep_float`, `teacher_cache` (built or reused, and where), `collapse_watch` (checks, top-1 on training images
at calibration and at the last check, largest range growth), `bn_reestimate`, and with
`qat.sensitivity` or `qat.auto_keep_float` a `sensitivity` record:
`{"split": "train", "images", "calibration", "measure": "layer float, rest int8", "fp32_top1",
"int8_top1", "layers": [{"layer", "top1", "kl", "top1_gain"}, ...]}`, most sensitive first.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import torch
from torch import nn

from edgekd.config import PipelineConfig, QatConfig, with_settings
from edgekd.distill.features import FeatureDistiller
from edgekd.distill.objectives import CrossEntropy, Distillation
from edgekd.distill.trainer import Objective, evaluate, predict, train
from edgekd.errors import EdgekdError
from edgekd.models import load_model, save_model
from edgekd.pipeline import RunContext, StageResult
from edgekd.quant import check_qdq_parity, export_qdq_onnx, freeze_observers, prepare_qat
from edgekd.quant.sensitivity import (
    calibrated,
    calibration_batches,
    choose_keep_float,
    measure_sensitivity,
    sensitivity_split,
)
from edgekd.quant.watch import CollapseWatch
from edgekd.run_records import DistillChoice, KeptFloat
from edgekd.stages.common import artifact_metrics, preprocessing_of, settle_batchnorm, teacher_cache

QAT_FORMAT = (
    "edgekd.qat/1"  # a QAT state_dict: load it into quantizable_copy(spec.build(), keep_float=sd["keep_float"])
)


class _FreezeLate:
    """The training objective, plus: activation ranges frozen from epoch `ranges_from` on and BatchNorm
    running statistics used (not updated) from epoch `bn_from` on (also after a resume); with a `watch`,
    the collapse watch after every step's loss."""

    def __init__(
        self, objective: Objective, model: nn.Module, ranges_from: int, bn_from: int, watch: CollapseWatch | None
    ) -> None:
        self.objective = objective
        self.model = model
        self.ranges_from = ranges_from
        self.bn_from = bn_from
        self.watch = watch

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor):
        loss, parts = self.objective.loss(model, x, y, idx)
        if self.watch is not None:
            self.watch.step(loss)
        return loss, parts

    def begin_epoch(self, epoch: int, num_epochs: int) -> dict:
        if epoch >= self.ranges_from:
            freeze_observers(self.model)
        if epoch >= self.bn_from:  # the trainer's evaluation puts the model back in train mode every epoch
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        used = {"ranges_frozen": epoch >= self.ranges_from, "bn_frozen": epoch >= self.bn_from}
        return {**self.objective.begin_epoch(epoch, num_epochs), **used}

    def __getattr__(self, name: str):  # modules, end_epoch, state_dict, load_state_dict
        return getattr(self.objective, name)


class QatStage:
    name = "qat"
    section = "qat"
    reads = (
        "seed",
        "device",
        "data",
        "qat",
        "distill",
        "export.opset",
        "export.dynamic_batch",
        "export.parity_batch",
        "benchmark.budget.max_drop_vs_student",
    )
    toolchain = ("torch", "onnx", "onnxruntime")
    needs = ("student",)
    uses = ("teacher", "distill_settings")
    distributed = True

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        if not cfg.qat.enabled:
            return "qat.enabled is false"
        if cfg.qat.epochs == 0 and not cfg.qat.ptq:
            return "qat.epochs is 0 and qat.ptq is false: nothing to quantize"
        return None

    def run(self, ctx: RunContext, cfg: QatConfig, inputs: dict[str, Path]) -> StageResult:
        student, spec = load_model(inputs["student"])
        images, _ = ctx.data.val_arrays(ctx.config.export.parity_batch)
        example = torch.from_numpy(images[:1])
        fp32 = self._val_logits(ctx, student)
        artifacts: dict[str, Path] = {}
        metrics: dict = {"fp32_val_top1": fp32["val_top1"], "calibration": cfg.calibration, "artifacts": {}}
        keep = list(cfg.keep_float)
        if cfg.sensitivity or cfg.auto_keep_float:
            keep, metrics["sensitivity"] = self._sensitivity(ctx, cfg, student, keep)
        metrics["keep_float"] = keep
        if cfg.ptq:
            try:
                ptq = self._calibrated(ctx, cfg, student, keep)
                path = self._export(ctx, ptq, "student_ptq_onnx", example)
                metrics["artifacts"]["student_ptq_onnx"] = self._record(ctx, ptq, "student_ptq_onnx", images, fp32, cfg)
                artifacts["student_ptq_onnx"] = path
            except EdgekdError as e:  # the PTQ file is a comparison: its failure must not cost the QAT file
                metrics["artifacts"]["student_ptq_onnx"] = {"status": "failed", "reason": str(e)}
                ctx.reporter.log(f"[yellow]  qat: PTQ artifact failed, QAT goes on: {e}[/]")
        if cfg.epochs > 0:
            qat = self._train(ctx, cfg, student, inputs, keep, metrics)
            model_path = ctx.out("student_qat")
            save_model(model_path, qat, spec, format=QAT_FORMAT, data=ctx.data.info.to_dict(), keep_float=keep)
            path = self._export(ctx, qat, "student_qat_onnx", example)
            metrics["artifacts"]["student_qat_onnx"] = self._record(ctx, qat, "student_qat_onnx", images, fp32, cfg)
            artifacts.update(student_qat=model_path, student_qat_onnx=path)
            if (why := self._qat_under_ptq(cfg, metrics)) is not None:
                # the PTQ file ships instead; the QAT file goes to qat/failed/ for inspection
                del artifacts["student_qat_onnx"]
                metrics["artifacts"]["student_qat_onnx"].update(status="failed", reason=why)
                ctx.reporter.log(f"[yellow]  qat: {why}[/]")
        return StageResult(artifacts, metrics)

    def _qat_under_ptq(self, cfg: QatConfig, metrics: dict) -> str | None:
        """Why the QAT file is more than `qat.max_below_ptq` points under the PTQ file of the same student (and
        so is not shipped), or None when it is not."""
        ptq, qat = metrics["artifacts"].get("student_ptq_onnx", {}), metrics["artifacts"]["student_qat_onnx"]
        if "val_top1" not in ptq or ptq["val_top1"] - qat["val_top1"] <= cfg.max_below_ptq:
            return None
        gap = ptq["val_top1"] - qat["val_top1"]
        watch = metrics.get("collapse_watch") or {}
        growth, start, last = watch.get("max_range_growth"), watch.get("start_top1"), watch.get("last_top1")
        if growth is not None and growth > 10:
            cause = (
                f"an activation range grew {growth:.3g}x over its calibrated value during QAT "
                f"(qat.activation_ranges: {cfg.activation_ranges}); set qat.activation_ranges: fixed"
            )
        elif start is not None and last is not None and last < start - 5:
            cause = (
                f"QAT training took the top-1 on training images from {start:.1f}% (calibrated) to {last:.1f}%; "
                f"lower qat.lr (now {cfg.lr:g}) or qat.epochs (now {cfg.epochs})"
            )
        else:
            cause = "QAT fine-tuning generalised worse than calibration alone on this student"
        return (
            f"QAT int8 top-1 {qat['val_top1']:.2f}% is {gap:.2f} points under PTQ {ptq['val_top1']:.2f}% "
            f"(more than qat.max_below_ptq {cfg.max_below_ptq:g}): {cause}; the PTQ file ships instead"
        )

    def _calibrated(self, ctx: RunContext, cfg: QatConfig, student: nn.Module, keep: list[str]) -> nn.Module:
        return calibrated(student, ctx.data.train, cfg, ctx.config.data.batch_size, ctx.config.seed, keep)

    def _sensitivity(self, ctx: RunContext, cfg: QatConfig, student: nn.Module, keep: list[str]):
        """Per-layer sensitivity of the PTQ model on training images; with auto_keep_float, the layers to keep."""
        train_set, batch_size, seed = ctx.data.train, ctx.config.data.batch_size, ctx.config.seed
        record, ptq, x, y = measure_sensitivity(student, train_set, cfg, batch_size, seed, keep)
        if cfg.auto_keep_float:
            budget = ctx.config.benchmark.budget.max_drop_vs_student
            extra, drop, _ = choose_keep_float(student, ptq, x, y, budget, cfg.max_keep_float)
            keep = keep + extra
            record = dataclasses.replace(record, auto_keep_float=KeptFloat(extra, drop, budget, drop <= budget))
            note = "" if drop <= budget else f", over budget {budget:g} with max_keep_float {cfg.max_keep_float}"
            ctx.reporter.log(
                f"  qat: keep float {extra or 'nothing'} (int8 drop {drop:.2f} points on training images{note})"
            )
        return keep, record.to_dict()

    def _train(
        self,
        ctx: RunContext,
        cfg: QatConfig,
        student: nn.Module,
        inputs: dict[str, Path],
        keep: list[str],
        metrics: dict,
    ) -> nn.Module:
        qat = prepare_qat(
            student, calibration_batches(ctx.data.train, ctx.config.data.batch_size, ctx.config.seed), cfg, keep
        )
        if cfg.distill:
            objective: Objective = self._distillation(ctx, qat, inputs, metrics)
        else:
            objective = CrossEntropy(cfg.label_smoothing)
        epochs = cfg.epochs
        ranges_from = 0 if cfg.activation_ranges == "fixed" else epochs - cfg.freeze_observers_epochs
        watch = self._watch(ctx, cfg, qat) if cfg.watch_every else None
        objective = _FreezeLate(objective, qat, ranges_from, epochs - cfg.freeze_bn_epochs, watch)
        train(qat, ctx.data.train, ctx.data.val, cfg, objective, ctx.train_env("qat"))
        if watch is not None:
            metrics["collapse_watch"] = watch.summary()
        metrics["bn_reestimate"] = settle_batchnorm(ctx, qat, cfg.bn_reestimate, "qat.bn_reestimate")
        return qat.cpu().eval()

    def _watch(self, ctx: RunContext, cfg: QatConfig, qat: nn.Module) -> CollapseWatch:
        """The collapse watch on `qat.watch_images` training images (a fixed, seeded draw)."""
        x, y = sensitivity_split(ctx.data.train, cfg.watch_images, ctx.config.seed)
        steps = math.ceil(len(ctx.data.train) / ctx.config.data.batch_size)
        qat.to(ctx.device)
        return CollapseWatch(qat, x, y, ctx.data.info.num_classes, cfg.watch_every, cfg.watch_growth, steps, cfg.lr)

    def _distillation(self, ctx: RunContext, qat: nn.Module, inputs: dict[str, Path], metrics: dict) -> Distillation:
        """The distill stage's objective (the sweep's winner, feature pairs, its teacher cache) for the QAT model."""
        teacher_path = inputs.get("teacher")
        if teacher_path is None:
            raise EdgekdError("qat.distill is true but there is no teacher artifact; set qat.distill: false")
        teacher, _ = load_model(teacher_path)
        teacher.to(ctx.device)
        settings = inputs.get("distill_settings")  # the sweep's winner, if any
        best = DistillChoice.read(settings).overrides if settings else {}
        kd = with_settings(ctx.config.distill, best)
        info = ctx.data.info
        features = None
        if kd.features:
            features = FeatureDistiller(kd.features, teacher, qat, (info.in_channels, info.image_size, info.image_size))
        cache, note = teacher_cache(ctx, kd, teacher_path, teacher, features, reuse_from=("distill",))
        ctx.reporter.log(f"  qat: teacher cache {note}")
        metrics["teacher_cache"] = note
        return Distillation(teacher, kd, features=features, cache=cache, seed=ctx.config.seed)

    def _export(self, ctx: RunContext, model: nn.Module, artifact_id: str, example: torch.Tensor) -> Path:
        export = ctx.config.export
        return export_qdq_onnx(
            model,
            ctx.out(artifact_id),
            example,
            export.opset,
            dynamic_batch=export.dynamic_batch,
            preprocessing=preprocessing_of(ctx.data.info),
        )

    def _val_logits(self, ctx: RunContext, model: nn.Module) -> dict:
        """Validation logits of a torch model on the CPU: {"val_top1", "classes"}."""
        logits, labels = predict(copy.deepcopy(model).cpu(), ctx.data.val, ctx.config.data.eval_batch_size, "cpu")
        return {"val_top1": evaluate(logits, labels)["val_top1"], "classes": logits.argmax(1).numpy()}

    def _record(self, ctx: RunContext, model: nn.Module, art_id: str, images, fp32: dict, cfg: QatConfig) -> dict:
        path = ctx.out(art_id)
        parity = check_qdq_parity(model, path, images)
        out = artifact_metrics(ctx, art_id, parity, fp32_classes=fp32["classes"])
        out["fake_quant_val_top1"] = self._val_logits(ctx, model)["val_top1"]
        fp32_top1 = fp32["val_top1"]
        out["drop_vs_fp32"] = fp32_top1 - out["val_top1"]
        if out["drop_vs_fp32"] > cfg.max_accuracy_drop:
            ctx.reporter.log(
                f"[yellow]  qat: {path.name} top-1 {out['val_top1']:.2f}% is {out['drop_vs_fp32']:.2f} points "
                f"below fp32 ({fp32_top1:.2f}%), more than qat.max_accuracy_drop {cfg.max_accuracy_drop:g}[/]"
            )
        else:
            ctx.reporter.log(
                f"  qat: {path.name} top-1 {out['val_top1']:.2f}% (fp32 {fp32_top1:.2f}%, "
                f"same class as fp32 on {out['agreement_vs_fp32']:.2f}%)"
            )
        return out
