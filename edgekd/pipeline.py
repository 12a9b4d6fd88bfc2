"""The runner: orders the stages, decides for each whether it runs, is cached or is skipped, runs it, records it.

`plan` and `run` make every decision with the same function (`Runner._decide`): a stage runs when it
is forced, has no finished record, its key (edgekd/keys.py) differs from the recorded one, one of its
artifacts is missing or changed on disk, or an input's content differs from the one it consumed.
Keys chain through producers' keys, so `plan` knows every key without running anything. Training
stages resume from their last epoch checkpoint when they run again with the same key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from pydantic import BaseModel
from rich.markup import escape

from edgekd import distributed, keys
from edgekd.config import PipelineConfig
from edgekd.data.datasets import DataBundle, load_data
from edgekd.data.preprocessing import data_inputs
from edgekd.distill.trainer import TrainEnv
from edgekd.errors import EdgekdError
from edgekd.manifest import ArtifactEntry, Manifest, StageRecord, now
from edgekd.ondevice import catalog
from edgekd.ondevice.files import sha256_file, write_text_atomic
from edgekd.progress import Reporter
from edgekd.rundir import RunDir


@dataclass
class StageResult:
    """What a stage made: artifacts by catalogue id (the paths `ctx.out(id)` gave it) and metrics."""

    artifacts: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "done"  # or "skipped" (with reason)
    reason: str | None = None


class Stage(Protocol):
    name: str
    section: str  # the config section handed to run()
    reads: tuple[str, ...]  # config paths its key hashes ("data", "export.opset"; "!benchmark.budget" leaves one out)
    needs: tuple[str, ...]  # artifact ids from earlier stages
    uses: tuple[str, ...]  # artifact ids it takes when present
    toolchain: tuple[str, ...]  # packages whose versions shape its output
    distributed: bool  # runs on every process under torchrun (training); else on rank 0 alone

    def skip_reason(self, cfg: PipelineConfig) -> str | None: ...
    def run(self, ctx: RunContext, cfg: Any, inputs: dict[str, Path]) -> StageResult: ...


def makes(stage: Stage) -> tuple[str, ...]:
    """The artifact ids a stage may make: its rows of the catalogue."""
    return catalog.made_by(stage.name)


class TracedConfig:
    """A view of the pipeline config that records every path a stage reads, so its key cannot leak.

    Paths the stage declares in `reads` give the real object (everything under them is hashed); any
    other section gives another traced view, so a read outside the declared paths is caught precisely.
    """

    def __init__(self, obj: BaseModel, reads: tuple[str, ...], seen: set[str], prefix: str = "") -> None:
        self._obj, self._reads, self._seen, self._prefix = obj, reads, seen, prefix

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        if name not in type(self._obj).model_fields:  # methods and properties: not a config path
            return value
        path = f"{self._prefix}{name}"
        self._seen.add(path)
        if isinstance(value, BaseModel) and not covered(path, self._reads):
            return TracedConfig(value, self._reads, self._seen, path + ".")
        return value


def covered(path: str, reads: tuple[str, ...]) -> bool:
    """True when `path` lies under a declared read and under no `!` exclusion."""
    under = lambda p: path == p or path.startswith(p + ".")  # noqa: E731
    return any(under(p) for p in reads if not p.startswith("!")) and not any(under(p[1:]) for p in reads if p[0] == "!")


def undeclared_reads(stage: Stage, seen: set[str]) -> list[str]:
    """Config leaves a stage read that its `reads` do not cover (sections it only walked through are fine)."""
    leaves = {p for p in seen if not any(q.startswith(p + ".") for q in seen)}
    return sorted(p for p in leaves if not covered(p, tuple(stage.reads)))


class RunContext:
    """What a running stage may use: its output paths, its folder, the device, the data, the reporter."""

    def __init__(self, config: PipelineConfig, run: RunDir, reporter: Reporter, manifest: Manifest) -> None:
        self.pipeline = config  # the whole config; stages read it through `config`, a traced view
        self.config = config
        self.rundir = run
        self.reporter = reporter
        self.manifest = manifest
        self.stage_name = ""
        self.key = ""
        self.inputs_digest = ""  # of the inputs' sha256: a checkpoint resumes only on the inputs it was trained on
        self.resume = True  # False when the stage was forced: training starts afresh
        self.sweep_storage: str | None = None  # the sweep's Optuna storage URL (`--storage`); None: the run dir's

    @property
    def run_dir(self) -> Path:
        return self.rundir.root

    @property
    def stage_dir(self) -> Path:
        """The running stage's own folder (checkpoints, caches); processes other than rank 0 get a scratch copy."""
        if distributed.is_main():
            path = self.rundir.stage_dir(self.stage_name)
        else:
            path = self.rundir.scratch_dir(distributed.rank(), self.stage_name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def out(self, artifact_id: str) -> Path:
        """Where the running stage writes one of its artifacts. The runner promotes the file to its catalogue
        path once the stage succeeds; a failed attempt never touches the last finished files."""
        if artifact_id not in catalog.made_by(self.stage_name):
            raise RuntimeError(
                f"stage {self.stage_name} asked for {artifact_id!r}, which is not one of its catalogue rows"
            )
        device = self.pipeline.benchmark.device_name
        if distributed.is_main():
            path = self.rundir.staged(self.stage_name, artifact_id, device)
        else:
            path = self.stage_dir / Path(catalog.path_of(artifact_id, device)).name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def failed_dir(self) -> Path:
        """Where the running stage keeps files that failed its checks, for inspection."""
        return self.rundir.failed_dir(self.stage_name)

    def train_env(self, label: str, work_dir: Path | None = None) -> TrainEnv:
        """What the trainer needs of the run: folder, key, seed, batch sizes, device, reporter, resume."""
        cfg = self.config
        return TrainEnv(
            work_dir=work_dir or self.stage_dir,
            key=f"{self.key}/{self.inputs_digest}",
            seed=cfg.seed,
            batch_size=cfg.data.batch_size,
            eval_batch_size=cfg.data.eval_batch_size,
            device=self.device,
            reporter=self.reporter,
            label=label,
            resume=self.resume,
        )

    @property
    def device(self) -> torch.device:
        """Where training runs (reading it is reading the `device` setting)."""
        self.config.device  # noqa: B018 -- recorded by the traced view
        return self._device

    @property
    def data(self) -> DataBundle:
        """The data set, loaded once per run (reading it is reading the `data` section and the seed)."""
        self.config.data  # noqa: B018 -- recorded by the traced view
        self.config.seed  # noqa: B018
        return self._data

    @cached_property
    def _device(self) -> torch.device:
        return distributed.local_device(distributed.choose_device(self.pipeline.device))

    @cached_property
    def _data(self) -> DataBundle:
        cfg = self.pipeline  # the preprocessing the student's weights ask for is part of the key's data part
        return load_data(cfg.data, cfg.seed, data_inputs(cfg.data, cfg.student))


@dataclass
class PlanEntry:
    stage: str
    action: str  # "run", "cached", "skip", "leave", "check" (runs only if a rebuilt input comes out different)
    why: str
    key: str = ""


@dataclass
class Selection:
    """Which stages the user asked to run or force (`--only`, `--from`, `--force`)."""

    only: str | None = None
    start: str | None = None
    force: tuple[str, ...] = ()
    require: tuple[str, ...] = ()  # stages that must not be skipped (`--require tensorrt`)

    def validate(self, names: list[str]) -> None:
        flags = [
            ("--only", self.only),
            ("--from", self.start),
            *(("--force", f) for f in self.force),
            *(("--require", r) for r in self.require),
        ]
        for flag, value in flags:
            if value is not None and value not in names:
                raise EdgekdError(f"{flag} {value}: no such stage; stages are: {', '.join(names)}")

    def forced(self, name: str, names: list[str]) -> bool:
        if name in self.force or self.only == name:
            return True
        return self.start is not None and names.index(name) >= names.index(self.start)


@dataclass
class _State:
    """What the decisions so far imply: each stage's key, the stages that will run, the artifacts on offer."""

    keys: dict[str, str] = field(default_factory=dict)  # stage -> key of its (new or kept) record
    running: set[str] = field(default_factory=set)  # stages that run (plan: will run)
    available: dict[str, Path] = field(default_factory=dict)  # artifact id -> path (plan: predicted)


class Runner:
    """Runs a pipeline's stages in order into its run directory."""

    def __init__(
        self,
        cfg: PipelineConfig,
        stages: list[Stage],
        run_dir: Path | None = None,
        reporter: Reporter | None = None,
        sweep_storage: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.sweep_storage = sweep_storage
        self.stages = stages
        self.rundir = RunDir(run_dir or cfg.run_dir or Path("runs") / cfg.name)
        self.run_dir = self.rundir.root
        self.reporter = reporter or Reporter()
        self.producer = {art: s.name for s in stages for art in makes(s)}

    # ------------------------------------------------------------------ decisions

    def _inputs(self, stage: Stage, manifest: Manifest, state: _State) -> tuple[dict[str, Path], str | None]:
        """The stage's input artifacts, or why it cannot run."""
        inputs = {}
        for need in stage.needs:
            if need not in state.available:
                producer = self.producer.get(need)
                if producer is None:
                    return {}, f"needs '{need}', which no stage makes"
                old = manifest.stage(producer)
                why = f"{old.status}: {old.why}" if old else "not run"
                return {}, f"needs '{need}' from stage '{producer}' ({why})"
            inputs[need] = state.available[need]
        inputs.update({u: state.available[u] for u in stage.uses if u in state.available})
        return inputs, None

    def _decide(
        self, stage: Stage, manifest: Manifest, state: _State, forced: bool, planning: bool
    ) -> tuple[PlanEntry, dict[str, Path], dict[str, str]]:
        """One stage's action, why, its key and key parts, and its inputs: the single rule `plan` and `run` share."""
        reason = stage.skip_reason(self.cfg)
        if reason:
            return PlanEntry(stage.name, "skip", reason), {}, {}
        inputs, missing = self._inputs(stage, manifest, state)
        if missing:
            return PlanEntry(stage.name, "skip", missing), {}, {}
        parts = keys.key_parts(stage, self.cfg, self.run_dir, {i: state.keys[self.producer[i]] for i in sorted(inputs)})
        key = keys.combine(parts)
        old = manifest.done(stage.name)
        if forced:
            return PlanEntry(stage.name, "run", "forced", key), inputs, parts
        if not old:
            last = manifest.stage(stage.name)
            why = f"last attempt {last.status}" if last and last.status in ("failed", "running") else "not run yet"
            return PlanEntry(stage.name, "run", why, key), inputs, parts
        if old.key != key:
            changed = keys.changed_parts(old.key_parts, parts) or ["its key changed"]
            return PlanEntry(stage.name, "run", ", ".join(changed), key), inputs, parts
        if art := manifest.changed_artifact(stage.name):
            return PlanEntry(stage.name, "run", f"artifact '{art}' is missing or changed on disk", key), inputs, parts
        rebuilt = [i for i in inputs if self.producer[i] in state.running]
        if planning and rebuilt:
            return (
                PlanEntry(
                    stage.name, "check", f"runs only if the rebuilt {', '.join(rebuilt)} comes out different", key
                ),
                inputs,
                parts,
            )
        consumed = old.inputs
        for name, path in sorted(inputs.items()):
            if consumed.get(name) != sha256_file(path):
                return (
                    PlanEntry(stage.name, "run", f"input '{name}' differs from the one it was made from", key),
                    inputs,
                    parts,
                )
        return PlanEntry(stage.name, "cached", f"key {key} matches", key), inputs, parts

    def _offer(self, stage: Stage, manifest: Manifest, state: _State, entry: PlanEntry, planning: bool) -> None:
        """After a decision: the stage's key and the artifacts it offers to later stages."""
        if entry.action == "skip":
            return
        state.keys[stage.name] = entry.key
        if entry.action == "run":
            state.running.add(stage.name)
        if planning and entry.action == "run":  # predicted: the catalogue's rows, at their usual paths
            device = self.cfg.benchmark.device_name
            state.available.update({a: self.rundir.path(a, device) for a in makes(stage)})
        else:
            vouched = manifest.vouched()
            state.available.update({a: vouched[a] for a in makes(stage) if a in vouched})

    # ------------------------------------------------------------------ plan and run

    def plan(self, selection: Selection = Selection()) -> list[PlanEntry]:
        """What `run` would do now, without doing it."""
        names = [s.name for s in self.stages]
        selection.validate(names)
        manifest = Manifest(self.rundir, self.cfg.name, writes=False)
        state = _State()
        out = []
        for stage in self.stages:
            if selection.only and stage.name != selection.only:
                entry = PlanEntry(stage.name, "leave", "not selected by --only", _key(manifest.done(stage.name)))
                self._offer(stage, manifest, state, PlanEntry(stage.name, "cached", "", entry.key), planning=False)
                out.append(entry)
                continue
            entry, _, _ = self._decide(stage, manifest, state, selection.forced(stage.name, names), planning=True)
            self._offer(stage, manifest, state, entry, planning=True)
            out.append(entry)
        return out

    def run(self, selection: Selection = Selection()) -> Manifest:
        names = [s.name for s in self.stages]
        selection.validate(names)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file in the way, no permission, read-only disk
            raise EdgekdError(f"{self.run_dir}: cannot create the run directory ({e.strerror})") from None
        try:
            distributed.check_shared_dir(self.rundir.shared_token, self.run_dir)  # several nodes: one run dir, or stop
            with self.rundir.locked("edgekd run") if distributed.is_main() else contextlib.nullcontext():
                return self._run(selection, names)
        except RuntimeError as e:  # a process of the run is gone: one line that says how to resume
            if lost := distributed.lost_peer(e):
                raise lost from e
            raise

    def _run(self, selection: Selection, names: list[str]) -> Manifest:
        if distributed.is_main():  # what the user's file meant, paths resolved: `edgekd bench/report/ship RUN_DIR`
            write_text_atomic(self.rundir.config, saved_config(self.cfg))
        manifest = Manifest(self.rundir, self.cfg.name, writes=distributed.is_main())
        ctx = RunContext(self.cfg, self.rundir, self.reporter, manifest)
        ctx.sweep_storage = self.sweep_storage
        state = _State()
        for stage in self.stages:
            if selection.only and stage.name != selection.only:
                keep = PlanEntry(stage.name, "cached", "", _key(manifest.done(stage.name)))
                self._offer(stage, manifest, state, keep, planning=False)
                continue
            entry = None
            if stage.distributed or distributed.is_main():
                entry = self._run_stage(stage, ctx, manifest, state, selection, names)
            if stage.distributed:
                distributed.barrier()
            else:  # rank 0 ran it alone, for as long as it takes
                distributed.wait_for_main()
            if not distributed.is_main():
                manifest.reload()
                entry, _, _ = self._decide(stage, manifest, state, False, planning=False)
            self._offer(stage, manifest, state, entry, planning=False)
            record = manifest.stage(stage.name)
            if stage.name in selection.require and record is not None and record.status == "skipped":
                raise EdgekdError(f"--require {stage.name}: the stage was skipped: {record.why}")
        if distributed.world_size() > 1 and distributed.is_main():  # the other ranks' scratch, once all is through
            shutil.rmtree(self.rundir.scratch_root, ignore_errors=True)
        return manifest

    def helper_context(self, name: str) -> tuple[RunContext, dict[str, Path]]:
        """For a command that works for stage `name` without running it (`edgekd sweep`, a worker of the distill
        sweep): the stages before it are run (or found cached), then the context and inputs the stage would run
        with now, its key included. Nothing is recorded for `name`."""
        names = [s.name for s in self.stages]
        Selection(only=name).validate(names)
        before = Runner(self.cfg, self.stages[: names.index(name)], self.run_dir, self.reporter, self.sweep_storage)
        manifest = before.run()
        state = _State()
        for stage in before.stages:
            entry, _, _ = self._decide(stage, manifest, state, False, planning=False)
            self._offer(stage, manifest, state, entry, planning=False)
        entry, inputs, _ = self._decide(self.stages[names.index(name)], manifest, state, False, planning=False)
        if entry.action == "skip":
            raise EdgekdError(f"{name}: {entry.why}")
        ctx = RunContext(self.cfg, self.rundir, self.reporter, manifest)
        ctx.sweep_storage, ctx.stage_name, ctx.key = self.sweep_storage, name, entry.key
        return ctx, inputs

    def _run_stage(
        self, stage: Stage, ctx: RunContext, manifest: Manifest, state: _State, selection: Selection, names: list[str]
    ) -> PlanEntry:
        log = self.reporter.log
        started = now()
        forced = selection.forced(stage.name, names)
        entry, inputs, parts = self._decide(stage, manifest, state, forced, planning=False)
        if entry.action == "skip":
            if selection.only == stage.name and not stage.skip_reason(self.cfg):
                raise EdgekdError(f"--only {stage.name}: {entry.why}; run the pipeline without --only first")
            manifest.record(
                stage.name, StageRecord("skipped", reason=entry.why, started=started, ended=now(), seconds=0.0)
            )
            log(f"[yellow]- {stage.name}: skipped[/] ({escape(entry.why)})")  # reasons may quote paths holding "[...]"
            return entry
        if entry.action == "cached":
            done = manifest.done(stage.name)
            assert done is not None
            manifest.record(stage.name, dataclasses.replace(done, status="cached", cached_at=now(), last_done=None))
            log(f"[green]✓ {stage.name}: cached[/] (key {entry.key}, nothing to do)")
            return entry
        log(f"[bold]▶ {stage.name}[/] ({escape(entry.why)})")
        ctx.stage_name, ctx.key, ctx.resume = stage.name, entry.key, not forced
        staging = self.rundir.staging_dir(stage.name)
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted attempt left
        t0 = time.perf_counter()
        consumed = {name: sha256_file(path) for name, path in sorted(inputs.items())}
        # an upstream stage re-run under the same key may have made other bytes (a latency-targeted pruning
        # timed anew): this stage then re-runs, and must not resume a checkpoint trained on the old inputs
        ctx.inputs_digest = keys.digest(consumed)
        attempt = StageRecord("running", key=entry.key, key_parts=parts, inputs=consumed, started=started)
        manifest.record(stage.name, attempt)
        torch.manual_seed(self.cfg.seed)  # model initialisation depends on the seed alone, not on earlier stages
        seen: set[str] = set()
        ctx.config = TracedConfig(self.cfg, tuple(stage.reads), seen)  # type: ignore[assignment]
        try:
            result = stage.run(ctx, getattr(ctx.config, stage.section), inputs)
            if leaked := undeclared_reads(stage, seen):
                raise RuntimeError(
                    f"stage {stage.name} read {', '.join(leaked)}, which its key does not hash: add to its `reads`"
                )
            artifacts = self._promote(stage, ctx, result) if distributed.is_main() else {}
        except BaseException as e:
            shown = distributed.lost_peer(e) or e  # a process of the run is gone: the line run() raises for it
            error = str(shown) if isinstance(shown, EdgekdError) else f"{type(e).__name__}: {e}"
            seconds = round(time.perf_counter() - t0, 3)
            failed = dataclasses.replace(attempt, status="failed", error=error, ended=now(), seconds=seconds)
            manifest.record(stage.name, failed)
            self._keep_failed(stage.name)
            raise
        if not distributed.is_main():  # rank 0 records what the stage made
            return entry
        manifest.record(
            stage.name,
            dataclasses.replace(
                attempt,
                status=result.status,
                ended=now(),
                seconds=round(time.perf_counter() - t0, 3),
                artifacts=artifacts,
                metrics=result.metrics,
                reason=result.reason,
                last_done=None,
            ),
        )
        note = f" ({escape(result.reason)})" if result.reason else ""
        log(f"[green]✓ {stage.name}: {result.status}[/] in {time.perf_counter() - t0:.1f}s{note}")
        return PlanEntry(stage.name, "run", entry.why, entry.key)

    def _promote(self, stage: Stage, ctx: RunContext, result: StageResult) -> dict[str, ArtifactEntry]:
        """Move what the stage staged to the same place in the run directory (each file an atomic rename: its
        artifacts, and the files beside them such as sidecars and figures); describe its artifacts. A catalogue
        file the stage wrote but did not return (it failed a check) goes to failed/, never to its catalogue path."""
        device = self.cfg.benchmark.device_name
        unreturned = {self.rundir.path(a, device) for a in makes(stage) if a not in result.artifacts}
        made = {}
        for art_id, path in result.artifacts.items():
            if Path(path) != ctx.out(art_id):
                raise RuntimeError(f"stage {stage.name} returned {art_id} at {path}, not at ctx.out({art_id!r})")
            final = self.rundir.path(art_id, device)
            made[art_id] = ArtifactEntry(self.rundir.relative(final), sha256_file(path), Path(path).stat().st_size)
        staging = self.rundir.staging_dir(stage.name)
        for staged in sorted(p for p in staging.rglob("*") if p.is_file()):
            final = self.rundir.inside(staged.relative_to(staging), f"stage {stage.name}")
            if final in unreturned:
                final = self.rundir.failed_dir(stage.name) / final.name
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
        shutil.rmtree(staging, ignore_errors=True)
        return made

    def _keep_failed(self, stage: str) -> None:
        """Files a failed attempt staged go to the stage's failed/ folder, for inspection; the finished ones stay."""
        staging = self.rundir.staging_dir(stage)
        if distributed.is_main() and staging.is_dir():
            folder = self.rundir.failed_dir(stage)
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                os.replace(path, folder / path.name)
            shutil.rmtree(staging, ignore_errors=True)


def _key(record: StageRecord | None) -> str:
    return record.key if record else ""


def saved_config(cfg: PipelineConfig) -> str:
    """The config as the user's file stated it (unset fields stay unset, so inherited values stay inherited),
    with paths resolved to absolute ones."""
    return yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False)
