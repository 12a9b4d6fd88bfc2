"""`dynamic_quant` stage: dynamic int8 of the student's Linear/LSTM/GRU layers for CPUs (PyTorch and ONNX Runtime).

A model without such layers gets status "skipped" with the reason, never an unquantized file named int8.
Activation scales are computed per batch, so each file's top-1 depends on the batch it runs at: the metrics
give `val_top1` (at `data.eval_batch_size`, `val_top1_batch`) and `val_top1_by_batch` at every
`benchmark.batch_sizes`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from edgekd.config import DynamicQuantConfig, PipelineConfig
from edgekd.export import export_onnx, measure_parity
from edgekd.export.parity import reference_logits, top1_accuracy
from edgekd.models import load_model
from edgekd.pipeline import RunContext, StageResult
from edgekd.quant.dynamic import DynamicQuantResult, quantize_dynamic_onnx, quantize_dynamic_torchscript
from edgekd.stages.common import artifact_metrics


class DynamicQuantStage:
    name = "dynamic_quant"
    section = "dynamic_quant"
    reads = ("seed", "data", "dynamic_quant", "export.opset", "export.parity_batch", "benchmark.batch_sizes")
    toolchain = ("torch", "onnx", "onnxruntime")
    needs = ("student",)
    uses: tuple[str, ...] = ()
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        if not cfg.dynamic_quant.enabled:
            return "dynamic_quant.enabled is false"
        if not (cfg.dynamic_quant.torch or cfg.dynamic_quant.onnx):
            return "dynamic_quant.torch and dynamic_quant.onnx are both false"
        return None

    def run(self, ctx: RunContext, cfg: DynamicQuantConfig, inputs: dict[str, Path]) -> StageResult:
        student, _ = load_model(inputs["student"])
        images, _ = ctx.data.val_arrays(ctx.config.export.parity_batch)
        example = torch.from_numpy(images[:1])
        results: dict[str, DynamicQuantResult] = {}
        if cfg.torch:
            results["student_dynamic_int8_ts"] = quantize_dynamic_torchscript(
                student, ctx.out("student_dynamic_int8_ts"), example
            )
        if cfg.onnx:
            with tempfile.TemporaryDirectory(dir=ctx.stage_dir) as tmp:
                fp32 = export_onnx(student, Path(tmp) / "student_fp32.onnx", example, opset=ctx.config.export.opset)
                results["student_dynamic_int8_onnx"] = quantize_dynamic_onnx(fp32, ctx.out("student_dynamic_int8_onnx"))
        reference = reference_logits(student, images)
        artifacts, metrics = {}, {}
        for name, result in results.items():
            entry = {"status": result.status, "layers": result.layers, "reason": result.reason}
            if result.status == "done":
                path = Path(result.path)
                artifacts[name] = path
                entry.update(artifact_metrics(ctx, name, measure_parity(path, images, reference)))
                entry["val_top1_batch"] = ctx.config.data.eval_batch_size
                # activation scales are computed per batch: the same file scores differently at each batch size
                entry["val_top1_by_batch"] = {
                    bs: top1_accuracy(path, ctx.data.val.batches(bs)) for bs in ctx.config.benchmark.batch_sizes
                }
                by_batch = ", ".join(f"b{bs} {top1:.2f}%" for bs, top1 in entry["val_top1_by_batch"].items())
                ctx.reporter.log(
                    f"  dynamic_quant: {path.name}: {len(result.layers)} layer(s) int8 "
                    f"({', '.join(result.layers)}), val top-1 {entry['val_top1']:.2f}% at batch "
                    f"{entry['val_top1_batch']} ({by_batch})"
                )
            metrics[name] = entry
        if not artifacts:
            reasons = "; ".join(r.reason for r in results.values() if r.reason)
            return StageResult(metrics={"artifacts": metrics}, status="skipped", reason=reasons)
        return StageResult(artifacts, {"artifacts": metrics})
