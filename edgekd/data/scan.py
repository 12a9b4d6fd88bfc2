"""ImageFolder scanning: list the files safely, decode every image once (in parallel), cache the verdict.

The listing never follows a folder symlink out of the data root or into a loop, skips hidden entries
(`.DS_Store`, `.ipynb_checkpoints`) and records (relative path, size, mtime) of every file: that list is the
data's fingerprint and the key of the scan cache, so a re-run with unchanged files does not decode again.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.ondevice.files import sha256_file, write_json_atomic
from edgekd.ondevice.text import first_line

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
SCAN_VERSION = 1  # bump when the checks change, so cached verdicts are redone


@dataclass(frozen=True)
class FileEntry:
    rel: str  # "train/cat/0001.jpg", always with "/"
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FolderScan:
    """What an ImageFolder root holds, after the checks."""

    root: Path
    classes: tuple[str, ...]
    samples: dict[str, list[tuple[str, int]]]  # split -> [(relative path, class index)], bad files left out
    bad: tuple[tuple[str, str], ...]  # (relative path, why), sorted
    fingerprint: str


def list_files(root: Path) -> list[FileEntry]:
    """Every non-hidden file under root/train and root/val, sorted; folder symlinks stay inside `root`, without loops."""
    root = Path(root).resolve()
    out: list[FileEntry] = []
    for split in SPLITS:
        top = root / split
        if not top.is_dir():
            raise EdgekdError(
                f"data.root: {top} does not exist; an imagefolder root holds train/<class>/*.jpg and val/<class>/*.jpg"
            )
        if not top.resolve().is_relative_to(root):
            raise EdgekdError(f"data.root: {top} is a symlink to {top.resolve()}, outside the data root {root}")
        _walk(root, top, split, (top.resolve(),), out)
    out.sort(key=lambda e: e.rel)
    return out


def _walk(root: Path, folder: Path, rel: str, chain: tuple[Path, ...], out: list[FileEntry]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise EdgekdError(f"data.root: cannot list {folder} ({e.strerror})") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if any(ord(c) < 32 for c in entry.name):
            raise EdgekdError(f"data.root: {rel}/{entry.name!r}: control characters in a file or folder name")
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=True):
            real = path.resolve()
            if entry.is_symlink() and not real.is_relative_to(root):
                raise EdgekdError(
                    f"data.root: {rel}/{entry.name} is a symlink to {real}, outside the data root {root}; "
                    f"move or copy that folder inside the root"
                )
            if any(c.is_relative_to(real) for c in chain):
                raise EdgekdError(
                    f"data.root: {rel}/{entry.name} is a symlink loop (it points to {real}, a folder above it)"
                )
            _walk(root, path, f"{rel}/{entry.name}", (*chain, real), out)
        elif entry.is_file(follow_symlinks=True):
            if entry.is_symlink() and not path.resolve().is_relative_to(root):
                raise EdgekdError(
                    f"data.root: {rel}/{entry.name} is a symlink to {path.resolve()}, outside the data root {root}; "
                    f"copy that file inside the root"
                )
            st = entry.stat(follow_symlinks=True)
            out.append(FileEntry(f"{rel}/{entry.name}", st.st_size, st.st_mtime_ns))


def listing_digest(files: list[FileEntry], root: Path, content: bool) -> str:
    """sha256 of the sorted (path, size, mtime) list, or of (path, content sha256) with `content`."""
    h = hashlib.sha256()
    for f in files:
        if content:
            h.update(f"{f.rel}\0{sha256_file(root / f.rel)}\n".encode())
        else:
            h.update(f"{f.rel}\0{f.size}\0{f.mtime_ns}\n".encode())
    return h.hexdigest()


def check_image(path: Path) -> str | None:
    """Why `path` is not a usable image (None when it decodes to the end)."""
    from PIL import Image, UnidentifiedImageError

    if not path.name.lower().endswith(IMAGE_EXTENSIONS):
        return "not an image file (extension)"
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG: decode at a reduced scale; every byte of the data is still read
            im.load()
    except UnidentifiedImageError:
        return "not an image (unknown format)"
    except (OSError, SyntaxError, ValueError) as e:  # truncated data, broken CRC, bad header
        return f"cannot decode ({first_line(e)})"
    except Exception as e:  # Pillow's decoders raise assorted types on damaged input
        return f"cannot decode ({type(e).__name__}: {e})"
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekd" / "scans"


def scan_imagefolder(root: Path, on_bad_image: str = "error", workers: int | None = None) -> FolderScan:
    """Check every image under root/{train,val} once; a later call with the same files reads the cached verdict.

    Bad files raise one EdgekdError naming up to 10 of them (`on_bad_image="error"`) or are left out (`"skip"`).
    """
    root = Path(root).resolve()
    files = list_files(root)
    digest = listing_digest(files, root, content=False)
    cache = _cache_dir() / f"{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.json"
    bad = _cached_verdict(cache, digest)
    if bad is None:
        with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
            verdicts = pool.map(lambda f: check_image(root / f.rel), files)
            bad = {f.rel: why for f, why in zip(files, verdicts) if why is not None}
        _write_cache(cache, digest, bad)
    scan = _organise(root, files, dict(bad), digest)
    if scan.bad and on_bad_image == "error":
        raise bad_files_error(scan)
    _check_classes(scan)
    return scan


def _cached_verdict(cache: Path, digest: str) -> dict[str, str] | None:
    try:
        doc = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != SCAN_VERSION or doc.get("listing") != digest:
        return None
    bad = doc.get("bad")
    return bad if isinstance(bad, dict) else None


def _write_cache(cache: Path, digest: str, bad: dict[str, str]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, {"version": SCAN_VERSION, "listing": digest, "bad": bad})
    except OSError:
        pass  # a read-only home only costs a re-scan next time


def _organise(root: Path, files: list[FileEntry], bad: dict[str, str], digest: str) -> FolderScan:
    per_split: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for split in SPLITS:
        for d in sorted(p.name for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith(".")):
            per_split[split][d] = []
    for f in files:
        split, _, rest = f.rel.partition("/")
        cls, sep, _ = rest.partition("/")
        if not sep:
            bad.setdefault(f.rel, "a file beside the class folders (images go in <split>/<class>/)")
        elif f.rel not in bad:
            per_split[split][cls].append(f.rel)
    train, val = set(per_split["train"]), set(per_split["val"])
    if train != val:
        only_t, only_v = sorted(train - val)[:5], sorted(val - train)[:5]
        raise EdgekdError(
            f"data.root: train/ and val/ under {root} have different class folders "
            f"(only in train: {only_t or 'none'}; only in val: {only_v or 'none'})"
        )
    classes = tuple(sorted(train))
    samples = {s: [(rel, classes.index(c)) for c in classes for rel in per_split[s][c]] for s in SPLITS}
    return FolderScan(root, classes, samples, tuple(sorted(bad.items())), digest)


def _check_classes(scan: FolderScan) -> None:
    if not scan.classes:
        raise EdgekdError(f"data.root: {scan.root}/train has no class folders (expected train/<class>/*.jpg)")
    for split in SPLITS:
        counts = [0] * len(scan.classes)
        for _, label in scan.samples[split]:
            counts[label] += 1
        empty = [c for c, n in zip(scan.classes, counts) if n == 0]
        if empty:
            raise EdgekdError(
                f"data.root: {scan.root}/{split}/{empty[0]} has no usable image"
                + (f" ({len(empty)} empty class folders: {', '.join(empty[:5])})" if len(empty) > 1 else "")
            )


def bad_files_error(scan: FolderScan) -> EdgekdError:
    shown = "; ".join(f"{rel}: {why}" for rel, why in scan.bad[:10])
    more = f" (and {len(scan.bad) - 10} more)" if len(scan.bad) > 10 else ""
    return EdgekdError(
        f"data.root: {len(scan.bad)} bad file{'s' if len(scan.bad) > 1 else ''} under {scan.root}: {shown}{more}; "
        f"fix or remove them, or set data.on_bad_image: skip to leave them out"
    )
