"""Quarantine of run artifacts that failed a check.

Hashing and atomic writing live in :mod:`edgekd.ondevice.files`, shared with the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def quarantine(paths: Iterable[Path], folder: Path) -> None:
    """Move files that failed a check into `folder` (kept for inspection, never vouched for or shipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if Path(path).is_file():
            os.replace(path, folder / Path(path).name)
