"""Reading what a report is made from: bench records and the distillation curves of a run (the manifest:
edgekd.manifest.read_manifest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.ondevice.records import BenchDoc
from edgekd.rundir import RunDir, load_bench


def load_benches(run_dir: Path) -> list[BenchDoc]:
    """Every bench/<device>.json of a run, sorted by file name."""
    return [load_bench(p) for p in RunDir(run_dir).bench_files()]


def load_curves(path: Path) -> list[dict[str, Any]]:
    """Per-epoch records of the distill stage's curves (`distill_metrics`; [] when absent)."""
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
