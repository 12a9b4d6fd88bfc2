"""Image sets that yield normalised, fixed-size batches: in-memory tensors or a user's ImageFolder."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from edgekd.config import DataConfig
from edgekd.data.preprocessing import STATS
from edgekd.data.scan import FolderScan, list_files, listing_digest, scan_imagefolder
from edgekd.errors import EdgekdError
from edgekd.models.inputs import InputSpec, default_resize
from edgekd.ondevice.text import first_line

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images (N,C,S,S) float, labels (N,), sample indices (N,)


@dataclass(frozen=True)
class DataInfo:
    """What a model and a deployer need to know about the inputs."""

    dataset: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    resize_size: int = 0  # short side before the centre crop (file-backed sets); 0: resized straight to image_size

    def to_dict(self) -> dict:
        return asdict(self)


class ImageSet(Protocol):
    labels: torch.Tensor

    def __len__(self) -> int: ...

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]: ...


class TensorImageSet:
    """Images held in memory (uint8 or float, any size); resized and normalised one batch at a time."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        size: int,
        channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.images, self.labels = images, labels.long()
        self.size, self.channels = size, channels
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def _prepare(self, x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        x = x.to(device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = _match_channels(x, self.channels)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean.to(device)) / self.std.to(device)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        for idx in _batch_indices(len(self), batch_size, shuffle, generator, shard):
            yield self._prepare(self.images[idx], device), self.labels[idx].to(device), idx


class _IndexedFolder(Dataset):
    def __init__(self, folder, transform) -> None:
        self.folder, self.transform = folder, transform

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, i: int):
        path, label = self.folder.samples[i]
        try:
            image = self.folder.loader(path)
        except Exception as e:  # PIL raises many types for a broken file
            raise EdgekdError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
        return self.transform(image), label, i


class FolderImageSet:
    """A user's ImageFolder split, decoded by DataLoader workers."""

    def __init__(self, folder, transform, num_workers: int) -> None:
        self.data = _IndexedFolder(folder, transform)
        self.labels = torch.tensor([label for _, label in folder.samples])
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.data)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        plan = [idx.tolist() for idx in _batch_indices(len(self), batch_size, shuffle, generator, shard)]
        loader = DataLoader(
            self.data, batch_sampler=plan, num_workers=self.num_workers, pin_memory=str(device).startswith("cuda")
        )
        try:
            for x, y, idx in loader:
                yield x.to(device, non_blocking=True), y.to(device), idx
        except (
            Exception
        ) as e:  # an EdgekdError from a worker arrives with the worker's traceback in its message: keep its one line
            lines = [ln for ln in str(e).splitlines() if ln.startswith("edgekd.errors.EdgekdError: ")]
            if lines:
                raise EdgekdError(lines[-1].removeprefix("edgekd.errors.EdgekdError: ")) from None
            raise


class Subset:
    """The first `n` samples of an image set."""

    def __init__(self, base: ImageSet, n: int) -> None:
        self.base, self.n = base, min(n, len(base))
        self.labels = base.labels[: self.n]

    def __len__(self) -> int:
        return self.n

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        if isinstance(self.base, TensorImageSet):
            base = TensorImageSet(
                self.base.images[: self.n],
                self.labels,
                self.base.size,
                self.base.channels,
                tuple(self.base.mean.flatten().tolist()),
                tuple(self.base.std.flatten().tolist()),
            )
            yield from base.batches(batch_size, shuffle, generator, device, shard)
            return
        for x, y, idx in self.base.batches(batch_size, False, None, device, shard):
            keep = idx < self.n
            if keep.any():
                yield x[keep], y[keep], idx[keep]


class Picked:
    """Chosen samples of an image set, yielding their indices in the base set (so per-sample tables such as the
    teacher cache, indexed by training sample, still apply)."""

    def __init__(self, base: ImageSet, indices: torch.Tensor) -> None:
        if isinstance(base, Subset):  # the first n samples: the chosen ones all lie among them
            base = base.base
        self.base, self.indices = base, indices.long()
        self.labels = base.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        base = self.base
        plan = [self.indices[pos] for pos in _batch_indices(len(self), batch_size, shuffle, generator, shard)]
        if isinstance(base, TensorImageSet):
            for idx in plan:
                yield base._prepare(base.images[idx], device), base.labels[idx].to(device), idx
        elif isinstance(base, FolderImageSet):  # one loader for the whole pass: its workers decode ahead
            batches = [idx.tolist() for idx in plan]
            pin = str(device).startswith("cuda")
            loader = DataLoader(base.data, batch_sampler=batches, num_workers=base.num_workers, pin_memory=pin)
            for x, y, i in loader:
                yield x.to(device, non_blocking=True), y.to(device), i
        else:
            raise TypeError(f"cannot pick samples of a {type(base).__name__}")


def carve(train: ImageSet, fraction: float, seed: int) -> tuple[Picked, Picked]:
    """(fit, selection): a seeded random `fraction` of the training samples held out from the rest."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n = max(1, round(len(train) * fraction))
    if n >= len(train):
        raise EdgekdError(
            f"sweep.selection_split: {fraction:g} of {len(train)} training images leaves none to train on"
        )
    return Picked(train, order[n:].sort().values), Picked(train, order[:n].sort().values)


def _batch_indices(
    n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None, shard: tuple[int, int]
) -> Iterator[torch.Tensor]:
    """Sample indices of each batch; with shard (rank, world) every process takes its slice of the same global batch."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    rank, world = shard
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size][rank::world]
        if len(idx):
            yield idx


@dataclass
class DataBundle:
    train: ImageSet
    val: ImageSet
    info: DataInfo
    skipped: tuple[tuple[str, str], ...] = ()  # (file, why) left out by data.on_bad_image: skip

    def val_arrays(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first `n` validation images (normalised, NCHW float32) and labels, as numpy arrays."""
        xs, ys, got = [], [], 0
        for x, y, _ in self.val.batches(256):
            xs.append(x)
            ys.append(y)
            got += len(y)
            if n is not None and got >= n:
                break
        x, y = torch.cat(xs), torch.cat(ys)
        if n is not None:
            x, y = x[:n], y[:n]
        return x.numpy().astype(np.float32), y.numpy().astype(np.int64)


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] == 3 and channels == 1:
        return (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    raise EdgekdError(f"data: cannot turn {x.shape[1]}-channel images into {channels} channels")


def _inputs(cfg: DataConfig, inputs: InputSpec | None, channels: int) -> InputSpec:
    """The preprocessing of this run's images: `inputs` (see data.preprocessing) or the data section's own."""
    if inputs is None:
        mean, std = STATS[cfg.dataset]
        inputs = InputSpec(
            cfg.image_size, default_resize(cfg.image_size), tuple(cfg.mean or mean), tuple(cfg.std or std)
        )
    return inputs.fit_channels(channels)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as `load_digits()` gives them: images (1797, 8, 8) of 0..16 and labels 0..9. Read
    from the file scikit-learn ships, without importing it (`import sklearn` alone takes about 2 s)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise EdgekdError("data.dataset: digits needs scikit-learn, which is not installed: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a scikit-learn that keeps the file elsewhere
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    table = np.loadtxt(path, delimiter=",")  # 64 pixels, then the label, per row: what load_digits reads
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def _digits(
    cfg: DataConfig, seed: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    images, labels = digits_arrays()
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    y = torch.from_numpy(labels.astype(np.int64))
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(len(y) * cfg.val_fraction))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val], [str(i) for i in range(10)]


def _torchvision(cfg: DataConfig, train: bool):
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[
        cfg.dataset
    ]
    if not cfg.download and not cfg.root.is_dir():
        raise EdgekdError(
            f"data.root: folder {cfg.root} does not exist (set data.download: true to let torchvision fetch {cfg.dataset})"
        )
    try:
        ds = cls(str(cfg.root), train=train, download=cfg.download)
    except RuntimeError as e:
        raise EdgekdError(
            f"data.root: {cfg.dataset} not found under {cfg.root} ({first_line(e)}); "
            f"point root at the folder holding it, or set data.download: true"
        ) from None
    images = torch.as_tensor(np.asarray(ds.data))
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # (N, C, H, W) uint8
    return images.contiguous(), torch.as_tensor(np.asarray(ds.targets)), list(ds.classes)


class _Folder:
    """The files of one split as (absolute path, label) pairs, opened with Pillow."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], resize: int) -> None:
        self.samples = [(str(root / rel), label) for rel, label in samples]
        self.draft = resize

    def loader(self, path: str):
        from PIL import Image

        with open(path, "rb") as f:
            image = Image.open(f)
            image.draft("RGB", (self.draft, self.draft))  # JPEG: decode at 1/2..1/8 scale while still >= the resize
            return image.convert("RGB")


def _imagefolder(cfg: DataConfig, channels: int, inputs: InputSpec, scan: FolderScan):
    import torchvision.transforms as T

    transform = T.Compose(
        [
            T.Grayscale(1) if channels == 1 else T.Lambda(_identity),
            T.Resize(inputs.resize_size),
            T.CenterCrop(inputs.image_size),
            T.ToTensor(),
            T.Normalize(inputs.mean, inputs.std),
        ]
    )
    workers = default_workers() if cfg.num_workers is None else cfg.num_workers
    return [
        FolderImageSet(_Folder(scan.root, scan.samples[s], inputs.resize_size), transform, workers)
        for s in ("train", "val")
    ]


def _identity(image):
    return image


def default_workers() -> int:
    """DataLoader workers for file-backed sets when data.num_workers is not given: the cores, at most 8."""
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def load_data(cfg: DataConfig, seed: int = 0, inputs: InputSpec | None = None) -> DataBundle:
    """Train and val image sets plus their DataInfo, per the `data:` section.

    `inputs` (size, resize, mean/std; see edgekd.data.preprocessing.data_inputs) overrides the section's own.
    """
    skipped: tuple[tuple[str, str], ...] = ()
    if cfg.dataset == "digits":
        channels = cfg.channels or 1
        spec = _inputs(cfg, inputs, channels)
        xt, yt, xv, yv, names = _digits(cfg, seed, spec.image_size)
        train = TensorImageSet(xt, yt, spec.image_size, channels, spec.mean, spec.std)
        val = TensorImageSet(xv, yv, spec.image_size, channels, spec.mean, spec.std)
    elif cfg.dataset == "imagefolder":
        channels = cfg.channels or 3
        spec = _inputs(cfg, inputs, channels)
        scan = scan_imagefolder(cfg.root, cfg.on_bad_image)
        train, val = _imagefolder(cfg, channels, spec, scan)
        names, skipped = list(scan.classes), scan.bad
    else:
        xt, yt, names = _torchvision(cfg, True)
        xv, yv, _ = _torchvision(cfg, False)
        channels = cfg.channels or xt.shape[1]
        spec = _inputs(cfg, inputs, channels)
        train = TensorImageSet(xt, yt, spec.image_size, channels, spec.mean, spec.std)
        val = TensorImageSet(xv, yv, spec.image_size, channels, spec.mean, spec.std)
    if cfg.limit_train:
        train = Subset(train, cfg.limit_train)
    if cfg.limit_val:
        val = Subset(val, cfg.limit_val)
    if len(train) == 0 or len(val) == 0:
        raise EdgekdError(f"data: the {'train' if len(train) == 0 else 'val'} split of {cfg.dataset} is empty")
    info = DataInfo(
        cfg.dataset, len(names), channels, spec.image_size, spec.mean, spec.std, tuple(names), spec.resize_size
    )
    return DataBundle(train, val, info, skipped)


def data_fingerprint(cfg: DataConfig, seed: int) -> str:
    """A short hash of everything that decides which images, in which order and shape, a run sees.

    Covers the data itself: an ImageFolder's (or a torchvision set's root) sorted file list with sizes and mtimes
    (content sha256 with data.content_hash), the installed scikit-learn version for digits. Costs one listing.
    """
    blob = {"data": cfg.model_dump(mode="json"), "seed": seed, "files": _files_digest(cfg)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _files_digest(cfg: DataConfig) -> str:
    if cfg.dataset == "digits":
        from importlib.metadata import version

        return f"scikit-learn {version('scikit-learn')}"
    if cfg.dataset == "imagefolder":
        try:
            files = list_files(cfg.root)
        except EdgekdError:
            return "unreadable"  # the scan before the first stage says why
        return listing_digest(files, Path(cfg.root).resolve(), cfg.content_hash)
    root = Path(cfg.root)
    if not root.is_dir():
        return "missing"
    files = sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    )
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()
