"""`export` stage: TorchScript and ONNX of the student (and teacher), each checked for parity and accuracy;
an fp16 copy of each ONNX (TensorRT >= 10 builds fp16 engines from it), checked against the fp32 ONNX; the
calibration set of int8 engines (`calib_set`: training images), here so that it exists before any engine is built
(the tensorrt stage on this host, or a device)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from edgekd.artifacts import quarantine
from edgekd.bench.calibration import write_training_calibration
from edgekd.config import ExportConfig, PipelineConfig
from edgekd.errors import EdgekdError
from edgekd.export import Parity, check_parity, export_onnx, save_torchscript
from edgekd.export.fp16 import check_fp16_parity, write_fp16_onnx
from edgekd.models import count_params, load_model
from edgekd.pipeline import RunContext, StageResult
from edgekd.stages.common import artifact_metrics, preprocessing_of


class ExportStage:
    name = "export"
    section = "export"
    reads = ("seed", "data", "export", "tensorrt.calibration_images")
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
        for role, source in models:
            model, _ = load_model(source)
            made = self._export(ctx, cfg, role, model, torch.from_numpy(images[:1]))
            try:
                parities = check_parity(model, list(made.values()), images, cfg.atol, cfg.min_agreement, cfg.rtol)
            except EdgekdError as e:  # name the file where it will lie: the runner keeps a failed stage's files
                raise EdgekdError(str(e).replace(str(ctx.out(f"{role}_onnx").parent), str(ctx.failed_dir()))) from None
            for (name, path), parity in zip(made.items(), parities):
                artifacts[name] = path
                metrics[name] = {**artifact_metrics(ctx, name, parity), "params": count_params(model)}
            ctx.reporter.log(
                f"  export: {role}: "
                + ", ".join(
                    f"{p.name} max |Δlogit| {r.max_abs_diff:.2g}, top-1 agreement {r.top1_agreement:.1%}"
                    for p, r in zip(made.values(), parities)
                )
            )
            if cfg.onnx and cfg.fp16_onnx:  # an extra for TensorRT >= 10: its failure fails only itself
                try:
                    path, parity = self._fp16(ctx, cfg, role, artifacts[f"{role}_onnx"], images)
                except EdgekdError as e:
                    metrics[f"{role}_onnx_fp16"] = {"status": "failed", "reason": str(e)}
                    ctx.reporter.log(f"[yellow]  export: {role}: no fp16 ONNX: {escape(str(e))}[/]")
                    continue
                artifacts[f"{role}_onnx_fp16"] = path
                metrics[f"{role}_onnx_fp16"] = {
                    **artifact_metrics(ctx, f"{role}_onnx_fp16", parity),
                    "params": count_params(model),
                }
        if cfg.onnx:  # engines are built from the ONNX files: int8 ones calibrate with these training images
            artifacts["calib_set"] = ctx.out("calib_set")
            write_training_calibration(
                artifacts["calib_set"], ctx.data.train, ctx.config.tensorrt.calibration_images, ctx.config.seed
            )
        return StageResult(
            artifacts, {"artifacts": metrics, "opset": cfg.opset, "exporter": "torch.onnx (dynamo=False)"}
        )

    def _fp16(
        self, ctx: RunContext, cfg: ExportConfig, role: str, fp32: Path, images: np.ndarray
    ) -> tuple[Path, Parity]:
        """The fp16 copy of `fp32`, kept once it matches the fp32 file in ONNX Runtime."""
        path = write_fp16_onnx(fp32, ctx.out(f"{role}_onnx_fp16"))
        try:
            parity = check_fp16_parity(fp32, path, images, cfg.fp16_rtol, cfg.min_agreement)
        except EdgekdError as e:  # name the file where it now lies, kept for inspection
            quarantine([path], ctx.failed_dir())
            raise EdgekdError(str(e).replace(str(path.parent), str(ctx.failed_dir()))) from None
        ctx.reporter.log(
            f"  export: {role}: {path.name} max |Δlogit| {parity.max_abs_diff:.2g} from the fp32 ONNX, "
            f"top-1 agreement {parity.top1_agreement:.1%}"
        )
        return path, parity

    def _export(
        self, ctx: RunContext, cfg: ExportConfig, role: str, model: nn.Module, example: torch.Tensor
    ) -> dict[str, Path]:
        made = {}
        if cfg.torchscript != "off":
            made[f"{role}_ts"] = save_torchscript(model, ctx.out(f"{role}_ts"), example, cfg.torchscript)
        if cfg.onnx:
            made[f"{role}_onnx"] = export_onnx(
                model,
                ctx.out(f"{role}_onnx"),
                example,
                opset=cfg.opset,
                dynamic_batch=cfg.dynamic_batch,
                simplify=cfg.simplify,
                preprocessing=preprocessing_of(ctx.data.info),
            )
        return made
