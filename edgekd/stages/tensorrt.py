"""`tensorrt` stage: build engines on this host when TensorRT and a CUDA GPU exist; else say why not."""

from __future__ import annotations

from pathlib import Path

from edgekd.config import PipelineConfig, TensorRTConfig
from edgekd.errors import EdgekdError
from edgekd.fleet.local import build_local_engines, local_gpu
from edgekd.pipeline import RunContext, StageResult


class TensorRTStage:
    name = "tensorrt"
    section = "tensorrt"
    reads = ("tensorrt", "benchmark.device_name")
    toolchain = ("tensorrt",)
    needs = ("student_onnx",)
    uses = (
        "teacher_onnx",
        "student_qat_onnx",
        "student_ptq_onnx",
        "student_onnx_fp16",
        "teacher_onnx_fp16",
        "calib_set",  # calibrated int8: on the DLA, and the fallback of a Q/DQ build that fails (export stage)
    )
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        if not cfg.tensorrt.enabled:
            return "tensorrt.enabled is false"
        _, why = local_gpu()
        return (
            f"cannot build TensorRT engines on this machine: {why}; build them on the device with `edgekd ship`"
            if why
            else None
        )

    def environment(self, cfg: PipelineConfig, run_dir: Path) -> dict:
        """Engines are built for this GPU: another GPU means other engines."""
        return {"gpu": local_gpu()[0]}

    def run(self, ctx: RunContext, cfg: TensorRTConfig, inputs: dict[str, Path]) -> StageResult:
        built = build_local_engines(ctx.run_dir, inputs, cfg, ctx.config.benchmark.device_name, ctx.out)
        if built.skipped:
            return StageResult(status="skipped", reason=built.skipped)
        if not built.engines:
            raise EdgekdError(
                "tensorrt: no engine could be built: " + "; ".join(f"{n}: {why}" for n, why in built.failed.items())
            )
        return StageResult(
            dict(built.engines),
            {"engines": sorted(built.engines), "failed": built.failed},
        )
