"""`qat` stage: int8 quantization-aware fine-tuning of the distilled student (and PTQ), to Q/DQ ONNX.

QAT trains with the distill stage's loop and, when `qat.distill`, its KD loss against the teacher
(logit distillation only: feature pairs and the teacher cache are not used here). Activation ranges
are frozen for the last `qat.freeze_observers_epochs` epochs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from edgekd.config import PipelineConfig, QatConfig
from edgekd.distill.objectives import CrossEntropy, Distillation
from edgekd.distill.trainer import Objective, evaluate, predict, train
from edgekd.errors import EdgekdError
from edgekd.models import load_model, save_model
from edgekd.pipeline import RunContext, StageResult
from edgekd.quant import calibrate_ptq, check_qdq_parity, export_qdq_onnx, freeze_observers, prepare_qat
from edgekd.stages.export import artifact_metrics, preprocessing_of

QAT_FORMAT = "edgekd.qat/1"  # a QAT state_dict: load it into quantizable_copy(spec.build())


class _FreezeRangesLate:
    """The training objective, plus: activation ranges frozen from epoch `freeze_from` on (also after a resume)."""

    def __init__(self, objective: Objective, model: nn.Module, freeze_from: int) -> None:
        self.objective = objective
        self.model = model
        self.freeze_from = freeze_from

    def begin_epoch(self, epoch: int, num_epochs: int) -> dict:
        frozen = epoch >= self.freeze_from
        if frozen:
            freeze_observers(self.model)
        return {**self.objective.begin_epoch(epoch, num_epochs), "ranges_frozen": frozen}

    def __getattr__(self, name: str):  # modules, loss, end_epoch, state_dict, load_state_dict
        return getattr(self.objective, name)


class QatStage:
    name = "qat"
    section = "qat"
    reads = ("seed", "device", "data", "qat", "distill", "export.opset", "export.dynamic_batch", "export.parity_batch")
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
        fp32_top1 = self._top1(ctx, student)
        artifacts: dict[str, Path] = {}
        metrics: dict = {"fp32_val_top1": fp32_top1, "artifacts": {}}
        if cfg.ptq:
            ptq = calibrate_ptq(student, self._calibration(ctx), cfg.calibration_batches)
            path = self._export(ctx, ptq, "student_ptq_int8_qdq.onnx", example)
            metrics["artifacts"]["student_ptq_onnx"] = self._record(ctx, ptq, path, images, fp32_top1, cfg)
            artifacts["student_ptq_onnx"] = path
        if cfg.epochs > 0:
            qat = self._train(ctx, cfg, student, inputs)
            model_path = ctx.stage_dir / "student_qat.pt"
            save_model(model_path, qat, spec, format=QAT_FORMAT, data=ctx.data.info.to_dict())
            path = self._export(ctx, qat, "student_int8_qdq.onnx", example)
            metrics["artifacts"]["student_qat_onnx"] = self._record(ctx, qat, path, images, fp32_top1, cfg)
            artifacts.update(student_qat=model_path, student_qat_onnx=path)
        return StageResult(artifacts, metrics)

    def _calibration(self, ctx: RunContext):
        generator = torch.Generator().manual_seed(ctx.config.seed)
        return ctx.data.train.batches(ctx.config.data.batch_size, shuffle=True, generator=generator)

    def _train(self, ctx: RunContext, cfg: QatConfig, student: nn.Module, inputs: dict[str, Path]) -> nn.Module:
        qat = prepare_qat(student, self._calibration(ctx), cfg)
        if cfg.distill:
            teacher_path = inputs.get("teacher")
            if teacher_path is None:
                raise EdgekdError("qat.distill is true but there is no teacher artifact; set qat.distill: false")
            teacher, _ = load_model(teacher_path)
            settings = inputs.get("distill_settings")  # the sweep's winner, if any
            best = json.loads(settings.read_text())["overrides"] if settings else {}
            kd = ctx.config.distill.model_copy(update={"features": [], "teacher_cache": False, **best})
            objective: Objective = Distillation(teacher.to(ctx.device), kd, seed=ctx.config.seed)
        else:
            objective = CrossEntropy(cfg.label_smoothing)
        objective = _FreezeRangesLate(objective, qat, cfg.epochs - cfg.freeze_observers_epochs)
        train(
            qat,
            ctx.data.train,
            ctx.data.val,
            cfg,
            objective,
            work_dir=ctx.stage_dir,
            key=ctx.key,
            seed=ctx.config.seed,
            batch_size=ctx.config.data.batch_size,
            eval_batch_size=ctx.config.data.eval_batch_size,
            device=ctx.device,
            reporter=ctx.reporter,
            label="qat",
        )
        return qat.cpu().eval()

    def _export(self, ctx: RunContext, model: nn.Module, filename: str, example: torch.Tensor) -> Path:
        export = ctx.config.export
        return export_qdq_onnx(
            model,
            ctx.stage_dir / filename,
            example,
            export.opset,
            dynamic_batch=export.dynamic_batch,
            preprocessing=preprocessing_of(ctx.data.info),
        )

    def _top1(self, ctx: RunContext, model: nn.Module) -> float:
        logits, labels = predict(copy.deepcopy(model).cpu(), ctx.data.val, ctx.config.data.eval_batch_size, "cpu")
        return evaluate(logits, labels)["val_top1"]

    def _record(self, ctx: RunContext, model: nn.Module, path: Path, images, fp32_top1: float, cfg: QatConfig) -> dict:
        parity = check_qdq_parity(model, path, images)
        out = {**artifact_metrics(path, ctx, parity), "fake_quant_val_top1": self._top1(ctx, model)}
        out["drop_vs_fp32"] = fp32_top1 - out["val_top1"]
        if out["drop_vs_fp32"] > cfg.max_accuracy_drop:
            ctx.reporter.log(
                f"[yellow]  qat: {path.name} top-1 {out['val_top1']:.2f}% is {out['drop_vs_fp32']:.2f} points "
                f"below fp32 ({fp32_top1:.2f}%), more than qat.max_accuracy_drop {cfg.max_accuracy_drop:g}[/]"
            )
        else:
            ctx.reporter.log(f"  qat: {path.name} top-1 {out['val_top1']:.2f}% (fp32 {fp32_top1:.2f}%)")
        return out
