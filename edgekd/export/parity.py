"""Parity of exported files with the eager model: max |Δlogit| and top-1 agreement on real images.

TorchScript files (`*.pt`) run in torch, ONNX files (`*.onnx`) in ONNX Runtime on the CPU. With
`int8_kernels=False` ONNX Runtime runs a Q/DQ file's operators as written (basic graph optimizations only),
instead of fusing them into the CPU's integer kernels: on x86 CPUs without VNNI those kernels add u8 x s8
products in saturating 16-bit sums, so what they compute depends on the CPU, not on the file (measured on
an AVX2-only AMD EPYC: a PTQ resnet32 agreed with its fake-quant model on 96.4% of digits images fused,
100% as written).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export.onnx import INPUT_NAME


@dataclass(frozen=True)
class Parity:
    """How closely one exported file reproduces the reference logits."""

    path: str
    max_abs_diff: float
    top1_agreement: float
    samples: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def load_runner(path: Path, int8_kernels: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """A function from float32 NCHW images to logits for a TorchScript (`.pt`) or ONNX (`.onnx`) file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        # a check, not a latency figure: the process's thread budget (torch's, which follows OMP_NUM_THREADS
        # and set_num_threads), and idle threads sleep instead of spinning on cores other work could use
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not int8_kernels:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda images: session.run(None, {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})[0]
    if path.suffix in (".pt", ".pth"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")

        def run(images: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).numpy()

        return run
    raise EdgekdError(f"{path}: cannot run: expected a .onnx or a TorchScript .pt file")


def run_exported(path: Path, images: np.ndarray, int8_kernels: bool = True) -> np.ndarray:
    """Logits (N, classes) of a TorchScript or ONNX file on float32 NCHW `images`."""
    return load_runner(path, int8_kernels)(images)


def predicted_classes(path: Path, batches: Iterable[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 class, label) per image of a file over (images, labels, ...) tensor batches, in order."""
    run = load_runner(path)
    preds, labels = [], []
    for batch in batches:
        preds.append(run(batch[0].cpu().numpy()).argmax(1))
        labels.append(batch[1].cpu().numpy())
    if not preds:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(preds), np.concatenate(labels)


def percent_equal(a: np.ndarray, b: np.ndarray) -> float:
    """Percent of positions where two class arrays agree (0 for empty arrays)."""
    return 100.0 * float((a == b).sum()) / max(len(a), 1)


def top1_accuracy(path: Path, batches: Iterable[tuple]) -> float:
    """Top-1 accuracy in percent of a file over (images, labels, ...) tensor batches."""
    return percent_equal(*predicted_classes(path, batches))


def reference_logits(model: nn.Module, images: np.ndarray) -> np.ndarray:
    model = model.eval().cpu()
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def measure_parity(path: Path, images: np.ndarray, reference: np.ndarray, int8_kernels: bool = True) -> Parity:
    """Compare one file's logits with `reference` (the eager model's logits on the same images)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    got = run_exported(path, images, int8_kernels)
    if got.shape != reference.shape:
        raise EdgekdError(f"{path}: output shape {got.shape} differs from the eager model's {reference.shape}")
    return Parity(
        path=str(path),
        max_abs_diff=float(np.abs(got.astype(np.float64) - reference).max()),
        top1_agreement=float((got.argmax(1) == reference.argmax(1)).mean()),
        samples=int(images.shape[0]),
    )


def check_parity(
    model: nn.Module,
    paths: list[Path],
    images: np.ndarray | torch.Tensor,
    atol: float = 1e-3,
    min_agreement: float = 0.99,
    rtol: float = 0.0,
    int8_kernels: bool = True,
) -> list[Parity]:
    """Measure every file against eager `model`; raise EdgekdError for the first beyond tolerance.

    The allowed difference is `atol + rtol * max |eager logit|`: float rounding grows with the logits'
    scale, so a student with huge logits (a diverged one) is not reported as an exporter fault.
    The message says by how much, e.g. `export/student.onnx: max |Δlogit| 0.31 > atol 0.001
    (top-1 agreement 93.8% < 99%)`.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.ascontiguousarray(images, dtype=np.float32)
    reference = reference_logits(model, images)
    results = [measure_parity(p, images, reference, int8_kernels) for p in paths]
    scale = float(np.abs(reference).max())
    allowed = atol + rtol * scale
    for r in results:
        problems = []
        if not r.max_abs_diff <= allowed:
            bound = f"atol {atol:g}" if not rtol else f"atol {atol:g} + rtol {rtol:g} x max |logit| {scale:.3g}"
            problems.append(f"max |Δlogit| {r.max_abs_diff:.3g} > {bound}")
        if r.top1_agreement < min_agreement:
            problems.append(f"top-1 agreement {r.top1_agreement:.1%} < {min_agreement:.0%}")
        if problems:
            detail = problems[0] + (
                f" ({problems[1]})" if len(problems) > 1 else f" (top-1 agreement {r.top1_agreement:.1%})"
            )
            raise EdgekdError(f"{r.path}: {detail} on {r.samples} validation images")
    return results
