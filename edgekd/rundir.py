"""The one owner of a run directory's layout: where every file of a run lives.

    <root>/manifest.json            the stage records (edgekd.manifest)
    <root>/pipeline.yaml            the config the run used
    <root>/<stage>/                 a stage's folder: its catalogue files, checkpoints, caches, `failed/`
    <root>/.staging/<stage>/...     a running stage's outputs, promoted to their catalogue paths when it succeeds
    <root>/bench/<device>.json      one bench record per device (local, or brought back by `edgekd ship`)
    <root>/tensorrt/<device>/       engines, sidecars and the ship record of one device
    <root>/models/<name>*.onnx      an ONNX file given to `edgekd bench FILE.onnx` (whose output folder is laid out
                                    like a run directory), and the fp16 and Q/DQ files made from it
    <root>/distill/study.db         the sweep's Optuna studies (SQLite), unless a storage URL is given
    <root>/distill/sweep/<study>/trial-<n>/   one sweep trial: trial.json, student.pt, its checkpoint and curves
    <root>/scout/cache.json         the scout's timings and model sizes, kept across runs (edgekd.search.scout)
    <root>/scout/tables/<device>.json|png   the scout's table of one device, and its latency-vs-MACs plot
    <root>/scout/trials/<candidate>/         one candidate's brief distillation (`scout.top_k`)
    <root>/scout/devices/<device>/           the candidates' files shipped to a device and timed there: a folder
                                             laid out like a run (edgekd.fleet.files), never the run's own bench/
    <root>/prune/devices/<device>/           the pruning steps' candidates shipped to a device and timed there (the
                                             same layout; `student.prune.target.device`)

Artifact paths come from the catalogue (edgekd.ondevice.catalog); every path that is built from a
config value, a manifest entry or a device's answer goes through `RunDir.inside`, so it cannot leave
the root. Nothing else in edgekd joins run-directory names.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.ondevice import catalog
from edgekd.ondevice.names import is_plain_name
from edgekd.ondevice.records import BenchDoc, RecordError

MANIFEST = "manifest.json"
CONFIG = "pipeline.yaml"
STAGING = ".staging"
SCRATCH = ".ranks"
LOCK = ".lock"
SHIP_RECORD = "ship.json"
STUDY_DB = "study.db"
SWEEP = "sweep"
TRIAL_RECORD = "trial.json"
TRIAL_STUDENT = "student.pt"
SCOUT = "scout"
SCOUT_CACHE = "cache.json"
SCOUT_TABLES = "tables"
SCOUT_TRIALS = "trials"
TIMED_ON = "devices"
"""A stage's folder of the devices it timed files on (scout, prune)."""
PRUNE = "prune"


def check_name(name: str, field: str) -> str:
    """`name` when it is a plain name (ondevice.names); else a one-line EdgekdError naming `field`."""
    if not is_plain_name(name):
        raise EdgekdError(
            f"{field}: {name!r} is not a plain name: use 1-64 letters, digits, '_', '.' or '-', starting with a "
            f"letter, digit or '_' (it names a file and a folder of the run directory)"
        )
    return name


class RunDir:
    """A run directory: catalogue paths per device, stage folders, bench files, engine folders, staging."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __str__(self) -> str:
        return str(self.root)

    # ------------------------------------------------------------------ fixed files

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    # ------------------------------------------------------------------ one writer at a time

    @contextmanager
    def locked(self, what: str) -> Iterator[None]:
        """Hold the run directory's lock (an OS file lock, released when the process ends however it ends) for
        the block; while another process holds it, a one-line EdgekdError names that process."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise EdgekdError(f"{self.root}: cannot lock the run directory ({e.strerror})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EdgekdError(
                    f"{self.root}: in use by {self.lock_holder() or 'another edgekd process'}; "
                    f"wait for it to finish (one edgekd process writes a run directory at a time)"
                ) from None
            os.ftruncate(fd, 0)
            since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            os.write(fd, f"PID {os.getpid()} ({what}, since {since})".encode())
            yield
        finally:
            os.close(fd)  # releases the lock

    def lock_holder(self) -> str | None:
        """Who holds the run directory's lock ("PID 123 (edgekd run, since ...)"), or None when it is free."""
        try:
            fd = os.open(self.lock, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 200).decode("utf-8", "replace").strip() or "another edgekd process"
        finally:
            os.close(fd)
        return None

    # ------------------------------------------------------------------ containment

    def inside(self, relative: str | Path, what: str = "path") -> Path:
        """root / relative, refused (one-line EdgekdError naming `what`) when it would lie outside the root."""
        rel = Path(relative)
        if rel.is_absolute():
            raise EdgekdError(f"{what}: {str(relative)!r} is absolute; run-directory paths are relative to {self.root}")
        path = Path(os.path.normpath(self.root / rel))
        if path != self.root and self.root not in path.parents:
            raise EdgekdError(f"{what}: {str(relative)!r} lies outside the run directory {self.root}")
        return path

    def relative(self, path: Path) -> str:
        """The run-dir relative, POSIX form of a path inside the root (ValueError for one outside)."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    # ------------------------------------------------------------------ catalogue paths

    def path(self, artifact_id: str, device: str = "", name: str = "") -> Path:
        """Where the artifact lives in this run (engines and bench files: on `device`'s behalf; the rows of an ONNX
        file given to `edgekd bench`: that file's `name`)."""
        if "{device}" in catalog.get(artifact_id).file:
            check_name(device, "device name")
        if catalog.per_file(artifact_id):
            check_name(name, "model file name")
        return self.inside(catalog.path_of(artifact_id, device, name), f"artifact {artifact_id}")

    def staged(self, stage: str, artifact_id: str, device: str = "") -> Path:
        """Where a running stage writes the artifact before the runner promotes it to `path()`."""
        return self.staging_dir(stage) / self.path(artifact_id, device).relative_to(self.root)

    def staging_dir(self, stage: str) -> Path:
        return self.root / STAGING / check_name(stage, "stage")

    def stage_dir(self, stage: str) -> Path:
        """A stage's own folder (checkpoints, caches, logs); its catalogue files also live there."""
        return self.root / check_name(stage, "stage")

    @property
    def scratch_root(self) -> Path:
        """Where processes other than rank 0 write (removed once a distributed run is through)."""
        return self.root / SCRATCH

    @property
    def shared_token(self) -> Path:
        """The file rank 0 writes and every other process reads back: do all processes see one run directory?"""
        return self.scratch_root / "shared-dir-token"

    def scratch_dir(self, rank: int, stage: str) -> Path:
        """Where a process other than rank 0 writes a distributed stage's files (never recorded)."""
        return self.scratch_root / str(rank) / check_name(stage, "stage")

    # ------------------------------------------------------------------ sweeps

    @property
    def study_db(self) -> Path:
        """The SQLite file that holds the distill sweep's Optuna studies when no storage URL is given."""
        return self.stage_dir("distill") / STUDY_DB

    def trial_dir(self, study: str, number: int) -> Path:
        """One sweep trial's folder: trial.json (its record), student.pt, checkpoint and curves."""
        return self.stage_dir("distill") / SWEEP / check_name(study, "study") / f"trial-{int(number)}"

    def trial_record(self, study: str, number: int) -> Path:
        return self.trial_dir(study, number) / TRIAL_RECORD

    def trial_student(self, study: str, number: int) -> Path:
        """The student a sweep trial trained (the winner's goes on without training it again)."""
        return self.trial_dir(study, number) / TRIAL_STUDENT

    # ------------------------------------------------------------------ the scout

    @property
    def scout_cache(self) -> Path:
        """The scout's cache: each candidate's timing per (model, input, device, runtime, toolchain), and sizes."""
        return self.stage_dir(SCOUT) / SCOUT_CACHE

    def scout_table(self, device: str) -> Path:
        """scout/tables/<device>.json: the scout's table of one device (edgekd.run_records.ScoutTable)."""
        return self.stage_dir(SCOUT) / SCOUT_TABLES / f"{check_name(device, 'device name')}.json"

    def scout_plot(self, device: str) -> Path:
        """scout/tables/<device>.png: latency against MACs of the device's candidates."""
        return self.scout_table(device).with_suffix(".png")

    def scout_trial_dir(self, candidate: str) -> Path:
        """Where one candidate (as a plain name: `prune-0.5`) is distilled briefly to rank the top k."""
        return self.stage_dir(SCOUT) / SCOUT_TRIALS / check_name(candidate, "scout candidate")

    def scout_device_dir(self, device: str) -> Path:
        """scout/devices/<device>/: the folder the scout times candidates on a device in (edgekd.fleet.files'
        `out`: its own bench/, models/ and tensorrt/<device>/, so the run's bench files are never replaced)."""
        return self.stage_dir(SCOUT) / TIMED_ON / check_name(device, "device name")

    def prune_device_dir(self, device: str) -> Path:
        """prune/devices/<device>/: the folder the prune stage times its steps' candidates on a device in (as
        scout_device_dir)."""
        return self.stage_dir(PRUNE) / TIMED_ON / check_name(device, "device name")

    def failed_dir(self, stage: str) -> Path:
        """Files of a failed attempt, kept for inspection, never vouched for or shipped."""
        return self.stage_dir(stage) / "failed"

    # ------------------------------------------------------------------ devices

    def bench_file(self, device: str) -> Path:
        return self.path("bench", device)

    def bench_files(self) -> list[Path]:
        """Every bench/<device>.json of the run (the local one and those brought back from devices)."""
        folder = self.bench_file("local").parent
        return sorted(p for p in folder.glob("*.json") if is_plain_name(p.stem)) if folder.is_dir() else []

    def engine_dir(self, device: str) -> Path:
        """tensorrt/<device>/: the engines, sidecars and build logs of one device."""
        return self.path("student_trt_fp32", device).parent

    def ship_record(self, device: str) -> Path:
        """tensorrt/<device>/ship.json: what the last `edgekd ship` to that device did."""
        return self.engine_dir(device) / SHIP_RECORD


def load_bench(path: Path) -> BenchDoc:
    """bench/<device>.json as typed records; a file that does not match the schema is a one-line EdgekdError."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgekdError(f"{path}: cannot read bench file: {e}") from None
    try:
        return BenchDoc.from_dict(doc)
    except RecordError as e:
        raise EdgekdError(f"{path}: {e}") from None
