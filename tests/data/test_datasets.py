import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.config import DataConfig
from edgekd.data.datasets import digits_arrays, load_data
from edgekd.errors import EdgekdError


def test_digits_split_is_fixed_and_normalised():
    a = load_data(DataConfig(image_size=16), seed=0)
    b = load_data(DataConfig(image_size=16), seed=0)
    assert a.info.num_classes == 10 and a.info.in_channels == 1
    assert len(a.train) + len(a.val) == 1797 and abs(len(a.val) - 359) <= 1
    xa, ya = a.val_arrays(50)
    xb, yb = b.val_arrays(50)
    assert xa.shape == (50, 1, 16, 16) and np.array_equal(xa, xb) and np.array_equal(ya, yb)
    x, _, _ = next(a.train.batches(512))
    assert abs(float(x.mean())) < 0.5 and 0.5 < float(x.std()) < 1.5


def test_digits_read_from_scikit_learns_file_are_what_load_digits_gives():
    from sklearn.datasets import load_digits

    images, labels = digits_arrays()
    d = load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, d.images) and np.array_equal(labels, d.target)


def test_digits_as_rgb():
    d = load_data(DataConfig(image_size=16, channels=3), seed=0)
    x, _, _ = next(d.val.batches(4))
    assert x.shape == (4, 3, 16, 16) and d.info.mean == (0.3, 0.3, 0.3)


def _make_folder(root, classes=("cat", "dog"), n=3, size=20):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png"
                )


def test_imagefolder_loads_user_images(tmp_path):
    _make_folder(tmp_path)
    d = load_data(DataConfig(dataset="imagefolder", root=tmp_path, image_size=16), seed=0)
    assert d.info.class_names == ("cat", "dog") and len(d.train) == 6
    x, y, idx = next(d.train.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, 16, 16) and set(y.tolist()) <= {0, 1}


def test_imagefolder_errors(tmp_path):
    with pytest.raises(EdgekdError, match="train does not exist"):
        load_data(DataConfig(dataset="imagefolder", root=tmp_path / "nothing"), seed=0)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir(parents=True)
    with pytest.raises(EdgekdError, match="data.root"):
        load_data(DataConfig(dataset="imagefolder", root=tmp_path / "empty"), seed=0)
    _make_folder(tmp_path / "bad")
    (tmp_path / "bad" / "train" / "cat" / "0.png").write_bytes(b"corrupt")
    with pytest.raises(EdgekdError, match=r"1 bad file under .*: train/cat/0\.png: not an image"):
        load_data(DataConfig(dataset="imagefolder", root=tmp_path / "bad", image_size=16), seed=0)


def test_image_damaged_after_the_scan_is_named_by_the_loader(tmp_path):
    _make_folder(tmp_path)
    d = load_data(DataConfig(dataset="imagefolder", root=tmp_path, image_size=16), seed=0)
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"corrupt")
    with pytest.raises(EdgekdError, match=r"0\.png: cannot read the image"):
        list(d.train.batches(2))


def test_torchvision_set_missing_root_is_clear(tmp_path):
    with pytest.raises(EdgekdError, match="data.root.*download: true"):
        load_data(DataConfig(dataset="cifar10", root=tmp_path / "absent"), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgekdError, match="cifar10 not found under"):
        load_data(DataConfig(dataset="cifar10", root=tmp_path / "empty"), seed=0)


def test_digits_without_scikit_learns_file_or_scikit_learn(monkeypatch, tmp_path):
    """A scikit-learn that keeps the file elsewhere: load_digits() gives them; none installed: a one-line error."""
    from importlib.machinery import ModuleSpec

    from sklearn.datasets import load_digits

    import edgekd.data.datasets as datasets

    elsewhere = ModuleSpec("sklearn", None, is_package=True)
    elsewhere.submodule_search_locations = [str(tmp_path)]  # no datasets/data/digits.csv.gz there
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: elsewhere)
    images, labels = digits_arrays()
    assert np.array_equal(images, load_digits().images) and np.array_equal(labels, load_digits().target)

    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EdgekdError, match="^data.dataset: digits needs scikit-learn, which is not installed"):
        digits_arrays()
