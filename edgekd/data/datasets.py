"""Image sets that yield normalised, fixed-size batches: in-memory tensors or a user's ImageFolder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from edgekd.config import DataConfig
from edgekd.errors import EdgekdError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images (N,C,S,S) float, labels (N,), sample indices (N,)

_STATS = {  # the usual per-channel mean/std of each set
    "digits": ((0.3,), (0.4,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


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


def _stats(cfg: DataConfig, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = _STATS[cfg.dataset]
    mean = tuple(cfg.mean) if cfg.mean else mean
    std = tuple(cfg.std) if cfg.std else std

    def fit(v: tuple[float, ...]) -> tuple[float, ...]:
        if len(v) == channels:
            return v
        if len(v) == 1:
            return v * channels
        return (sum(v) / len(v),)  # 3 values for 1 channel: their mean

    return fit(mean), fit(std)


def _digits(cfg: DataConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
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
            f"data.root: {cfg.dataset} not found under {cfg.root} ({str(e).splitlines()[0]}); "
            f"point root at the folder holding it, or set data.download: true"
        ) from None
    images = torch.as_tensor(np.asarray(ds.data))
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # (N, C, H, W) uint8
    return images.contiguous(), torch.as_tensor(np.asarray(ds.targets)), list(ds.classes)


def _imagefolder(cfg: DataConfig, channels: int, mean, std) -> tuple[FolderImageSet, FolderImageSet, list[str]]:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    splits = {}
    for split in ("train", "val"):
        folder = cfg.root / split
        if not folder.is_dir():
            raise EdgekdError(
                f"data.root: {folder} does not exist; an imagefolder root holds train/<class>/*.jpg and val/<class>/*.jpg"
            )
        try:
            splits[split] = ImageFolder(str(folder))
        except FileNotFoundError as e:
            raise EdgekdError(f"data.root: {folder}: {str(e).splitlines()[0]}") from None
    if splits["train"].classes != splits["val"].classes:
        raise EdgekdError(
            f"data.root: train/ and val/ under {cfg.root} have different class folders "
            f"({len(splits['train'].classes)} vs {len(splits['val'].classes)})"
        )
    size = cfg.image_size
    transform = T.Compose(
        [
            T.Grayscale(1) if channels == 1 else T.Lambda(lambda im: im.convert("RGB")),
            T.Resize(int(round(size * 256 / 224))),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    sets = [FolderImageSet(splits[s], transform, cfg.num_workers) for s in ("train", "val")]
    return sets[0], sets[1], splits["train"].classes


def load_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Train and val image sets plus their DataInfo, per the `data:` section."""
    if cfg.dataset == "digits":
        xt, yt, xv, yv, names = _digits(cfg, seed)
        channels = cfg.channels or 1
        mean, std = _stats(cfg, channels)
        train = TensorImageSet(xt, yt, cfg.image_size, channels, mean, std)
        val = TensorImageSet(xv, yv, cfg.image_size, channels, mean, std)
    elif cfg.dataset == "imagefolder":
        channels = cfg.channels or 3
        mean, std = _stats(cfg, channels)
        train, val, names = _imagefolder(cfg, channels, mean, std)
    else:
        xt, yt, names = _torchvision(cfg, True)
        xv, yv, _ = _torchvision(cfg, False)
        channels = cfg.channels or xt.shape[1]
        mean, std = _stats(cfg, channels)
        train = TensorImageSet(xt, yt, cfg.image_size, channels, mean, std)
        val = TensorImageSet(xv, yv, cfg.image_size, channels, mean, std)
    if cfg.limit_train:
        train = Subset(train, cfg.limit_train)
    if cfg.limit_val:
        val = Subset(val, cfg.limit_val)
    if len(train) == 0 or len(val) == 0:
        raise EdgekdError(f"data: the {'train' if len(train) == 0 else 'val'} split of {cfg.dataset} is empty")
    info = DataInfo(cfg.dataset, len(names), channels, cfg.image_size, tuple(mean), tuple(std), tuple(names))
    return DataBundle(train, val, info)


def data_fingerprint(cfg: DataConfig, seed: int) -> str:
    """A short hash of everything that decides which images, in which order and shape, a run sees."""
    blob = json.dumps({"data": cfg.model_dump(mode="json"), "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
