"""File hashing and atomic writes, for the host and the device alike (Python 3.8, stdlib only).

One implementation of each: the host (run directory, manifest, exports, report) and the device
(bench files, engines, sidecars) hash and write files the same way.
"""

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def sha256_file(path: PathLike) -> str:
    """sha256 of a file, computed once per version of it (a rewrite or atomic replace changes the stat key)."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)


@lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write `data` through a temporary file in the same folder and a rename: a reader sees the old file or
    the whole new one, and a failed write (a full disk) leaves the old one intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        os.fchmod(fd, 0o644)  # not mkstemp's 0600: results are shared files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write UTF-8 text to `path` atomically (see write_bytes_atomic)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, doc: object) -> None:
    """Write `doc` as indented JSON to `path` atomically (see write_bytes_atomic); values JSON cannot hold are
    written as their str()."""
    write_text_atomic(path, json.dumps(doc, indent=2, default=str) + "\n")


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for writers that need a file name (onnx.save, torch.jit.save);
    on a clean exit it replaces `path`, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=".tmp-", suffix=path.suffix)
    os.fchmod(fd, 0o644)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
