"""Helpers the fleet tests share: recording artifacts in a run's manifest as the runner would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def vouch(run: Path, stage: str, files: dict[str, str]) -> None:
    """Record `files` (artifact id -> run-dir path) as a done stage in run/manifest.json, as the runner would."""
    path = run / "manifest.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"pipeline": "test", "stages": {}}
    arts = {
        art: {
            "path": rel,
            "sha256": hashlib.sha256((run / rel).read_bytes()).hexdigest(),
            "bytes": (run / rel).stat().st_size,
        }
        for art, rel in files.items()
    }
    doc["stages"][stage] = {"status": "done", "key": "test", "artifacts": arts, "metrics": {}}
    path.write_text(json.dumps(doc))
