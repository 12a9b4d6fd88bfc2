"""`teacher` stage: load the user's checkpoint, or train the teacher on hard labels."""

from __future__ import annotations

from pathlib import Path

from edgekd.config import PipelineConfig, TeacherConfig
from edgekd.distill.objectives import CrossEntropy
from edgekd.distill.trainer import evaluate, predict, train
from edgekd.models import build_model, load_state_dict_file, save_model
from edgekd.pipeline import RunContext, StageResult
from edgekd.stages.common import model_summary, spec_for


class TeacherStage:
    name = "teacher"
    section = "teacher"
    reads = ("seed", "device", "data", "teacher")
    toolchain = ("torch", "torchvision")
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    distributed = True

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None

    def run(self, ctx: RunContext, cfg: TeacherConfig, inputs: dict[str, Path]) -> StageResult:
        data = ctx.data
        spec = spec_for(ctx, cfg.model)
        model = build_model(cfg.model, spec.num_classes, spec.in_channels)
        history: list[dict] = []
        if cfg.checkpoint is not None:
            load_state_dict_file(model, cfg.checkpoint)
            source = str(cfg.checkpoint)
        else:
            result = train(
                model,
                data.train,
                data.val,
                cfg.train,
                CrossEntropy(cfg.train.label_smoothing),
                work_dir=ctx.stage_dir,
                key=ctx.key,
                seed=ctx.config.seed,
                batch_size=ctx.config.data.batch_size,
                eval_batch_size=ctx.config.data.eval_batch_size,
                device=ctx.device,
                reporter=ctx.reporter,
                label="teacher",
            )
            history = result.history
            source = "trained"
        model.cpu().eval()
        logits, labels = predict(model, data.val, ctx.config.data.eval_batch_size, "cpu")
        val = evaluate(logits, labels)
        out = ctx.stage_dir / "model.pt"
        save_model(out, model, spec, data=data.info.to_dict())
        return StageResult({"teacher": out}, {**val, **model_summary(out), "source": source, "epochs": len(history)})
