"""`benchmark` stage: latency and accuracy of every artifact of the run on this machine."""

from __future__ import annotations

from pathlib import Path

from edgekd.bench.benchmark import (
    benchmark_artifacts,
    plan_host,
    remeasure_unstable,
    save_val_set,
    settings_from_config,
)
from edgekd.config import BenchmarkConfig, PipelineConfig
from edgekd.distill.trainer import predict
from edgekd.models import load_model
from edgekd.ondevice import catalog
from edgekd.pipeline import RunContext, StageResult

BENCHMARKED = tuple(a.id for a in catalog.benchmarked("host"))
"""Every artifact the host can time: models, exports, int8 files and the engines built here."""


class BenchmarkStage:
    name = "benchmark"
    section = "benchmark"
    reads = (
        "seed",
        "device",
        "data",
        "benchmark",
        "!benchmark.budget",
        "tensorrt.precisions",
    )
    toolchain = ("torch", "onnxruntime")
    needs = ("teacher", "student")
    uses = tuple(a for a in BENCHMARKED if a not in ("teacher", "student"))
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None if cfg.benchmark.enabled else "benchmark.enabled is false"

    def run(self, ctx: RunContext, cfg: BenchmarkConfig, inputs: dict[str, Path]) -> StageResult:
        images, labels = ctx.data.val_arrays()
        teacher, _ = load_model(inputs["teacher"])
        teacher_logits, _ = predict(teacher, ctx.data.val, ctx.config.data.eval_batch_size, "cpu")
        val_set = ctx.out("val_set")
        save_val_set(val_set, images, labels, teacher_logits.numpy())
        settings = settings_from_config(cfg, ctx.config.seed)
        planned = plan_host(ctx.run_dir, ctx.manifest, cfg.device_name)
        ctx.reporter.log(
            f"  benchmark: {sum(p.reason is None for p in planned)} artifacts on {cfg.device_name}, "
            f"batch sizes {cfg.batch_sizes}, {cfg.repeats} interleaved rounds"
        )
        bench = ctx.out("bench")
        doc = benchmark_artifacts(
            planned,
            images,
            labels,
            teacher_logits.numpy(),
            settings,
            cfg.device_name,
            ctx.run_dir,
            torch_device=str(ctx.device),
            out=bench,
        )
        if cfg.repeat_unstable and doc.unstable:
            doc = remeasure_unstable(
                doc,
                cfg.repeat_unstable,
                images,
                labels,
                teacher_logits.numpy(),
                settings,
                ctx.run_dir,
                torch_device=str(ctx.device),
                out=bench,
            )
        for line in doc.unstable:
            ctx.reporter.log(f"  unstable: {line}")
        metrics = {}
        for art in doc.artifacts:
            lat = art.latency[0] if art.latency else None
            metrics[art.id] = {
                "status": art.status,
                "top1": art.accuracy.top1 if art.accuracy else None,
                "p50_ms": lat.p50_ms if lat else None,
                "batch_size": lat.batch_size if lat else None,
                "params": art.params,
                "size_bytes": art.size_bytes,
                "reason": art.reason,
            }
        return StageResult(
            {"bench": bench, "val_set": val_set},
            {"device": cfg.device_name, "artifacts": metrics, "unstable": doc.unstable},
        )
