"""The manifest's stage records as the report reads them (raw dicts from manifest.json)."""

from __future__ import annotations

from typing import Any

FINISHED = ("done", "cached")


def stage_records(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Stage name -> its latest record, in pipeline order; records that are not objects are left out."""
    stages = manifest.get("stages") or {}
    return {name: rec for name, rec in stages.items() if isinstance(rec, dict)}


def finished(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stage's last finished record: the record itself when done or cached, else the one a failed attempt
    kept beside it (`last_done`), else None."""
    if not record:
        return None
    if record.get("status") in FINISHED:
        return record
    last = record.get("last_done")
    return last if isinstance(last, dict) and last.get("status") in FINISHED else None
