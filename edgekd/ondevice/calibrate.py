"""Implicit int8 calibration (DLA int8, and the GPU fallback of a failed Q/DQ build): the calibration set, its batching, the calibration cache file,
and the TensorRT entropy calibrator built on them.

DLA takes int8 only by implicit quantization on TensorRT 8.x/10.x (no Q/DQ: NVIDIA/TensorRT #2222), so
a DLA int8 engine is calibrated from images drawn from the TRAINING split (the `calib_set` artifact,
export/calib.npz, written by the host's export stage before any engine is built; never the validation split
the report scores on). Everything but `entropy_calibrator` is
plain numpy, so the host tests it; TensorRT 11 has no calibrators, so the subclass is only made when asked.
"""

import io
import os
from typing import Iterator, List, Optional

import numpy as np

from .files import write_bytes_atomic

CACHE_SUFFIX = ".calib.cache"


def draw_indices(n_train: int, size: int, seed: int) -> np.ndarray:
    """`min(size, n_train)` distinct training-set indices, in ascending order, the same for the same seed."""
    if n_train < 1 or size < 1:
        raise ValueError(f"need a training set and a calibration size of at least 1, got {n_train} and {size}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_train, size=min(size, n_train), replace=False))


def calibration_bytes(images: np.ndarray, seed: int, split: str = "train") -> bytes:
    """A compressed .npz of NCHW `images` stored as uint8 with a per-channel scale and offset, plus the seed
    and split they were drawn with.

    uint8 keeps the file a quarter of float32 before compression (512 images of 3x224x224: 77 MB, not
    308 MB); the rounding (at most half of 1/255 of a channel's range) is far below what the entropy
    calibrator's histogram resolves. load_calibration_set restores float32.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"calibration images must be a non-empty NCHW batch, got shape {images.shape}")
    if not np.isfinite(images).all():
        raise ValueError("calibration images hold NaN or infinite values")
    low = images.min(axis=(0, 2, 3)).astype(np.float32)  # (C,)
    span = images.max(axis=(0, 2, 3)).astype(np.float32) - low
    scale = np.where(span > 0, span / 255.0, 1.0).astype(np.float32)
    quantized = np.rint((images - low[:, None, None]) / scale[:, None, None]).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=quantized, scale=scale, offset=low, seed=np.int64(seed), split=np.array(split))
    return buf.getvalue()


def write_calibration_set(path: str, images: np.ndarray, seed: int) -> None:
    """Write the calibration set atomically (see calibration_bytes)."""
    write_bytes_atomic(path, calibration_bytes(images, seed))


def load_calibration_set(path: str) -> np.ndarray:
    """The NCHW float32 images of a calibration set; ValueError naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = data["images"]
            split = str(data["split"]) if "split" in data.files else None
            scale = np.asarray(data["scale"], dtype=np.float32) if "scale" in data.files else None
            offset = np.asarray(data["offset"], dtype=np.float32) if "offset" in data.files else None
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a calibration set ({type(e).__name__}: {e})") from None
    if split != "train":
        raise ValueError(f"{path}: calibration images must come from the training split, this file says {split!r}")
    if stored.ndim != 4 or len(stored) == 0:
        raise ValueError(f"{path}: calibration images must be a non-empty NCHW batch, got shape {stored.shape}")
    channels = (stored.shape[1],)
    if stored.dtype != np.uint8 or scale is None or offset is None or not scale.shape == offset.shape == channels:
        raise ValueError(
            f"{path}: expected uint8 images with a scale and offset per channel, got {stored.dtype} images"
        )
    return stored.astype(np.float32) * scale[:, None, None] + offset[:, None, None]


class CalibrationBatches:
    """Full batches of `batch_size` images, in order; a set smaller than one batch is repeated to fill one.

    TensorRT pulls one batch per get_batch call until None; `reset()` rewinds.
    """

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"calibration batch size must be at least 1, got {batch_size}")
        images = np.asarray(images, dtype=np.float32)
        if len(images) < batch_size:
            images = np.resize(images, (batch_size,) + images.shape[1:])
        self.images = images
        self.batch_size = batch_size
        self.count = len(images) // batch_size
        self.position = 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        self.reset()
        batch = self.next_batch()
        while batch is not None:
            yield batch
            batch = self.next_batch()

    def reset(self) -> None:
        self.position = 0

    @property
    def nbytes(self) -> int:
        """Bytes of one batch (the device buffer the calibrator needs)."""
        return int(self.batch_size * int(np.prod(self.images.shape[1:])) * 4)

    def next_batch(self) -> Optional[np.ndarray]:
        """The next C-contiguous float32 batch, or None when all are used."""
        if self.position >= self.count:
            return None
        start = self.position * self.batch_size
        self.position += 1
        return np.ascontiguousarray(self.images[start : start + self.batch_size])


class CalibrationCache:
    """The calibration cache file kept beside an engine in the engine cache (`<stem>.calib.cache`).

    An empty or unreadable file counts as none (calibration runs again and replaces it).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def beside(cls, engine_path: str) -> "CalibrationCache":
        return cls(os.path.splitext(engine_path)[0] + CACHE_SUFFIX)

    def read(self) -> Optional[bytes]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        return data or None

    def write(self, data: bytes) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        write_bytes_atomic(self.path, bytes(data))


def entropy_calibrator(trt: object, cuda: object, batches: CalibrationBatches, cache: CalibrationCache) -> object:
    """A `trt.IInt8EntropyCalibrator2` feeding `batches` through one pycuda buffer and keeping `cache`.

    Needs TensorRT 8.5 or 10.x (11.x has no calibrators) and a current CUDA context; call `free()` after the build.
    The class is made here, not at import, so this module imports on every release.
    """

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[attr-defined,misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # type: ignore[attr-defined]  # pybind trampolines need it
            self.batches = batches
            self.cache = cache
            self.buffer = cuda.mem_alloc(batches.nbytes)  # type: ignore[attr-defined]
            self.used = 0  # batches handed to TensorRT

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch axis is in the data's shape, as in Polygraphy

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            batch = self.batches.next_batch()
            if batch is None:
                return None
            cuda.memcpy_htod(self.buffer, batch)  # type: ignore[attr-defined]
            self.used += 1
            return [int(self.buffer)]

        def read_calibration_cache(self) -> Optional[bytes]:
            return self.cache.read()

        def write_calibration_cache(self, data: object) -> None:
            self.cache.write(bytes(data))  # type: ignore[call-overload]

        def free(self) -> None:
            if self.buffer is not None:
                self.buffer.free()
                self.buffer = None

    return EntropyCalibrator()
