"""`export` stage: TorchScript and ONNX of the student (and teacher), each checked for parity and accuracy;
an fp16 copy of each ONNX (TensorRT >= 10 builds fp16 engines from it), checked against the fp32 ONNX."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from edgekd.artifacts import quarantine
from edgekd.config import ExportConfig, PipelineConfig
from edgekd.data.datasets import DataInfo
from edgekd.errors import EdgekdError
from edgekd.export import Parity, Preprocessing, check_parity, export_onnx, save_torchscript
from edgekd.export.fp16 import check_fp16_parity, write_fp16_onnx
from edgekd.export.parity import percent_equal, predicted_classes
from edgekd.models import count_params, load_model
from edgekd.ondevice import catalog
from edgekd.pipeline import RunContext, StageResult


def preprocessing_of(info: DataInfo) -> Preprocessing:
    return Preprocessing(
        image_size=info.image_size,
        channels=info.in_channels,
        mean=tuple(info.mean),
        std=tuple(info.std),
        class_names=tuple(info.class_names),
        resize_size=info.resize_size,
    )


def val_batches(ctx: RunContext) -> object:
    """The validation set in eval-size batches, on the CPU (a fresh iterator each call)."""
    return ctx.data.val.batches(ctx.config.data.eval_batch_size)


def artifact_metrics(
    path: Path, ctx: RunContext, parity: object | None = None, fp32_classes: np.ndarray | None = None
) -> dict:
    """size, val top-1 of the file itself, and its parity record; with the fp32 model's top-1 class per
    validation image, `agreement_vs_fp32` (percent of images where the file picks the same class)."""
    preds, labels = predicted_classes(path, val_batches(ctx))
    out = {
        "path": str(path.relative_to(ctx.run_dir)),
        "size_bytes": path.stat().st_size,
        "val_top1": percent_equal(preds, labels),
    }
    if fp32_classes is not None:
        out["agreement_vs_fp32"] = percent_equal(preds, fp32_classes)
    if parity is not None:
        out["parity"] = {k: v for k, v in parity.as_dict().items() if k != "path"}
    return out


class ExportStage:
    name = "export"
    section = "export"
    reads = ("seed", "data", "export")
    toolchain = ("torch", "onnx", "onnxruntime", "onnxslim")
    needs = ("student",)
    uses = ("teacher",)
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        if not cfg.export.enabled:
            return "export.enabled is false"
        if cfg.export.torchscript == "off" and not cfg.export.onnx:
            return "export.torchscript is off and export.onnx is false: nothing to export"
        return None

    def run(self, ctx: RunContext, cfg: ExportConfig, inputs: dict[str, Path]) -> StageResult:
        images, _ = ctx.data.val_arrays(cfg.parity_batch)
        models = [("student", inputs["student"])]
        if cfg.teacher and "teacher" in inputs:
            models.append(("teacher", inputs["teacher"]))
        artifacts: dict[str, Path] = {}
        metrics: dict[str, dict] = {}
        staging = ctx.stage_dir / ".staging"  # files wait here until they pass parity
        for role, source in models:
            model, _ = load_model(source)
            made = self._export(ctx, cfg, staging, role, model, torch.from_numpy(images[:1]))
            try:
                parities = check_parity(model, list(made.values()), images, cfg.atol, cfg.min_agreement, cfg.rtol)
            except EdgekdError as e:  # name the file where it now lies, kept for inspection
                quarantine(made.values(), ctx.stage_dir / "failed")
                raise EdgekdError(str(e).replace(str(staging), str(ctx.stage_dir / "failed"))) from None
            for (name, staged), parity in zip(made.items(), parities):
                path = ctx.stage_dir / staged.name
                os.replace(staged, path)
                artifacts[name] = path
                metrics[name] = {**artifact_metrics(path, ctx, parity), "params": count_params(model)}
            ctx.reporter.log(
                f"  export: {role}: "
                + ", ".join(
                    f"{p.name} max |Δlogit| {r.max_abs_diff:.2g}, top-1 agreement {r.top1_agreement:.1%}"
                    for p, r in zip(made.values(), parities)
                )
            )
            if cfg.onnx and cfg.fp16_onnx:  # an extra for TensorRT >= 10: its failure fails only itself
                try:
                    path, parity = self._fp16(ctx, cfg, staging, role, artifacts[f"{role}_onnx"], images)
                except EdgekdError as e:
                    metrics[f"{role}_onnx_fp16"] = {"status": "failed", "reason": str(e)}
                    ctx.reporter.log(f"[yellow]  export: {role}: no fp16 ONNX: {escape(str(e))}[/]")
                    continue
                artifacts[f"{role}_onnx_fp16"] = path
                metrics[f"{role}_onnx_fp16"] = {**artifact_metrics(path, ctx, parity), "params": count_params(model)}
        return StageResult(
            artifacts, {"artifacts": metrics, "opset": cfg.opset, "exporter": "torch.onnx (dynamo=False)"}
        )

    def _fp16(
        self, ctx: RunContext, cfg: ExportConfig, staging: Path, role: str, fp32: Path, images: np.ndarray
    ) -> tuple[Path, Parity]:
        """The fp16 copy of `fp32`, moved into place once it matches the fp32 file in ONNX Runtime."""
        staged = write_fp16_onnx(fp32, staging / Path(catalog.path_of(f"{role}_onnx_fp16")).name)
        try:
            parity = check_fp16_parity(fp32, staged, images, cfg.fp16_rtol, cfg.min_agreement)
        except EdgekdError as e:  # name the file where it now lies, kept for inspection
            quarantine([staged], ctx.stage_dir / "failed")
            raise EdgekdError(str(e).replace(str(staging), str(ctx.stage_dir / "failed"))) from None
        path = ctx.stage_dir / staged.name
        os.replace(staged, path)
        ctx.reporter.log(
            f"  export: {role}: {path.name} max |Δlogit| {parity.max_abs_diff:.2g} from the fp32 ONNX, "
            f"top-1 agreement {parity.top1_agreement:.1%}"
        )
        return path, parity

    def _export(
        self, ctx: RunContext, cfg: ExportConfig, out: Path, role: str, model: nn.Module, example: torch.Tensor
    ) -> dict[str, Path]:
        made = {}
        if cfg.torchscript != "off":
            made[f"{role}_ts"] = save_torchscript(model, out / f"{role}.ts.pt", example, cfg.torchscript)
        if cfg.onnx:
            made[f"{role}_onnx"] = export_onnx(
                model,
                out / f"{role}.onnx",
                example,
                opset=cfg.opset,
                dynamic_batch=cfg.dynamic_batch,
                simplify=cfg.simplify,
                preprocessing=preprocessing_of(ctx.data.info),
            )
        return made
