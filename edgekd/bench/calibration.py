"""export/calib.npz (`calib_set`): the training images int8 engines are calibrated with (never validation images).

The draw is edgekd.ondevice.calibrate.draw_indices (seeded, distinct); the images get the same
preprocessing the models see at evaluation (resize, normalise; no augmentation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekd.data.datasets import FolderImageSet, ImageSet, Subset, TensorImageSet
from edgekd.ondevice.calibrate import draw_indices, write_calibration_set


def training_images(train: ImageSet, indices: np.ndarray) -> np.ndarray:
    """The normalised NCHW float32 images of `train` at `indices`, reading only those images where the set allows."""
    base = train.base if isinstance(train, Subset) else train  # drawn indices are below the subset's size
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    if isinstance(base, TensorImageSet):
        mean, std = tuple(base.mean.flatten().tolist()), tuple(base.std.flatten().tolist())
        picked = TensorImageSet(base.images[idx], base.labels[idx], base.size, base.channels, mean, std)
        return torch.cat([x for x, _, _ in picked.batches(256)]).numpy().astype(np.float32)
    if isinstance(base, FolderImageSet):
        return torch.stack([base.data[int(i)][0] for i in idx]).numpy().astype(np.float32)
    raise TypeError(f"no random access to the images of a {type(base).__name__}")


def write_training_calibration(path: Path, train: ImageSet, size: int, seed: int) -> int:
    """Draw `size` training images (seeded; all of them when the split is smaller) into `path`; returns how many."""
    indices = draw_indices(len(train), size, seed)
    write_calibration_set(str(path), training_images(train, indices), seed)
    return len(indices)
