"""The runner: orders the stages, caches them by key, records everything in manifest.json.

A stage's key hashes its config sections, the sha256 of its input artifacts, the seed
and the edgekd version; a stage whose key matches a finished one with its artifacts
intact is `cached` and does no work. Training stages resume from their last epoch
checkpoint when they run again with the same key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from pydantic import BaseModel
from rich.markup import escape

from edgekd import __version__, distributed
from edgekd.artifacts import sha256_file, write_json_atomic, write_text_atomic
from edgekd.config import PipelineConfig
from edgekd.data.datasets import DataBundle, load_data
from edgekd.distill.trainer import CHECKPOINT
from edgekd.errors import EdgekdError
from edgekd.progress import Reporter

MANIFEST = "manifest.json"


@dataclass
class StageResult:
    """What a stage made: artifacts by name (absolute paths inside the run dir) and metrics."""

    artifacts: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "done"  # or "skipped" (with reason)
    reason: str | None = None


class Stage(Protocol):
    name: str
    section: str  # the config section handed to run()
    sections: tuple[str, ...]  # every config section its key depends on
    needs: tuple[str, ...]  # artifact names from earlier stages
    uses: tuple[str, ...]  # artifact names it takes when present
    makes: tuple[str, ...]  # artifact names it may produce
    distributed: bool  # runs on every process under torchrun (training); else on rank 0 alone

    def skip_reason(self, cfg: PipelineConfig) -> str | None: ...
    def key_extras(self, cfg: PipelineConfig) -> dict: ...
    def run(self, ctx: RunContext, cfg: Any, inputs: dict[str, Path]) -> StageResult: ...


class RunContext:
    """What a running stage may use: the run directory, the device, the data, the reporter."""

    def __init__(self, config: PipelineConfig, run_dir: Path, reporter: Reporter, manifest: Manifest) -> None:
        self.config = config
        self.run_dir = run_dir
        self.reporter = reporter
        self.manifest = manifest
        self.stage_name = ""
        self.key = ""

    @property
    def stage_dir(self) -> Path:
        """Where the running stage writes; processes other than rank 0 write to a scratch copy."""
        root = self.run_dir if distributed.is_main() else self.run_dir / ".ranks" / str(distributed.rank())
        path = root / self.stage_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @cached_property
    def device(self) -> torch.device:
        want = self.config.device
        if want == "cuda" and not torch.cuda.is_available():
            raise EdgekdError("device: 'cuda' was asked for but no CUDA GPU is visible to PyTorch; use 'auto' or 'cpu'")
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        return distributed.local_device(torch.device(want))

    @cached_property
    def data(self) -> DataBundle:
        return load_data(self.config.data, self.config.seed)

    def artifact(self, name: str) -> Path | None:
        """An artifact made by any finished stage of this run, or None."""
        return self.manifest.artifacts().get(name)


class Manifest:
    """manifest.json: one record per stage."""

    def __init__(self, run_dir: Path, pipeline: str) -> None:
        self.path = run_dir / MANIFEST
        self.run_dir = run_dir
        self.doc: dict[str, Any] = {"pipeline": pipeline, "edgekd_version": __version__, "stages": {}}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise EdgekdError(f"{self.path}: corrupt manifest ({e}); delete it to start the run afresh") from None
            if not isinstance(old, dict) or not isinstance(old.get("stages", {}), dict):
                raise EdgekdError(
                    f"{self.path}: corrupt manifest (not an edgekd manifest object with a `stages` mapping); "
                    f"delete it to start the run afresh"
                )
            self.doc["stages"] = old.get("stages", {})

    def stage(self, name: str) -> dict:
        return self.doc["stages"].get(name, {})

    def record(self, name: str, entry: dict) -> None:
        self.doc["stages"][name] = entry
        self.doc["updated"] = _now()
        if distributed.is_main():
            write_json_atomic(self.path, self.doc)

    def reload(self) -> None:
        """Read rank 0's manifest again (other processes, after a stage)."""
        self.doc["stages"] = json.loads(self.path.read_text())["stages"] if self.path.is_file() else {}

    def artifacts(self) -> dict[str, Path]:
        out = {}
        for entry in self.doc["stages"].values():
            if entry.get("status") in ("done", "cached"):
                for name, art in entry.get("artifacts", {}).items():
                    out[name] = self.run_dir / art["path"]
        return out

    def intact(self, name: str) -> bool:
        """Every artifact of a finished stage is still on disk, unchanged."""
        entry = self.stage(name)
        for art in entry.get("artifacts", {}).values():
            path = self.run_dir / art["path"]
            if not path.is_file() or path.stat().st_size != art["bytes"] or sha256_file(path) != art["sha256"]:
                return False
        return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def stage_key(stage: Stage, cfg: PipelineConfig, inputs: dict[str, Path]) -> str:
    blob = {
        "stage": stage.name,
        "edgekd": __version__,
        "seed": cfg.seed,
        "sections": {s: _dump(getattr(cfg, s)) for s in stage.sections},
        "inputs": {n: sha256_file(p) for n, p in sorted(inputs.items())},
        "extras": stage.key_extras(cfg),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _stale(manifest: Manifest, name: str, key: str) -> str | None:
    """Why a stage must run again, or None when its finished record with this key is still on disk."""
    old = manifest.stage(name)
    if old.get("status") not in ("done", "cached"):
        return "not run yet" if not old else f"last status: {old.get('status')}"
    if old.get("key") != key:
        return "its config or inputs changed"
    if not manifest.intact(name):
        return "an artifact is missing or changed on disk"
    return None


@dataclass
class PlanEntry:
    stage: str
    action: str  # "run", "cached", "skip"
    why: str


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


class Runner:
    """Runs a pipeline's stages in order into its run directory."""

    def __init__(
        self, cfg: PipelineConfig, stages: list[Stage], run_dir: Path | None = None, reporter: Reporter | None = None
    ) -> None:
        self.cfg = cfg
        self.stages = stages
        self.run_dir = (run_dir or cfg.run_dir or Path("runs") / cfg.name).resolve()
        self.reporter = reporter or Reporter()

    def _inputs(self, stage: Stage, manifest: Manifest) -> tuple[dict[str, Path], str | None]:
        """The stage's input artifacts, or why it cannot run."""
        available = manifest.artifacts()
        inputs = {}
        for need in stage.needs:
            if need not in available or not available[need].is_file():
                producer = next((s.name for s in self.stages if need in s.makes), None)
                if producer is None:
                    return {}, f"needs '{need}', which no stage makes"
                old = manifest.stage(producer)
                why = f"{old.get('status')}: {old.get('reason') or old.get('error')}" if old else "not run"
                return {}, f"needs '{need}' from stage '{producer}' ({why})"
            inputs[need] = available[need]
        for name in stage.uses:
            if name in available and available[name].is_file():
                inputs[name] = available[name]
        return inputs, None

    def plan(self, selection: Selection = Selection()) -> list[PlanEntry]:
        """What `run` would do now, without doing it (keys of later stages assume cached inputs)."""
        names = [s.name for s in self.stages]
        selection.validate(names)
        manifest = Manifest(self.run_dir, self.cfg.name)
        out = []
        dirty = False
        for stage in self.stages:
            if selection.only and stage.name != selection.only:
                out.append(PlanEntry(stage.name, "leave", "not selected by --only"))
                continue
            reason = stage.skip_reason(self.cfg)
            if reason:
                out.append(PlanEntry(stage.name, "skip", reason))
                continue
            inputs, missing = self._inputs(stage, manifest)
            old = manifest.stage(stage.name)
            if missing and not dirty:
                out.append(PlanEntry(stage.name, "run" if old else "skip", missing))
                continue
            if selection.forced(stage.name, names):
                out.append(PlanEntry(stage.name, "run", "forced"))
                dirty = True
            elif dirty or missing:
                out.append(PlanEntry(stage.name, "run", "an earlier stage will run"))
            elif why := _stale(manifest, stage.name, stage_key(stage, self.cfg, inputs)):
                out.append(PlanEntry(stage.name, "run", why))
                dirty = True
            else:
                out.append(PlanEntry(stage.name, "cached", f"key {old['key']} matches"))
        return out

    def run(self, selection: Selection = Selection()) -> Manifest:
        names = [s.name for s in self.stages]
        selection.validate(names)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file in the way, no permission, read-only disk
            raise EdgekdError(f"{self.run_dir}: cannot create the run directory ({e.strerror})") from None
        if distributed.is_main():  # the resolved config (absolute paths), for `edgekd bench/report/ship RUN_DIR`
            write_text_atomic(
                self.run_dir / "pipeline.yaml",
                yaml.safe_dump(self.cfg.model_dump(mode="json", exclude_none=True), sort_keys=False),
            )
        manifest = Manifest(self.run_dir, self.cfg.name)
        ctx = RunContext(self.cfg, self.run_dir, self.reporter, manifest)
        for stage in self.stages:
            if selection.only and stage.name != selection.only:
                continue
            if stage.distributed or distributed.is_main():
                self._run_stage(stage, ctx, manifest, selection.forced(stage.name, names), selection.only == stage.name)
            distributed.barrier()
            if not distributed.is_main():
                manifest.reload()
            entry = manifest.stage(stage.name)
            if stage.name in selection.require and entry.get("status") == "skipped":
                raise EdgekdError(f"--require {stage.name}: the stage was skipped: {entry.get('reason')}")
        if (
            distributed.world_size() > 1 and distributed.is_main()
        ):  # the other ranks' scratch, once every stage is through
            shutil.rmtree(self.run_dir / ".ranks", ignore_errors=True)
        return manifest

    def _run_stage(self, stage: Stage, ctx: RunContext, manifest: Manifest, forced: bool, only: bool = False) -> None:
        log = self.reporter.log
        started = _now()
        reason = stage.skip_reason(self.cfg)
        inputs: dict[str, Path] = {}
        if reason is None:
            inputs, reason = self._inputs(stage, manifest)
            if reason is not None and only:
                raise EdgekdError(f"--only {stage.name}: {reason}; run the pipeline without --only first")
        if reason is not None:
            manifest.record(
                stage.name,
                {
                    "status": "skipped",
                    "reason": reason,
                    "started": started,
                    "ended": _now(),
                    "seconds": 0.0,
                    "artifacts": {},
                    "metrics": {},
                },
            )
            log(f"[yellow]- {stage.name}: skipped[/] ({escape(reason)})")  # reasons may quote paths holding "[...]"
            return
        key = stage_key(stage, self.cfg, inputs)
        why = "forced" if forced else _stale(manifest, stage.name, key)
        if why is None:
            manifest.record(stage.name, {**manifest.stage(stage.name), "status": "cached", "cached_at": _now()})
            log(f"[green]✓ {stage.name}: cached[/] (key {key}, nothing to do)")
            return
        log(f"[bold]▶ {stage.name}[/] ({why})")
        ctx.stage_name, ctx.key = stage.name, key
        if forced:  # a forced stage starts afresh rather than resuming its last epoch checkpoint
            (ctx.stage_dir / CHECKPOINT).unlink(missing_ok=True)
        t0 = time.perf_counter()
        entry = {"status": "running", "key": key, "started": started, "artifacts": {}, "metrics": {}}
        manifest.record(stage.name, entry)
        torch.manual_seed(self.cfg.seed)  # model initialisation depends on the seed alone, not on earlier stages
        try:
            result = stage.run(ctx, getattr(self.cfg, stage.section), inputs)
        except BaseException as e:
            error = str(e) if isinstance(e, EdgekdError) else f"{type(e).__name__}: {e}"
            manifest.record(
                stage.name,
                {
                    **entry,
                    "status": "failed",
                    "error": error,
                    "ended": _now(),
                    "seconds": round(time.perf_counter() - t0, 3),
                },
            )
            raise
        artifacts = {}
        if not distributed.is_main():  # rank 0 records what the stage made
            return
        for name, path in result.artifacts.items():
            path = Path(path)
            artifacts[name] = {
                "path": str(path.relative_to(self.run_dir)),
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
            }
        manifest.record(
            stage.name,
            {
                "status": result.status,
                "key": key,
                "started": started,
                "ended": _now(),
                "seconds": round(time.perf_counter() - t0, 3),
                "artifacts": artifacts,
                "metrics": result.metrics,
                "reason": result.reason,
            },
        )
        note = f" ({escape(result.reason)})" if result.reason else ""
        log(f"[green]✓ {stage.name}: {result.status}[/] in {time.perf_counter() - t0:.1f}s{note}")
