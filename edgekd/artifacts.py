"""Hashing and atomic writing of run artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from edgekd.ondevice.measure import write_bytes_atomic  # one implementation for the host and the device

__all__ = ["atomic_path", "quarantine", "sha256_file", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def sha256_file(path: Path) -> str:
    """sha256 of a file, computed once per version of it (a rewrite or atomic replace changes the stat key)."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)


@lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(str(path), text.encode("utf-8"))


def write_json_atomic(path: Path, doc: object) -> None:
    write_text_atomic(path, json.dumps(doc, indent=2, default=str) + "\n")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for writers that need a file name (onnx.save, torch.jit.save);
    on a clean exit it replaces `path`, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.fchmod(fd, 0o644)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def quarantine(paths: Iterable[Path], folder: Path) -> None:
    """Move files that failed a check into `folder` (kept for inspection, never vouched for or shipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if Path(path).is_file():
            os.replace(path, folder / Path(path).name)
