"""Does the latency harness add overhead? Its p50 against a bare `session.run` loop on the same model.

A small conv net is exported to ONNX; rounds of the harness (edgekd.ondevice.measure.time_round on the
prepared call of the ONNX Runtime backend, what bench_artifacts times) and of a plain perf_counter loop around a plain InferenceSession
alternate in short rounds, so drifts in machine load hit both alike; the result is the median over
rounds of the per-round ratio harness p50 / bare p50, and must lie in 0.95-1.05.

    python benchmarks/harness_overhead.py [--threads 2] [--rounds 40] [--runs 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgekd.export import export_onnx
from edgekd.ondevice.measure import percentile, time_round
from edgekd.runtimes import runtime_for


def small_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()


def bare_p50(session: ort.InferenceSession, feed: dict, runs: int) -> float:
    """p50 in ms of `runs` plain session.run calls timed with perf_counter."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.percentile(times, 50))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40, help="alternating harness/bare rounds")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per round and side")
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        images = np.random.default_rng(0).normal(size=(1, 3, args.image_size, args.image_size)).astype(np.float32)
        path = export_onnx(small_convnet(), Path(tmp) / "small.onnx", torch.from_numpy(images))
        runtime = runtime_for(path, threads=args.threads)
        call = runtime.prepare(images)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        bare = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {bare.get_inputs()[0].name: images}
        time_round(call, runtime.timer, 50, 0.0)
        bare_p50(bare, feed, 50)  # warm both
        harness, plain = [], []
        for r in range(args.rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)  # alternate who goes first
            for who in order:
                if who == 0:
                    harness.append(percentile(time_round(call, runtime.timer, args.runs, 0.0), 50))
                else:
                    plain.append(bare_p50(bare, feed, args.runs))

        runtime.close()
    h, b = statistics.median(harness), statistics.median(plain)
    ratio = statistics.median(x / y for x, y in zip(harness, plain))
    ok = 0.95 <= ratio <= 1.05
    print(
        f"model: 3-conv net, 1x3x{args.image_size}x{args.image_size}, onnxruntime {ort.__version__} CPU, {args.threads} threads"
    )
    print(f"rounds: {args.rounds} x {args.runs} runs each side, interleaved")
    print(f"harness p50 (median of rounds): {h:.4f} ms")
    print(f"bare    p50 (median of rounds): {b:.4f} ms")
    print(
        f"ratio harness/bare (median of per-round ratios): {ratio:.4f}  -> {'OK' if ok else 'OUT OF RANGE'} (must be 0.95-1.05)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
