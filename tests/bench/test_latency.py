"""The one latency harness (edgekd.ondevice.measure): statistics, interleaved rounds, stability marks, interference."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from edgekd.ondevice import measure, sysload
from edgekd.ondevice.measure import Settings, Subject, bench_artifacts, percentile, summarize
from edgekd.ondevice.runtime import Runtime
from edgekd.runtimes import open_runtime


class Recorded(Runtime):
    """A real (numpy) runtime that notes every prepared call it runs: the harness is what is under test."""

    name = "numpy"

    def __init__(self, tag: str, calls: list, fixed_batch=None) -> None:
        super().__init__()
        self.tag, self.calls, self.fixed = tag, calls, fixed_batch

    def _load(self) -> None:
        self.fixed_batch = self.fixed

    def run(self, batch):
        return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, :3]

    def prepare(self, batch):
        def call():
            self.calls.append(self.tag)
            return self.run(batch)

        return call

    def describe(self):
        return {"name": "numpy", "version": np.__version__, "provider": "cpu", "threads": 1}

    def _release(self) -> None:
        pass


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


def test_judge_marks_spread_over_the_limit_and_load() -> None:
    calm = summarize([1.0, 1.0], 1, [1.0, 1.2])  # 18% spread: VM noise, under the limit
    assert measure.judge(calm, 0.1) is None and measure.judge(calm, None) is None
    shaky = summarize([1.0, 1.4], 1, [1.0, 1.4])  # 33% spread
    assert measure.judge(shaky, 0.0) == "rounds differ by 33% (limit 25%)"
    tiny = summarize([0.01, 0.02], 1, [0.01, 0.02])  # 67%, but 10 microseconds: under the absolute floor
    assert measure.judge(tiny, 0.0) is None
    assert measure.judge(calm, 1.4) == "other processes used 1.4 cores (limit 0.5)"


def test_make_batch_repeats_images() -> None:
    images = np.arange(2 * 3, dtype=np.float64).reshape(2, 1, 1, 3)
    batch = measure.make_batch(images, 5)
    assert batch.shape == (5, 1, 1, 3) and batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch[2], images[0])


def test_rounds_interleave_every_artifact_in_shuffled_order_after_warmup() -> None:
    calls: list = []
    subjects = [Subject(t, t, lambda t=t: Recorded(t, calls)) for t in ("teacher", "student_onnx", "student_ts")]
    images = np.ones((4, 1, 2, 2), np.float32)
    settings = Settings(batch_sizes=(1,), warmup=2, min_runs=3, min_seconds=0.0, repeats=4, threads=1)
    records, conditions = bench_artifacts(subjects, images, np.zeros(4, int), None, settings)
    assert [r.status for r in records] == ["done"] * 3
    warmup, timed = calls[:6], calls[6:]
    assert warmup == ["teacher"] * 2 + ["student_onnx"] * 2 + ["student_ts"] * 2
    rounds = [timed[i : i + 9] for i in range(0, len(timed), 9)]
    assert len(rounds) == 4
    orders = [tuple(r[::3]) for r in rounds]
    assert all(sorted(o) == ["student_onnx", "student_ts", "teacher"] for o in orders)  # each once per round
    assert len(set(orders)) > 1  # shuffled, not fixed
    assert all(len(r.latency[0].round_p50_ms) == 4 for r in records)
    assert conditions["figures"][0]["artifacts"] == 3


def test_a_static_batch_artifact_is_timed_only_at_its_batch(make_onnx, images) -> None:
    subjects = [Subject("student_onnx", "b3.onnx", lambda: open_runtime(make_onnx("b3.onnx", batch=3), threads=1))]
    settings = Settings(batch_sizes=(1, 3), warmup=1, min_runs=3, min_seconds=0.0, repeats=2, threads=1)
    (rec,), _ = bench_artifacts(subjects, images, np.zeros(5, int), None, settings)
    assert rec.status == "done" and [lat.batch_size for lat in rec.latency] == [3]
    assert rec.accuracy.n == 5  # padded to the fixed batch for the accuracy pass


def _two_onnx(make_onnx):
    a, b = make_onnx("a.onnx"), make_onnx("b.onnx")
    return [
        Subject("student_onnx", "a.onnx", lambda: open_runtime(a, threads=1)),
        Subject("teacher_onnx", "b.onnx", lambda: open_runtime(b, threads=1)),
    ]


SETTLED = Settings(batch_sizes=(1,), warmup=20, min_runs=50, min_seconds=0.6, repeats=3, threads=1)


@pytest.mark.slow
@pytest.mark.serial  # its hogs take every core: alone, so they slow no other test
def test_a_cpu_hog_on_the_same_cores_marks_the_figures(make_onnx, images) -> None:
    """Done-when of issue 16: under a CPU-bound process the figures are marked (and the load is recorded)."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)
    ]  # one per core: whatever core the benchmark runs on, a hog shares it
    try:
        time.sleep(0.5)
        records, conditions = bench_artifacts(_two_onnx(make_onnx), images, np.zeros(5, int), None, SETTLED)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    hog_pids = {h.pid for h in hogs}
    assert hog_pids <= {p["pid"] for p in conditions["before"]["busy_processes"]}
    for rec in records:
        (lat,) = rec.latency
        assert not lat.stable and "other processes used" in lat.unstable and lat.others_cores > 0.5
        assert len(lat.round_p50_ms) == 3 and lat.spread >= 0


@pytest.mark.slow
@pytest.mark.serial  # needs a quiet machine: never beside another test
def test_a_quiet_run_marks_nothing(make_onnx, images) -> None:
    busy = sysload.busy_processes(1.0)
    if busy:
        pytest.skip(f"machine not quiet, cannot check a quiet run: {busy}")
    records, conditions = bench_artifacts(_two_onnx(make_onnx), images, np.zeros(5, int), None, SETTLED)
    figures = [(r.id, lat.spread, lat.others_cores, lat.unstable) for r in records for lat in r.latency]
    assert all(unstable is None for *_, unstable in figures), figures
