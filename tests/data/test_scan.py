"""ImageFolder scan: bad files found up front, cached verdicts, safe symlinks, a fingerprint over the files."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from edgekd.config import DataConfig
from edgekd.data.datasets import data_fingerprint, load_data
from edgekd.data.scan import scan_imagefolder
from edgekd.errors import EdgekdError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def make_folder(root, classes=("a", "b"), n=2, size=24):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.jpg", quality=90
                )
    return root


def damage(root):
    """A corrupt PNG, a truncated JPEG and a text file: the three bad files of the issue."""
    (root / "train" / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "train" / "b" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "val" / "a" / "notes.txt").write_text("not an image")


def test_bad_files_are_named_up_front_and_skip_leaves_them_out(tmp_path):
    root = make_folder(tmp_path / "img")
    damage(root)
    with pytest.raises(EdgekdError) as e:
        scan_imagefolder(root, "error")
    msg = str(e.value)
    assert "3 bad files" in msg and "\n" not in msg
    for name in ("train/a/corrupt.png", "train/b/truncated.jpg", "val/a/notes.txt"):
        assert name in msg
    assert "data.on_bad_image: skip" in msg
    cfg = DataConfig(dataset="imagefolder", root=root, image_size=16, on_bad_image="skip", num_workers=0)
    d = load_data(cfg)
    assert len(d.train) == 4 and len(d.val) == 4
    assert [rel for rel, _ in d.skipped] == ["train/a/corrupt.png", "train/b/truncated.jpg", "val/a/notes.txt"]
    assert len(list(d.train.batches(8))) == 1


def test_more_than_ten_bad_files_lists_ten_and_the_count(tmp_path):
    root = make_folder(tmp_path / "img")
    for i in range(12):
        (root / "train" / "a" / f"junk{i:02d}.png").write_bytes(b"junk")
    with pytest.raises(EdgekdError, match=r"12 bad files .*junk09\.png: .*\(and 2 more\)") as e:
        scan_imagefolder(root)
    assert "junk10" not in str(e.value)


def test_verdicts_are_cached_by_the_file_list(tmp_path):
    root = make_folder(tmp_path / "img")
    scan_imagefolder(root)
    target = root / "train" / "a" / "0.jpg"
    st = target.stat()
    good = target.read_bytes()
    target.write_bytes(b"x" * len(good))  # same size ...
    os.utime(
        target, ns=(st.st_atime_ns, st.st_mtime_ns)
    )  # ... and mtime: the cached verdict stands (not decoded again)
    assert scan_imagefolder(root).bad == ()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime: decoded again, found bad
    assert [rel for rel, _ in scan_imagefolder(root, "skip").bad] == ["train/a/0.jpg"]


def test_symlink_loop_is_refused(tmp_path):
    root = make_folder(tmp_path / "img", n=1)
    os.symlink("..", root / "train" / "a" / "loop")
    with pytest.raises(EdgekdError, match="train/a/loop is a symlink loop"):
        scan_imagefolder(root)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root = make_folder(tmp_path / "img", n=1)
    outside = make_folder(tmp_path / "elsewhere", classes=("c",), n=1) / "train" / "c"
    os.symlink(outside, root / "train" / "c")
    os.symlink(outside, root / "val" / "c")
    with pytest.raises(EdgekdError, match=r"train/c is a symlink to .*outside the data root"):
        scan_imagefolder(root)


def test_a_file_symlink_out_of_the_root_is_refused(tmp_path):
    """Issue 22 item 9: folder symlinks were checked, file symlinks were followed wherever they pointed."""
    root = make_folder(tmp_path / "img", n=1)
    secret = tmp_path / "elsewhere.png"
    Image.new("RGB", (20, 20)).save(secret)
    os.symlink(secret, root / "train" / "a" / "x.png")
    with pytest.raises(EdgekdError, match=r"train/a/x.png is a symlink to .*elsewhere.png, outside the data root"):
        scan_imagefolder(root)


def test_symlinked_folder_inside_the_root_and_hidden_entries(tmp_path):
    root = make_folder(tmp_path / "img", n=1)
    (root / "pool").mkdir()
    Image.new("RGB", (20, 20)).save(root / "pool" / "x.png")
    os.symlink(root / "pool", root / "train" / "a" / "more")
    (root / "train" / "a" / ".DS_Store").write_bytes(b"\0\0")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    scan = scan_imagefolder(root)
    assert scan.classes == ("a", "b") and scan.bad == ()
    assert [rel for rel, _ in scan.samples["train"]] == ["train/a/0.jpg", "train/a/more/x.png", "train/b/0.jpg"]


def test_class_folders_must_match_and_hold_images(tmp_path):
    root = make_folder(tmp_path / "img", n=1)
    (root / "train" / "c").mkdir()
    with pytest.raises(EdgekdError, match=r"only in train: \['c'\]; only in val: none"):
        scan_imagefolder(root)
    (root / "val" / "c").mkdir()
    with pytest.raises(EdgekdError, match="train/c has no usable image"):
        scan_imagefolder(root)


def test_fingerprint_covers_the_files(tmp_path):
    root = make_folder(tmp_path / "img", n=1)
    cfg = DataConfig(dataset="imagefolder", root=root)
    first = data_fingerprint(cfg, 0)
    assert data_fingerprint(cfg, 0) == first
    target = root / "train" / "a" / "0.jpg"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = data_fingerprint(cfg, 0)
    assert touched != first
    by_content = DataConfig(dataset="imagefolder", root=root, content_hash=True)
    before = data_fingerprint(by_content, 0)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))  # mtime alone: same content
    assert data_fingerprint(by_content, 0) == before
    Image.new("RGB", (20, 20)).save(root / "val" / "b" / "new.png")
    assert data_fingerprint(cfg, 0) not in (first, touched)
    assert data_fingerprint(DataConfig(), 0) != data_fingerprint(DataConfig(), 1)
