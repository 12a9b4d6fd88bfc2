"""manifest.json: one record per stage, and the artifacts the run vouches for.

A stage's record holds its status (done, cached, skipped, failed, running), its cache key and the
parts it was made of, the sha256 of every input it consumed, its artifacts (path, sha256, bytes),
metrics, timings and reasons. A failed or interrupted attempt is recorded with the last done record
kept beside it (`last_done`), so a run that fails on bad input costs no finished work: the next run
finds the done record and its artifacts intact and keeps them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgekd import __version__, distributed
from edgekd.artifacts import sha256_file, write_json_atomic
from edgekd.errors import EdgekdError

MANIFEST = "manifest.json"
FINISHED = ("done", "cached")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """The run directory's manifest.json (written by rank 0 only, atomically on every change)."""

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
        """The stage's latest record (any status), or {}."""
        return self.doc["stages"].get(name, {})

    def done(self, name: str) -> dict:
        """The stage's last finished record: the latest one if done/cached, else the one a failed attempt kept."""
        entry = self.stage(name)
        if entry.get("status") in FINISHED:
            return entry
        return entry.get("last_done") or {}

    def record(self, name: str, entry: dict) -> None:
        self.doc["stages"][name] = entry
        self.doc["updated"] = now()
        if distributed.is_main():
            write_json_atomic(self.path, self.doc)

    def attempt(self, name: str, entry: dict) -> None:
        """Record a running or failed attempt without losing the last finished record."""
        last = self.done(name)
        self.record(name, {**entry, "last_done": last} if last else entry)

    def reload(self) -> None:
        """Read rank 0's manifest again (other processes, after a stage)."""
        self.doc["stages"] = json.loads(self.path.read_text())["stages"] if self.path.is_file() else {}

    def changed_artifact(self, name: str) -> str | None:
        """The first artifact of the stage's finished record that is missing or whose content changed, or None."""
        for art_id, art in self.done(name).get("artifacts", {}).items():
            path = self.run_dir / art["path"]
            if not path.is_file() or sha256_file(path) != art["sha256"]:
                return art_id
        return None

    def vouched(self) -> dict[str, Path]:
        """Artifact id -> path for every artifact of a finished stage whose file still has the recorded sha256.

        This is what later stages, the benchmark and the bundle take: never whatever happens to be on disk.
        """
        out = {}
        for name in self.doc["stages"]:
            for art_id, art in self.done(name).get("artifacts", {}).items():
                path = self.run_dir / art["path"]
                if path.is_file() and sha256_file(path) == art["sha256"]:
                    out[art_id] = path
        return out

    def vouched_sha256(self) -> dict[str, str]:
        """Artifact id -> recorded sha256, for the artifacts `vouched()` returns."""
        shas = {}
        for name in self.doc["stages"]:
            for art_id, art in self.done(name).get("artifacts", {}).items():
                shas[art_id] = art["sha256"]
        return {k: shas[k] for k in self.vouched()}
