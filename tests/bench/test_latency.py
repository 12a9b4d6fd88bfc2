from pathlib import Path

import numpy as np
import pytest

from edgekd.bench.latency import LatencySettings, make_batch, measure_latency
from edgekd.config import BenchmarkConfig
from edgekd.ondevice.measure import percentile, summarize
from edgekd.runtimes import runtime_for

FAST = LatencySettings(batch_sizes=(1, 3), warmup=1, min_runs=4, min_seconds=0.0, repeats=2, threads=1)


@pytest.mark.parametrize("q", [0, 1, 10, 25, 50, 75, 90, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    samples = list(np.random.default_rng(3).exponential(size=37))
    assert percentile(samples, q) == pytest.approx(np.percentile(samples, q), rel=1e-12)


def test_summarize_known_samples() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0], batch_size=2, round_medians=[2.0, 3.0])
    assert s["runs"] == 4 and s["mean_ms"] == 2.5 and s["min_ms"] == 1.0 and s["max_ms"] == 4.0
    assert s["p50_ms"] == 2.5 and s["p90_ms"] == pytest.approx(3.7) and s["p99_ms"] == pytest.approx(3.97)
    assert s["std_ms"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert s["throughput_ips"] == pytest.approx(2 * 1000 / 2.5)
    assert s["spread"] == pytest.approx((3.0 - 2.0) / 2.5)


def test_make_batch_repeats_images() -> None:
    images = np.arange(2 * 3, dtype=np.float64).reshape(2, 1, 1, 3)
    batch = make_batch(images, 5)
    assert batch.shape == (5, 1, 1, 3) and batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch[2], images[0])


def test_settings_from_config() -> None:
    s = LatencySettings.from_config(BenchmarkConfig(batch_sizes=[2], warmup=0, min_runs=5, repeats=1, threads=None))
    assert s.batch_sizes == (2,) and s.min_runs == 5 and s.as_dict()["threads"] >= 1


def test_measure_latency_on_a_real_session(onnx_path: Path, images: np.ndarray) -> None:
    results = measure_latency(runtime_for(onnx_path, threads=1), images, FAST)
    assert [r["batch_size"] for r in results] == [1, 3]
    for r in results:
        assert r["runs"] >= FAST.min_runs * FAST.repeats and len(r["round_p50_ms"]) == FAST.repeats
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]


def test_static_batch_artifact_measures_only_its_batch(make_onnx, images: np.ndarray) -> None:
    results = measure_latency(runtime_for(make_onnx("b3.onnx", batch=3), threads=1), images, FAST)
    assert [r["batch_size"] for r in results] == [3]
