"""Calibration images for `edgekd bench FILE.onnx --calib`: an .npz of images already preprocessed the way the model
expects, or a folder of image files preprocessed here (resized to the input, scaled to [0, 1], normalised).

Calibration sets the int8 scales of the Q/DQ copy edgekd times; images unlike what the model sees in use give
other scales, so the folder's preprocessing is stated (`--mean`, `--std`) and written in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.data.scan import IMAGE_EXTENSIONS, check_image
from edgekd.errors import EdgekdError
from edgekd.ondevice.calibrate import draw_indices, load_calibration_set
from edgekd.ondevice.text import first_line

MAX_IMAGES = 256
"""Images drawn (seeded) from a larger folder or file: the min/max calibration settles well before this."""

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CalibrationImages:
    """NCHW float32 images and how they were made (for the report)."""

    images: np.ndarray
    source: str


def load_calibration_images(
    source: Path,
    shape: Sequence[int | None],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> CalibrationImages:
    """Up to MAX_IMAGES images for an input of `shape` (batch axis first) from an .npz or a folder of images."""
    source = Path(source)
    if source.is_dir():
        return _from_folder(source, tuple(shape[1:]), mean, std, seed)  # type: ignore[arg-type]
    if not source.is_file() or source.suffix != ".npz":
        raise EdgekdError(
            f"--calib {source}: not a folder of images or an .npz file (an `images` array, N x {_dims(shape)})"
        )
    images = _from_npz(source)
    if images.ndim != len(shape) or tuple(images.shape[1:]) != tuple(shape[1:]):
        raise EdgekdError(
            f"--calib {source}: images are {_dims(images.shape)}, the model's input takes N x {_dims(shape)}"
        )
    picked = images[draw_indices(len(images), MAX_IMAGES, seed)]
    return CalibrationImages(picked, f"{len(picked)} images from {source.name} (as stored)")


def _dims(shape: Sequence[int | None]) -> str:
    return "x".join(str(d) for d in list(shape)[1:])


def _from_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "scale" in data.files:  # a run's calibration set (export/calib.npz): uint8 with a scale per channel
                return load_calibration_set(str(path))
            images = np.asarray(data["images"], dtype=np.float32)
    except (OSError, ValueError, KeyError) as e:
        raise EdgekdError(f"--calib {path}: needs an `images` array of float images ({first_line(e)})") from None
    if len(images) == 0 or not np.isfinite(images).all():
        raise EdgekdError(f"--calib {path}: its images are empty or hold NaN or infinite values")
    return images


def _from_folder(
    folder: Path, chw: tuple[int, ...], mean: Sequence[float] | None, std: Sequence[float] | None, seed: int
) -> CalibrationImages:
    from PIL import Image

    if len(chw) != 3 or chw[0] not in (1, 3):
        raise EdgekdError(f"--calib {folder}: a folder of images calibrates 1- or 3-channel image inputs, not {chw}")
    channels, height, width = chw
    if mean is None and std is None and channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if mean is None or std is None or len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise EdgekdError(
            f"--calib {folder}: give --mean and --std with {channels} value(s) each (std > 0): the normalisation "
            "the model expects after scaling pixels to [0, 1]"
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise EdgekdError(f"--calib {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    files = [files[i] for i in draw_indices(len(files), MAX_IMAGES, seed)]
    images = np.empty((len(files), channels, height, width), dtype=np.float32)
    for i, path in enumerate(files):
        if why := check_image(path):
            raise EdgekdError(f"--calib {path}: {why}")
        with Image.open(path) as im:
            pixels = im.convert("RGB" if channels == 3 else "L").resize((width, height), Image.Resampling.BILINEAR)
        images[i] = np.asarray(pixels, dtype=np.float32).reshape(height, width, channels).transpose(2, 0, 1) / 255.0
    images = (images - np.reshape(mean, (-1, 1, 1))) / np.reshape(std, (-1, 1, 1))
    how = f"resized to {height}x{width}, scaled to [0, 1], normalised with mean {tuple(mean)} and std {tuple(std)}"
    return CalibrationImages(images.astype(np.float32), f"{len(files)} images from {folder.name}/ ({how})")
