"""`benchmark` stage: latency and accuracy of every artifact of the run on this machine."""

from __future__ import annotations

from pathlib import Path

from edgekd.bench.benchmark import benchmark_artifacts, run_artifacts, save_val_set
from edgekd.config import BenchmarkConfig, PipelineConfig
from edgekd.distill.trainer import predict
from edgekd.models import load_model
from edgekd.pipeline import RunContext, StageResult

BENCHMARKED = (
    "teacher_ts",
    "teacher_onnx",
    "student_ts",
    "student_onnx",
    "student_qat_onnx",
    "student_ptq_onnx",
    "student_dynamic_int8_ts",
    "student_dynamic_int8_onnx",
)


class BenchmarkStage:
    name = "benchmark"
    section = "benchmark"
    sections = ("benchmark",)
    needs = ("teacher", "student")
    uses = BENCHMARKED
    makes = ("bench", "val_set")
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None if cfg.benchmark.enabled else "benchmark.enabled is false"

    def key_extras(self, cfg: PipelineConfig) -> dict:
        return {}

    def run(self, ctx: RunContext, cfg: BenchmarkConfig, inputs: dict[str, Path]) -> StageResult:
        images, labels = ctx.data.val_arrays()
        teacher, _ = load_model(inputs["teacher"])
        teacher_logits, _ = predict(teacher, ctx.data.val, ctx.config.data.eval_batch_size, "cpu")
        val_set = ctx.stage_dir.parent / "bench" / "val.npz"
        save_val_set(val_set, images, labels, teacher_logits.numpy())
        entries = run_artifacts(ctx.run_dir, ctx.manifest.doc, cfg.device_name, ctx.config.tensorrt.precisions)
        ctx.reporter.log(
            f"  benchmark: {sum(e.status == 'done' for e in entries)} artifacts on {cfg.device_name}, "
            f"batch sizes {cfg.batch_sizes}"
        )
        doc = benchmark_artifacts(
            entries,
            images,
            labels,
            teacher_logits.numpy(),
            cfg,
            cfg.device_name,
            ctx.run_dir,
            torch_device=str(ctx.device),
        )
        metrics = {}
        for art in doc["artifacts"]:
            lat = art["latency"][0] if art["latency"] else {}
            acc = art["accuracy"] or {}
            metrics[art["name"]] = {
                "status": art["status"],
                "top1": acc.get("top1"),
                "p50_ms": lat.get("p50_ms"),
                "batch_size": lat.get("batch_size"),
                "params": art["params"],
                "size_bytes": art["size_bytes"],
                "reason": art["reason"],
            }
        bench = ctx.run_dir / "bench" / f"{cfg.device_name}.json"
        return StageResult({"bench": bench, "val_set": val_set}, {"device": cfg.device_name, "artifacts": metrics})
