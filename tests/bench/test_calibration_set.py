"""export/calib.npz on digits: drawn from the training split only, preprocessed like the models' inputs, small."""

import numpy as np

from edgekd.bench.calibration import training_images, write_training_calibration
from edgekd.config import DataConfig
from edgekd.data.datasets import load_data
from edgekd.ondevice.calibrate import draw_indices, load_calibration_set


def flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float64)


def nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `a`, the index of its nearest row of `b` and the max |difference| to it."""
    d2 = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    idx = d2.argmin(1)
    return idx, np.abs(a - b[idx]).max(1)


def test_calibration_set_holds_the_drawn_training_images_and_no_validation_image(tmp_path):
    data = load_data(DataConfig(dataset="digits", image_size=32), seed=0)
    path = tmp_path / "bench" / "calib.npz"
    assert write_training_calibration(path, data.train, 512, seed=0) == 512
    calib = flat(load_calibration_set(str(path)))
    train = flat(training_images(data.train, np.arange(len(data.train))))
    val = flat(data.val_arrays()[0])
    step = (train.max() - train.min()) / 255  # the uint8 storage's largest step (digits has one channel)

    idx, err = nearest(calib, train)
    assert np.array_equal(idx, draw_indices(len(data.train), 512, seed=0)) and err.max() <= step / 2 + 1e-5
    _, to_val = nearest(calib, val)
    assert to_val.min() > 10 * step  # not one validation image, not even approximately
    assert path.stat().st_size < 512 * 32 * 32  # below 1 byte a pixel (float32 would be 2 MB)


def test_limited_training_split_and_a_larger_request_take_the_whole_split(tmp_path):
    data = load_data(DataConfig(dataset="digits", image_size=8, limit_train=40), seed=3)
    path = tmp_path / "calib.npz"
    assert write_training_calibration(path, data.train, 512, seed=3) == 40
    assert load_calibration_set(str(path)).shape == (40, 1, 8, 8)
