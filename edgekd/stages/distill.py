"""`distill` stage: train the student against the frozen teacher; with `sweep:`, an Optuna study over the distill
settings (edgekd.search.study) whose winner, chosen on a split carved from the training data, goes on."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgekd import distributed
from edgekd.config import DistillConfig, PipelineConfig, with_settings
from edgekd.data.datasets import ImageSet, carve
from edgekd.distill.trainer import METRICS, TrainResult, evaluate, predict, read_history
from edgekd.errors import EdgekdError
from edgekd.models import load_model, save_model
from edgekd.ondevice.files import write_bytes_atomic
from edgekd.pipeline import RunContext, StageResult
from edgekd.run_records import DistillChoice, SweepTrial, ValOutcome
from edgekd.search import lockstep
from edgekd.stages.common import distil, initial_student, model_summary, student_spec


class DistillStage:
    name = "distill"
    section = "distill"
    reads = ("seed", "device", "data", "student", "distill", "sweep")
    toolchain = ("torch", "torchvision")
    needs = ("teacher",)
    uses = ("pruned_student", "scout_student")  # the student to start from, with student.prune or auto
    distributed = True

    def skip_reason(self, cfg: PipelineConfig) -> str | None:
        return None

    def run(self, ctx: RunContext, cfg: DistillConfig, inputs: dict[str, Path]) -> StageResult:
        data = ctx.data
        self._init: dict = {}
        self._bn: dict = {"ran": False, "reason": None}  # no training in this process (a sweep's winner loaded)
        teacher, t_spec = load_model(inputs["teacher"])
        spec = student_spec(ctx, inputs)
        if t_spec.num_classes != spec.num_classes:
            raise EdgekdError(
                f"teacher: {inputs['teacher']} predicts {t_spec.num_classes} classes but the data has "
                f"{spec.num_classes}; teacher and student must share the label set"
            )
        teacher.to(ctx.device)
        t_val, labels = predict(teacher, data.val, ctx.config.data.eval_batch_size, ctx.device)
        teacher_val = evaluate(t_val, labels)
        choice, sweep_metrics = DistillChoice({}), {}
        if ctx.config.sweep is None:
            student, result, cache_note, _ = self._train(
                ctx, cfg, inputs["teacher"], teacher, inputs, None, None, t_val
            )
            work_dir = ctx.stage_dir
        else:
            sweep = Sweep(self, ctx, cfg, inputs["teacher"], teacher, inputs)
            sweep.work()
            student, result, cache_note, best, work_dir, sweep_metrics = sweep.winner()
            choice = DistillChoice(best.settings)
        student.cpu().eval()
        logits, labels = predict(student, data.val, ctx.config.data.eval_batch_size, "cpu")
        val = {**evaluate(logits, labels, t_val), "student_init": self._init, "bn_reestimate": self._bn}
        out = ctx.out("student")
        save_model(out, student, spec, data=data.info.to_dict())
        metrics = {
            **val,
            **model_summary(out),
            "teacher_val_top1": teacher_val["val_top1"],
            "epochs": len(result.history),
            "resumed_from_epoch": result.resumed_from,
            "teacher_cache": cache_note,
            "feature_pairs": len(cfg.features),
            "val_correct": ValOutcome.of((logits.argmax(1) == labels).numpy()).to_dict(),
        }
        settings = ctx.out("distill_settings")  # the winning settings, for qat's KD
        choice.write(settings)
        artifacts = {"student": out, "distill_settings": settings}
        if sweep_metrics:
            metrics["sweep"] = sweep_metrics
            metrics["sweep_best"] = choice.overrides
            ctx.reporter.log(
                f"  distill sweep: best trial {sweep_metrics['best']} {choice.name}: selection top-1 "
                f"{sweep_metrics['best_selection_top1']:.2f}%, val top-1 {val['val_top1']:.2f}%"
            )
        chance = 100.0 / spec.num_classes
        if val["val_top1"] < 1.5 * chance:  # a diverged student fails parity checks stages later otherwise
            losses = ", ".join(f"{h.get('train_loss', float('nan')):.3g}" for h in result.history)
            metrics["diverged"] = True
            bn = val["bn_reestimate"]
            if bn.get("reason") and not bn["ran"]:  # trained fine, evaluated with statistics that do not match
                why = (
                    f"its BatchNorm running statistics do not match the weights ({bn['reason']}; train-mode top-1 "
                    f"on training images {bn['train_top1']:.1f}%); set distill.bn_reestimate: auto (or true)"
                )
            else:
                why = f"diverged or under-trained at distill.lr {cfg.lr:g}; train loss by epoch: {losses}"
            metrics["diverged_reason"] = why
            ctx.reporter.log(
                f"[yellow]  distill: student val top-1 {val['val_top1']:.2f}% is near chance ({chance:.1f}%): {why}[/]"
            )
        if result.history:  # the winner's curves
            metrics_file = ctx.out("distill_metrics")
            write_bytes_atomic(metrics_file, (work_dir / METRICS).read_bytes())
            artifacts["distill_metrics"] = metrics_file
        return StageResult(artifacts, metrics)

    def sweep_worker(self, ctx: RunContext, inputs: dict[str, Path]) -> list[SweepTrial]:
        """`edgekd sweep`: one more worker of the study the stage would run now; runs trials until the study has its
        number of finished ones and returns them. The stage itself (`edgekd run`) then picks the winner."""
        if ctx.config.sweep is None:
            raise EdgekdError(f"{ctx.pipeline.source or ctx.pipeline.name}: has no `sweep:` section to work on")
        self._init = {}
        teacher, _ = load_model(inputs["teacher"])
        teacher.to(ctx.device)
        sweep = Sweep(self, ctx, ctx.config.distill, inputs["teacher"], teacher, inputs)
        sweep.work()
        return sweep.search.trials_of(sweep.study)

    def _train(
        self,
        ctx: RunContext,
        cfg: DistillConfig,
        teacher_path: Path,
        teacher: nn.Module,
        inputs: dict[str, Path],
        train_set: ImageSet | None,
        score_set: ImageSet | None,
        t_score,
        work_dir: Path | None = None,
        seed: int | None = None,
        on_epoch=None,
    ):
        """Distil one student with `cfg` on `train_set`, scored each epoch on `score_set` (teacher logits `t_score`):
        (student, TrainResult, teacher-cache note, scores on `score_set`)."""
        seed = ctx.config.seed if seed is None else seed
        torch.manual_seed(seed)  # a sweep trial's initialisation is a function of its own seed
        student, self._init = initial_student(ctx, student_spec(ctx, inputs), inputs)
        ctx.reporter.log(f"  distill: student from {self._init['weights']}")
        result, scores, cache_note = distil(
            ctx,
            cfg,
            student,
            teacher,
            teacher_path,
            t_score,
            work_dir or ctx.stage_dir,
            "distill",
            reuse_from=("prune", "scout"),
            train_set=train_set,
            score_set=score_set,
            seed=seed,
            on_epoch=on_epoch,
        )
        self._bn = scores["bn_reestimate"]
        return student, result, cache_note, scores


@dataclass(frozen=True)
class Standings:
    """What rank 0 reads of the finished study, sent to every rank for the winner step."""

    trials: list[SweepTrial]
    best: SweepTrial
    importance: dict[str, float]
    trained_here: bool  # the winner's student file is this run's own


class Sweep:
    """One worker of the distill sweep's Optuna study: trains trials on the training data less the selection
    split, scores them on that split, and (in the stage) loads or reproduces the winner."""

    def __init__(
        self,
        stage: DistillStage,
        ctx: RunContext,
        cfg: DistillConfig,
        teacher_path: Path,
        teacher: nn.Module,
        inputs: dict[str, Path],
    ) -> None:
        from edgekd.search import study as search

        self.search, self.stage, self.ctx, self.cfg = search, stage, ctx, cfg
        self.teacher_path, self.teacher, self.inputs = teacher_path, teacher, inputs
        self.cache_note = "not used (no trial trained in this process)"
        self.sweep = ctx.config.sweep
        seed = ctx.config.seed
        self.fit, self.selection = carve(ctx.data.train, self.sweep.selection_split, seed)
        distributed.agree(self._selection_sha256(), "sweep: the selection split")  # one split on every rank
        self.t_sel, _ = predict(teacher, self.selection, ctx.config.data.eval_batch_size, ctx.device)
        self.name = f"{ctx.pipeline.name}-distill-{ctx.key[:16]}"
        storage = ctx.sweep_storage
        self.storage_shown = search.shown(storage) if storage else f"sqlite:///{ctx.rundir.study_db}"
        self.lead = lockstep.Lead()
        self.study = None  # rank 0 alone talks to the study; the other ranks follow its orders (lockstep)
        if distributed.is_main():
            # one worker (the default storage): the sampler's seed is the run's; several: each worker its own draws
            sampler_seed = seed if storage is None else hash((seed, ctx.rundir.root.as_posix(), os.getpid()))
            with self.lead:  # the other ranks wait for the first order meanwhile
                self.study = search.open_study(
                    self.name,
                    search.open_storage(storage, ctx.rundir.study_db, self.sweep),
                    self.sweep,
                    sampler_seed % 2**31,
                )

    def _selection_sha256(self) -> str:
        return hashlib.sha256(self.selection.indices.numpy().tobytes()).hexdigest()

    def _record(self, trial: SweepTrial) -> None:
        trial.write(self.ctx.rundir.trial_record(self.name, trial.number))

    def _train(self, plan, on_epoch=None) -> tuple:
        ctx = self.ctx
        # rank 0 trains in the trial's folder; the other ranks in their scratch copy of the stage's folder
        work_dir = (
            ctx.rundir.trial_dir(self.name, plan.number)
            if distributed.is_main()
            else ctx.stage_dir / f"trial-{plan.number}"
        )
        work_dir.mkdir(parents=True, exist_ok=True)
        trial_cfg = with_settings(self.cfg, plan.settings)
        student, result, note, sel = self.stage._train(
            ctx,
            trial_cfg,
            self.teacher_path,
            self.teacher,
            self.inputs,
            self.fit,
            self.selection,
            self.t_sel,
            work_dir,
            plan.seed,
            on_epoch=on_epoch,
        )
        return student, result, note, sel, work_dir

    def trial(self, plan):
        """Train one trial (on every rank: its plan goes to the others first) and keep its student in its folder:
        its selection and validation scores."""
        world = distributed.world_size()
        if world > 1:
            self.ctx.reporter.log(f"  distill sweep: trial {plan.number} trains on {world} processes")
            self.lead.send(lockstep.Order("trial", plan.number, plan.settings, plan.seed, plan.retry_of))
        pruned, epochs = self.search.optuna_module().TrialPruned, self.cfg.epochs
        student, result, _, sel, work_dir = self._train(
            plan, lambda e, entry: self.lead.epoch(plan.report, e, entry["val_top1"], pruned, e == epochs)
        )
        student_file = self.ctx.rundir.trial_student(self.name, plan.number)
        save_model(student_file, student, student_spec(self.ctx, self.inputs))
        v_logits, v_labels = predict(student, self.ctx.data.val, self.ctx.config.data.eval_batch_size, "cpu")
        val = evaluate(v_logits, v_labels)  # recorded, never used to choose
        return self.search.TrialOutcome(sel["val_top1"], sel.get("val_kl"), val["val_top1"], len(result.history))

    def _follow(self, order: lockstep.Order) -> None:
        """A rank other than 0: train the trial rank 0 sent, stopping when rank 0 prunes it."""
        plan = self.search.TrialPlan(order.number, order.settings, order.seed, order.retry_of, lambda e, s: None)
        self._train(plan, lockstep.heed)

    def work(self) -> None:
        """Run trials until the study has its number of finished trials (other workers may run some); under torchrun
        every rank trains each trial, as rank 0 orders."""
        if not distributed.is_main():
            lockstep.follow(self._follow)
            return
        log = self.ctx.reporter.log
        log(
            f"  distill sweep: study {self.name} ({self.sweep.sampler}, {self.sweep.n_trials} trials, "
            f"pruner {self.sweep.pruner}) in {self.storage_shown}; selection on {len(self.selection)} training images"
        )
        stalled = self.search.stalled_hint(self.ctx.sweep_storage, self.name)
        idle = (lambda: self.lead.send(lockstep.Order("wait"))) if distributed.world_size() > 1 else None
        with self.lead:
            self.search.work(
                self.study, self.sweep, self.ctx.config.seed, self.trial, self._record, log, stalled=stalled, idle=idle
            )
            if distributed.world_size() > 1:
                self.lead.send(lockstep.Order("done"))

    def _standings(self) -> Standings:
        trials = self.search.trials_of(self.study)
        best = self.search.best_of(trials)
        record = self.ctx.rundir.trial_record(self.name, best.number)
        student_file = self.ctx.rundir.trial_student(self.name, best.number)
        here = student_file.is_file() and record.is_file() and SweepTrial.read(record).state == "complete"
        return Standings(trials, best, self.search.importances(self.study), here)

    def winner(self):
        """The best trial's student (its own file when this worker trained it, else trained again with the same
        settings and seed) and the sweep's record for the manifest."""
        ctx = self.ctx
        if distributed.is_main():
            with self.lead:
                standings = self._standings()
                self.lead.send(standings)
        else:
            standings = lockstep.receive()
        trials, best = standings.trials, standings.best
        work_dir = ctx.rundir.trial_dir(self.name, best.number)
        reproduced = None
        student_file = ctx.rundir.trial_student(self.name, best.number)
        if standings.trained_here:
            student, _ = load_model(student_file)  # saved after its BatchNorm settling, in its trial
            self.stage._bn = {"ran": False, "reason": None, "note": f"settled in trial {best.number}, if at all"}
            result = TrainResult(read_history(work_dir / METRICS))
            note = "trained by this worker"
        else:  # another worker trained it: the same settings and seed give the same student (on every rank here)
            plan = self.search.TrialPlan(best.number, best.settings, best.seed, best.retry_of, lambda e, s: None)
            student, result, self.cache_note, sel, work_dir = self._train(plan)
            reproduced = sel["val_top1"]
            note = f"trained again here (selection top-1 {reproduced:.2f}%, the study's {best.selection_top1:.2f}%)"
        metrics = {
            "study": self.name,
            "storage": self.storage_shown,
            "sampler": self.sweep.sampler,
            "pruner": self.sweep.pruner,
            "trials": [t.to_dict() for t in trials],
            "best": best.number,
            "importance": standings.importance,
            "best_selection_top1": best.selection_top1,
            "selection": {
                "split": "train",
                "fraction": self.sweep.selection_split,
                "images": len(self.selection),
                "trained_on": len(self.fit),
                "seed": ctx.config.seed,
                "indices_sha256": self._selection_sha256(),
            },
            "chosen_by": (
                f"highest top-1 on {len(self.selection)} training images held out from every trial's training "
                f"(sweep.selection_split {self.sweep.selection_split:g}, seed {ctx.config.seed}); ties: lower KL to "
                "the teacher. The validation split scores the winner only."
            ),
            "winner_model": note,
            "reproduced_selection_top1": reproduced,
        }
        return student, result, self.cache_note, best, work_dir, metrics
