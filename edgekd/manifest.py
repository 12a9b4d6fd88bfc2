"""manifest.json: one typed record per stage, and the artifacts the run vouches for.

A stage's record (`StageRecord`) holds its status (done, cached, skipped, failed, running), its cache key
and the parts it was made of, the sha256 of every input it consumed, its artifacts (path, sha256, bytes),
metrics, timings and reasons. Any record that is not done or cached keeps the last finished one beside
it (`last_done`), so a failed attempt or a skip costs no finished work: the next run finds the done
record and its artifacts intact and keeps them.

`StageRecord.from_dict` is the one reader of a record: a manifest is a file someone may hand you, so
every field is type-checked and every artifact path must stay inside the run directory. This module
imports no torch: the report, `ship` and the CLI read manifests without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgekd import __version__
from edgekd.errors import EdgekdError
from edgekd.ondevice.files import sha256_file, write_json_atomic
from edgekd.ondevice.records import RecordError, _check
from edgekd.rundir import RunDir

FINISHED = ("done", "cached")
STATUSES = ("done", "cached", "skipped", "failed", "running")
MAX_BYTES = 64 << 20  # a manifest larger than this is not one edgekd wrote


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ArtifactEntry:
    """One artifact a stage made: its run-dir relative path, sha256 and size."""

    path: str
    sha256: str
    bytes: int

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> ArtifactEntry:
        _check(doc, (dict,), where)
        sha = _check(doc.get("sha256"), (str,), f"{where}.sha256")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise RecordError(f"{where}.sha256: expected 64 lowercase hex digits, got {sha!r}")
        return cls(
            _check(doc.get("path"), (str,), f"{where}.path"), sha, _check(doc.get("bytes"), (int,), f"{where}.bytes")
        )


@dataclass
class StageRecord:
    """A stage's latest record in manifest.json."""

    status: str
    key: str = ""
    key_parts: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # artifact id -> sha256 consumed
    artifacts: dict[str, ArtifactEntry] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why skipped, or a note on a finished stage
    error: str | None = None  # why failed
    started: str | None = None
    ended: str | None = None
    seconds: float | None = None
    cached_at: str | None = None
    last_done: StageRecord | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def why(self) -> str:
        """The reason a stage was skipped, or its error; "no reason recorded" when neither is."""
        return self.reason or self.error or "no reason recorded"

    @classmethod
    def from_dict(cls, doc: Any, where: str = "stage") -> StageRecord:
        _check(doc, (dict,), where)
        status = _check(doc.get("status"), (str,), f"{where}.status")
        if status not in STATUSES:
            raise RecordError(f"{where}.status: {status!r} is not one of {', '.join(STATUSES)}")

        def text(name: str) -> str | None:
            return _check(doc.get(name), (str,), f"{where}.{name}", optional=True)

        def strings(name: str) -> dict[str, str]:
            value = _check(doc.get(name, {}), (dict,), f"{where}.{name}")
            return {k: _check(v, (str,), f"{where}.{name}.{k}") for k, v in value.items()}

        artifacts = _check(doc.get("artifacts", {}), (dict,), f"{where}.artifacts")
        last = doc.get("last_done")
        seconds = _check(doc.get("seconds"), (int, float), f"{where}.seconds", optional=True)
        return cls(
            status=status,
            key=text("key") or "",
            key_parts=strings("key_parts"),
            inputs=strings("inputs"),
            artifacts={k: ArtifactEntry.from_dict(v, f"{where}.artifacts.{k}") for k, v in artifacts.items()},
            metrics=_check(doc.get("metrics", {}), (dict,), f"{where}.metrics"),
            reason=text("reason"),
            error=text("error"),
            started=text("started"),
            ended=text("ended"),
            seconds=None if seconds is None else float(seconds),
            cached_at=text("cached_at"),
            last_done=None if last is None else cls.from_dict(last, f"{where}.last_done"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name in ("key_parts", "inputs") and not value):
                continue
            if f.name == "artifacts":
                value = {k: vars(a) for k, a in value.items()}
            elif f.name == "last_done":
                value = value.to_dict()
            out[f.name] = value
        return out


class Manifest:
    """The run directory's manifest.json, rewritten atomically on every change by the process that `writes`."""

    def __init__(self, run_dir: RunDir | Path, pipeline: str = "", writes: bool = True) -> None:
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.path = self.run.manifest
        self.pipeline = pipeline
        self.writes = writes  # False on processes other than rank 0 of a distributed run
        self.stages: dict[str, StageRecord] = self._read()

    @property
    def run_dir(self) -> Path:
        return self.run.root

    def _read(self) -> dict[str, StageRecord]:
        if not self.path.is_file():
            return {}
        fix = "delete it to start the run afresh"
        try:
            if self.path.stat().st_size > MAX_BYTES:
                raise EdgekdError(f"{self.path}: corrupt manifest (over {MAX_BYTES >> 20} MiB); {fix}")
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise EdgekdError(f"{self.path}: corrupt manifest ({type(e).__name__}: {e}); {fix}") from None
        except OSError as e:
            raise EdgekdError(f"{self.path}: cannot read the manifest ({e.strerror})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("stages", {}), dict):
            raise EdgekdError(
                f"{self.path}: corrupt manifest (not an edgekd manifest object with a `stages` mapping); {fix}"
            )
        try:
            return {name: StageRecord.from_dict(rec, f"stages.{name}") for name, rec in doc.get("stages", {}).items()}
        except RecordError as e:
            raise EdgekdError(f"{self.path}: corrupt manifest: {e}; {fix}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "edgekd_version": __version__,
            "updated": now(),
            "stages": {name: rec.to_dict() for name, rec in self.stages.items()},
        }

    def stage(self, name: str) -> StageRecord | None:
        """The stage's latest record (any status), or None."""
        return self.stages.get(name)

    def done(self, name: str) -> StageRecord | None:
        """The stage's last finished record: the latest one if done/cached, else the one it keeps beside it."""
        rec = self.stages.get(name)
        if rec is None or rec.finished:
            return rec
        return rec.last_done

    def record(self, name: str, rec: StageRecord) -> None:
        """Store the stage's new record; one that is not finished keeps the last finished one beside it."""
        if not rec.finished and rec.last_done is None:
            rec.last_done = self.done(name)
        self.stages[name] = rec
        if self.writes:
            write_json_atomic(self.path, self.to_dict())

    def reload(self) -> None:
        """Read rank 0's manifest again (other processes, after a stage)."""
        self.stages = self._read()

    def artifact_path(self, art: ArtifactEntry, art_id: str) -> Path:
        """Where a recorded artifact lies; a recorded path outside the run directory is refused."""
        return self.run.inside(art.path, f"{self.path}: artifact {art_id}")

    def changed_artifact(self, name: str) -> str | None:
        """The first artifact of the stage's finished record that is missing or whose content changed, or None."""
        done = self.done(name)
        for art_id, art in (done.artifacts if done else {}).items():
            path = self.artifact_path(art, art_id)
            if not path.is_file() or sha256_file(path) != art.sha256:
                return art_id
        return None

    def vouched(self) -> dict[str, Path]:
        """Artifact id -> path for every artifact of a finished, current stage whose file still has the recorded
        sha256 (`stale()` names the stages that are not current, and why).

        This is what later stages, the benchmark and the bundle take: never whatever happens to be on disk.
        """
        return {art_id: path for art_id, (path, _) in self._vouched().items()}

    def vouched_sha256(self) -> dict[str, str]:
        """Artifact id -> recorded sha256, for the artifacts `vouched()` returns."""
        return {art_id: sha for art_id, (_, sha) in self._vouched().items()}

    def stale(self) -> dict[str, str]:
        """Stages whose finished record is not current, and why: it was made from an input that is no longer the
        one the run vouches for (an upstream stage ran again since, and this one did not)."""
        return self._walk()[1]

    def _vouched(self) -> dict[str, tuple[Path, str]]:
        return self._walk()[0]

    def _walk(self) -> tuple[dict[str, tuple[Path, str]], dict[str, str]]:
        """In pipeline order: what each finished stage offers, unless an input it consumed has changed since."""
        out: dict[str, tuple[Path, str]] = {}
        stale: dict[str, str] = {}
        for name, rec in self.stages.items():
            done = self.done(name)
            if rec.status == "skipped" or done is None:  # kept for when the stage runs again, not offered meanwhile
                continue
            changed = [i for i, sha in done.inputs.items() if i not in out or out[i][1] != sha]
            if changed:
                stale[name] = f"made from an earlier {', '.join(sorted(changed))}; run the pipeline again"
                continue
            for art_id, art in done.artifacts.items():
                path = self.artifact_path(art, art_id)
                if path.is_file() and sha256_file(path) == art.sha256:
                    out[art_id] = (path, art.sha256)
        return out, stale


def read_manifest(run_dir: RunDir | Path) -> Manifest:
    """A run's manifest for reading (no writes); empty when the directory has none."""
    return Manifest(run_dir, writes=False)
