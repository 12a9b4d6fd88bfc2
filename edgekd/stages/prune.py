"""`prune` stage: the student is the teacher with whole channels removed (student.prune), step by step.

Each step removes at most `max_step` of the MACs (edgekd.prune, on Torch-Pruning), exports the candidate and times
it at batch 1 on `target.device` with the scout's timer (edgekd.fleet.timing: ONNX Runtime here, or shipped to a
devices.yaml device and judged on its fastest engine, else its ONNX Runtime file), then recovers for
`recover_epochs` by distillation from the unpruned teacher with the distill section's objective. A
`macs`/`params` target is reached in `steps` equal steps; a `latency_ms` target stops at the first step whose
candidate meets it, judged at step 0's machine speed: each candidate is timed in the same rounds as the teacher's
file, and its share of the teacher's time is multiplied by the teacher's figure at step 0 (a machine's speed drifts
between steps; the share does not). Each step's record names the device, the row and precision its figure is of
and what ran it.
The result (the pruned layer sizes in its spec, never a pickled module) is the student the distill stage trains
with its full budget.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from edgekd.config import PipelineConfig, StudentConfig
from edgekd.config.pipeline import PruneConfig
from edgekd.distill.trainer import evaluate, predict
from edgekd.errors import EdgekdError
from edgekd.fleet.timing import (
    device_settings,
    device_toolchain,
    machine,
    prune_target,
    runtime_label,
    timer_for,
)
from edgekd.models import load_model, save_model
from edgekd.models.structure import structure_of
from edgekd.ondevice import catalog
from edgekd.ondevice.measure import Settings
from edgekd.pipeline import RunContext, StageResult
from edgekd.prune.latency import time_candidate
from edgekd.prune.pruner import choose_share, cut, settings_of, size_of, taylor_gradients
from edgekd.run_records import PruneStep, not_faster
from edgekd.stages.common import distil, model_summary

EXAMPLE_IMAGES = 2
"""Training images that trace the model for Torch-Pruning and the ONNX export (shapes only)."""


class PruneStage:
    name = "prune"
    section = "student"
    # recovery distils with the distill section's losses and optimiser, for recover_epochs instead of its epochs
    # steps are exported at export.opset, as the scout exports its candidates
    reads = ("seed", "device", "data", "student", "distill", "!distill.epochs", "export.opset")
    toolchain = ("torch", "torchvision", "torch-pruning", "onnxruntime")
    needs = ("teacher",)
    uses: tuple[str, ...] = ()
    distributed = False

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None if cfg.student.prune is not None else "student.model is set (no student.prune)"

    def environment(self, cfg: PipelineConfig, run_dir: Path) -> dict:
        """Where the steps are timed: this machine, or the device's devices.yaml entry and the runtime versions its
        probe reports (one SSH round trip: an upgraded device prunes again)."""
        target = prune_target(cfg.student.prune)
        return {"machine": machine(target), "runtimes": device_toolchain(target)}

    def run(self, ctx: RunContext, cfg: StudentConfig, inputs: dict[str, Path]) -> StageResult:
        prune: PruneConfig = cfg.prune
        target = prune.target
        data, info = ctx.data, ctx.data.info
        teacher, t_spec = load_model(inputs["teacher"])
        shape = (info.in_channels, info.image_size, info.image_size)
        images, labels, _ = next(iter(data.train.batches(ctx.config.data.batch_size)))
        example = images[:EXAMPLE_IMAGES].float()
        kind = "params" if target.kind == "params" else "macs"
        settings = settings_of(prune, kind)
        timing = prune.timing
        where = prune_target(prune)
        timer = timer_for(where, ctx.rundir.prune_device_dir(where.name))
        timing_settings = device_settings(
            where,
            Settings(
                (1,),
                timing.warmup,
                timing.min_runs,
                timing.min_seconds,
                timing.repeats,
                timing.threads,
                ctx.config.seed,
            ),
        )
        base = size_of(teacher, shape)
        candidates = ctx.stage_dir / "candidates"

        def log(message: str) -> None:
            ctx.reporter.log(f"  {message}")

        def latency(model: torch.nn.Module, step: int) -> dict:  # exports from the CPU: `model` stays there
            path = candidates / f"step{step}.onnx"
            reference = candidates / "step0.onnx" if step else None  # the teacher, in the same rounds
            opset = ctx.config.export.opset
            rec, lat, ref = time_candidate(model, example, path, timer, timing_settings, opset, log, reference)
            row = catalog.get(rec.id)
            return {
                "latency_ms": lat.p50_ms,
                "latency_spread": lat.spread,
                "device": where.name,
                "artifact": rec.id,
                "precision": row.precision,
                "runtime": runtime_label(rec),
                "teacher_ms": ref.p50_ms if ref is not None else None,
                "unstable": lat.unstable,
            }

        lat0 = latency(teacher, 0)
        if target.latency_ms is not None and lat0["latency_ms"] <= target.latency_ms:
            raise EdgekdError(
                f"student.prune.target.latency_ms: the unpruned teacher already runs in {lat0['latency_ms']:.3f} ms "
                f"on {where.name} ({lat0['runtime']} {lat0['precision']}) (<= {target.latency_ms:g}); nothing to "
                "prune: lower the target or distil into the teacher's model"
            )
        student = copy.deepcopy(teacher)  # pruned on the CPU; recovery moves it to the device and back
        teacher.to(ctx.device)  # the frozen teacher of every recovery
        t_val, val_labels = predict(teacher, data.val, ctx.config.data.eval_batch_size, ctx.device)
        t_top1 = evaluate(t_val, val_labels)["val_top1"]
        steps = [PruneStep(0, 0.0, base.macs, base.params, 1.0, 1.0, val_top1=t_top1, **lat0)]
        recover = ctx.config.distill.model_copy(
            update={"epochs": prune.recover_epochs, "lr": prune.recover_lr or ctx.config.distill.lr}
        )
        for k in range(1, prune.steps + 1):
            if target.latency_ms is None:
                share = getattr(target, kind)
                goal = int(base.of(kind) * share ** (k / prune.steps))
            else:
                goal = int(base.macs * (1 - prune.max_step) ** k)
            if prune.importance == "taylor":
                taylor_gradients(student, images.float(), labels)
            choice = choose_share(student, example, goal, settings)
            cut(student, example, choice.share, settings)
            student.zero_grad(set_to_none=True)
            size = size_of(student, shape)
            lat = latency(student, k)
            ctx.reporter.log(
                f"  prune step {k}: channel share {choice.share:.3f}, MACs {size.macs / base.macs:.2f} and params "
                f"{size.params / base.params:.2f} of the teacher's, {lat['latency_ms']:.3f} ms at batch 1 on "
                f"{where.name} (the teacher {lat['teacher_ms']:.3f} ms in the same rounds)"
            )
            top1 = None
            if prune.recover_epochs:
                _, val, _ = distil(
                    ctx, recover, student, teacher, inputs["teacher"], t_val, ctx.stage_dir / f"step{k}", f"prune {k}"
                )
                top1 = val["val_top1"]
            judged = None
            if target.latency_ms is not None:  # at step 0's machine speed: the share of the teacher beside it
                judged = lat["latency_ms"] / lat["teacher_ms"] * lat0["latency_ms"]
                met = judged <= target.latency_ms
            else:
                met = size.of(kind) <= base.of(kind) * getattr(target, kind) + 1e-6
            steps.append(
                PruneStep(
                    k,
                    round(choice.share, 4),
                    size.macs,
                    size.params,
                    size.macs / base.macs,
                    size.params / base.params,
                    val_top1=top1,
                    met_target=met,
                    judged_ms=judged,
                    **lat,
                )
            )
            if met and target.latency_ms is not None:
                break
        if not steps[-1].met_target:
            last = steps[-1]
            ms = f"{last.latency_ms:.3f} ms" if last.judged_ms is None else f"{last.judged_ms:.3f} ms at step 0's speed"
            raise EdgekdError(
                f"student.prune.target: {target.kind} {getattr(target, target.kind):g} not met after {last.step} "
                f"steps (last: MACs {last.macs_share:.2f}, params {last.params_share:.2f} of the teacher's, "
                f"{ms} on {where.name}); raise student.prune.steps or lower round_to"
            )
        student.cpu().eval()
        spec = dataclasses.replace(t_spec, structure=structure_of(student, t_spec.build()))
        out = ctx.out("pruned_student")
        save_model(out, student, spec, data=info.to_dict())
        _check_reload(out, student, example)
        metrics = {
            **model_summary(out),
            "target": target.model_dump(exclude_none=True),
            "steps": [s.to_dict() for s in steps],
            "macs_share": steps[-1].macs_share,
            "params_share": steps[-1].params_share,
            "latency_not_lower_at_steps": [s.step for _, s in not_faster(steps)],
        }
        if steps[-1].val_top1 is not None:
            metrics["val_top1"] = steps[-1].val_top1
        return StageResult({"pruned_student": out}, metrics)


def _check_reload(path: Path, model: torch.nn.Module, example: torch.Tensor) -> None:
    """The saved file rebuilds the same network (registry model + layer sizes + weights_only state dict)."""
    reloaded, _ = load_model(path)
    with torch.inference_mode():
        a, b = model.eval()(example), reloaded(example)
    if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
        raise RuntimeError(f"{path}: the reloaded pruned model differs from the pruned one by {(a - b).abs().max():g}")
