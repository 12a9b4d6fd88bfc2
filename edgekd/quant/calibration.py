"""Activation ranges from calibration data: max, or from a histogram of |x| (percentile, entropy, MSE).

The histogram methods are those of NVIDIA's pytorch-quantization / TensorRT calibrators:
- `percentile`: amax at the given percentile of |x| (clips the rare outliers);
- `entropy`: the amax whose 8-bit quantized distribution has the least KL divergence from the
  measured one (TensorRT's entropy calibrator, Migacz 2017);
- `mse`: the amax with the least mean squared quantization error over the histogram.
Each quantizer gets a histogram of BINS bins over [0, its max |x|] (a second pass over the batches).
"""

from __future__ import annotations

import numpy as np
import torch

BINS = 2048
LEVELS = 128  # |x| maps to 0..127 in symmetric int8


class Histogram:
    """Histogram of |x| over [0, amax], filled batch by batch."""

    def __init__(self, amax: float) -> None:
        self.amax = max(float(amax), 1e-8)
        self.counts = torch.zeros(BINS, dtype=torch.float64)

    def observe(self, x: torch.Tensor) -> None:
        a = x.detach().abs().flatten().float().cpu()
        self.counts += torch.histc(a, BINS, 0.0, self.amax).double()

    def amax_for(self, method: str, percentile: float = 99.99) -> float:
        counts = self.counts.numpy()
        if counts.sum() == 0:
            return self.amax
        edges = np.linspace(0.0, self.amax, BINS + 1)[1:]
        if method == "percentile":
            cdf = np.cumsum(counts) / counts.sum()
            return float(edges[min(np.searchsorted(cdf, percentile / 100.0), BINS - 1)])
        if method == "mse":
            return float(edges[_best_mse_bin(counts)])
        if method == "entropy":
            return float(edges[_best_entropy_bin(counts)])
        raise ValueError(f"unknown calibration method {method!r}")


def _best_mse_bin(counts: np.ndarray) -> int:
    """Index of the upper bin edge with the least expected squared error of int8 quantization."""
    centers = (np.arange(BINS) + 0.5) / BINS  # in units of the histogram range
    best, best_err = BINS - 1, np.inf
    for stop in range(LEVELS, BINS + 1, 8):
        amax = stop / BINS
        step = amax / (LEVELS - 1)
        q = np.clip(np.round(centers / step), 0, LEVELS - 1) * step
        err = float(np.sum(counts * (centers - q) ** 2))
        if err < best_err:
            best, best_err = stop - 1, err
    return best


def _best_entropy_bin(counts: np.ndarray) -> int:
    """Index of the upper bin edge whose LEVELS-level quantization has the least KL divergence (TensorRT)."""
    counts = counts.copy()
    counts[0] = counts[1]  # the zeros after ReLU would dominate the divergence (as pytorch-quantization does)
    best, best_kl = BINS - 1, np.inf
    for stop in range(LEVELS, BINS + 1, 8):
        sliced = counts[:stop]
        p = sliced.copy()
        p[-1] += counts[stop:].sum()  # the reference keeps the clipped outliers in its last bin
        nonzero = sliced > 0
        q = np.zeros(stop)
        for chunk in np.array_split(np.arange(stop), LEVELS):  # the in-range part merged into LEVELS bins
            n = nonzero[chunk].sum()
            if n:
                q[chunk] = np.where(nonzero[chunk], sliced[chunk].sum() / n, 0.0)
        p, q = p / p.sum(), q / q.sum()
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best, best_kl = stop - 1, kl
    return best
