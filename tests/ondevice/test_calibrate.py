"""The plain numpy parts of DLA int8 calibration: the draw, the file, the batching, the cache file."""

import numpy as np
import pytest

from edgekd.ondevice import calibrate
from edgekd.ondevice.calibrate import CalibrationBatches, CalibrationCache


def test_draw_is_seeded_distinct_sorted_and_capped_at_the_training_set():
    a, b = calibrate.draw_indices(1000, 64, seed=3), calibrate.draw_indices(1000, 64, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 64 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, calibrate.draw_indices(1000, 64, seed=4))
    assert np.array_equal(calibrate.draw_indices(10, 64, seed=0), np.arange(10))
    with pytest.raises(ValueError, match="calibration size of at least 1"):
        calibrate.draw_indices(10, 0, seed=0)


def test_calibration_set_round_trips_within_half_a_uint8_step_per_channel(tmp_path):
    images = np.random.default_rng(0).normal(size=(7, 3, 4, 4)) * np.array([1.0, 10.0, 0.0]).reshape(1, 3, 1, 1)
    path = tmp_path / "bench" / "calib.npz"
    path.parent.mkdir()
    calibrate.write_calibration_set(str(path), images, seed=5)
    got = calibrate.load_calibration_set(str(path))
    step = (images.max(axis=(0, 2, 3)) - images.min(axis=(0, 2, 3))) / 255  # channel 2 is constant: exact
    assert got.dtype == np.float32 and got.shape == images.shape
    assert np.all(np.abs(got - images).max(axis=(0, 2, 3)) <= step / 2 + 1e-5)
    with np.load(path, allow_pickle=False) as data:
        assert str(data["split"]) == "train" and int(data["seed"]) == 5 and data["images"].dtype == np.uint8


def test_a_file_that_is_not_a_training_calibration_set_is_refused(tmp_path):
    val = tmp_path / "val.npz"
    np.savez(val, images=np.zeros((2, 1, 2, 2), np.float32), split=np.array("val"))
    with pytest.raises(ValueError, match="must come from the training split"):
        calibrate.load_calibration_set(str(val))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a calibration set"):
        calibrate.load_calibration_set(str(junk))
    with pytest.raises(ValueError, match="non-empty NCHW"):
        calibrate.calibration_bytes(np.zeros((3, 4)), seed=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        calibrate.calibration_bytes(np.full((1, 1, 2, 2), np.nan), seed=0)
    floats = tmp_path / "floats.npz"
    np.savez(floats, images=np.zeros((2, 1, 2, 2), np.float32), split=np.array("train"))
    with pytest.raises(ValueError, match="expected uint8 images with a scale and offset"):
        calibrate.load_calibration_set(str(floats))


def test_batches_are_full_contiguous_float32_in_order_and_rewind():
    images = np.arange(10 * 2 * 2 * 2, dtype=np.float64).reshape(10, 2, 2, 2)
    batches = CalibrationBatches(images, 4)
    got = list(batches)
    assert len(batches) == 2 and [b.shape for b in got] == [(4, 2, 2, 2)] * 2
    assert all(b.dtype == np.float32 and b.flags["C_CONTIGUOUS"] for b in got)
    assert np.array_equal(np.concatenate(got), images[:8].astype(np.float32))  # the partial last batch is left out
    assert batches.next_batch() is None
    batches.reset()
    assert np.array_equal(batches.next_batch(), got[0])
    assert batches.nbytes == 4 * 2 * 2 * 2 * 4


def test_a_set_smaller_than_one_batch_is_repeated_to_fill_it():
    images = np.stack([np.full((1, 2, 2), i, np.float32) for i in range(3)])
    (only,) = list(CalibrationBatches(images, 8))
    assert only.shape == (8, 1, 2, 2) and [int(x[0, 0, 0]) for x in only] == [0, 1, 2, 0, 1, 2, 0, 1]


def test_cache_file_beside_the_engine_missing_empty_and_written(tmp_path):
    cache = CalibrationCache.beside(str(tmp_path / "engines" / "abc-int8.engine"))
    assert cache.path == str(tmp_path / "engines" / "abc-int8.calib.cache")
    assert cache.read() is None  # missing
    cache.write(b"")
    assert cache.read() is None  # empty counts as none: calibrate again
    cache.write(memoryview(b"TRT-8502-EntropyCalibration2\nimages: 3c010a14\n"))
    assert cache.read().startswith(b"TRT-8502-EntropyCalibration2")
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == ["abc-int8.calib.cache"]  # no temp files left
