"""Reading what a report is made from: bench records, the manifest and the distillation curves of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.ondevice.records import BenchDoc, RecordError


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


def load_benches(run_dir: Path) -> list[BenchDoc]:
    """Every bench/<device>.json of a run, sorted by file name."""
    return [load_bench(p) for p in sorted((Path(run_dir) / "bench").glob("*.json"))]


def load_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest.json, or {} when the directory has none (e.g. bench files brought back from a device)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgekdError(f"{path}: malformed manifest: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("stages", {}), dict):
        raise EdgekdError(f"{path}: not an edgekd manifest (expected an object with a `stages` mapping)")
    return doc


def load_curves(path: Path) -> list[dict[str, Any]]:
    """Per-epoch records of distill/metrics.jsonl ([] when absent)."""
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise EdgekdError(f"{path}:{n}: malformed metrics line: {e.msg}") from None
    return [r for r in rows if isinstance(r, dict) and "epoch" in r]
