"""Latency of every deployable format of a teacher/student pair on this machine, in one run.

Random weights (no downloads): the figures are speed, size and parity with the eager model,
not accuracy. Artifacts are made with the same library functions the pipeline uses
(edgekd.models, edgekd.export, edgekd.quant.dynamic) plus an ONNX Runtime static int8 (QDQ)
model calibrated on random images, each at its catalogue path and id, then measured with
edgekd.bench.benchmark.benchmark_artifacts (interleaved rounds, the pipeline's harness).
Prints a table and saves JSON under benchmarks/results/ (gitignored).

    python benchmarks/formats.py                                  # resnet50 -> mobilenet_v2 at 224, batch 1
    python benchmarks/formats.py --teacher resnet56 --student resnet20 --image-size 32 --batch-sizes 1 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgekd.bench.benchmark import Planned, benchmark_artifacts
from edgekd.errors import EdgekdError
from edgekd.export import export_onnx, save_torchscript
from edgekd.models import ModelSpec, build_model, save_model
from edgekd.ondevice import catalog
from edgekd.ondevice.measure import Settings, predict
from edgekd.quant.dynamic import quantize_dynamic_onnx, quantize_dynamic_torchscript
from edgekd.runtimes import runtime_for


def quantize_static_onnx(src: Path, dest: Path, images: np.ndarray) -> None:
    """ONNX Runtime post-training static int8 (QDQ, per-channel weights) calibrated on `images`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": images[i : i + 1]} for i in range(len(images))])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    dest.parent.mkdir(parents=True, exist_ok=True)
    pre = dest.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(dest),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    pre.unlink()


def build(name: str, args: argparse.Namespace, example: torch.Tensor) -> torch.nn.Module:
    """A random-weight model whose classifier is rescaled so logits are O(1), as a trained model's are."""
    torch.manual_seed(0)
    model = build_model(name, args.num_classes, 3).eval()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        scale = float(model(example).abs().max())
        head.weight /= max(scale, 1e-6)
        head.bias /= max(scale, 1e-6)
    return model


def make_artifacts(role: str, name: str, args: argparse.Namespace, run_dir: Path, images: np.ndarray) -> list[Planned]:
    """Every format of one model, made as the pipeline's stages make them, at its catalogue path; a format
    that cannot be made is listed with the reason (catalogue ids, so the bench file reads like a run's)."""
    example = torch.from_numpy(images[:1])
    model = build(name, args, example)
    spec = ModelSpec(name, args.num_classes, 3, args.image_size)
    onnx_path = run_dir / catalog.path_of(f"{role}_onnx")
    steps = [
        (role, lambda p: save_model(p, model, spec)),
        (f"{role}_ts", lambda p: save_torchscript(model, p, example)),
        (f"{role}_onnx", lambda p: export_onnx(model, p, example)),
    ]
    if role == "student":  # the catalogue's int8 rows are the student's
        steps += [
            ("student_dynamic_int8_ts", lambda p: quantize_dynamic_torchscript(model, p, example)),
            ("student_dynamic_int8_onnx", lambda p: quantize_dynamic_onnx(onnx_path, p)),
        ]
        if args.static_int8:
            steps.append(("student_ptq_onnx", lambda p: quantize_static_onnx(onnx_path, p, images)))
    planned = []
    for art_id, make in steps:
        rel = catalog.path_of(art_id)
        reason = None
        try:
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            result = make(run_dir / rel)
            if getattr(result, "status", "done") == "skipped":  # dynamic int8 of a model without Linear layers
                reason = result.reason
        except EdgekdError as e:
            reason = str(e)
        planned.append(Planned(art_id, rel, reason))
    return planned


def parity(planned: list[Planned], run_dir: Path, images: np.ndarray) -> dict[str, float]:
    """Max |logit difference| of each artifact against its own model's eager fp32 logits (teacher, student)."""
    eager, out = {}, {}
    for p in planned:
        if p.reason is not None:
            continue
        with runtime_for(run_dir / p.path, threads=torch.get_num_threads()) as runtime:
            logits = predict(runtime, images, len(images))
        role = catalog.get(p.id).model
        eager.setdefault(role, logits)  # the eager checkpoint comes first in each role's list
        out[p.id] = float(np.abs(logits - eager[role]).max())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet50")
    ap.add_argument("--student", default="mobilenet_v2")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-runs", type=int, default=5, help="timed runs per round")
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images", type=int, default=4, help="random images for parity and calibration")
    ap.add_argument(
        "--no-static-int8", dest="static_int8", action="store_false", help="skip the ORT static int8 (QDQ) model"
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    tag = f"formats-{args.teacher}-{args.student}-{args.image_size}"
    run_dir = args.out / tag
    images = np.random.default_rng(0).normal(size=(args.images, 3, args.image_size, args.image_size)).astype(np.float32)
    entries = make_artifacts("teacher", args.teacher, args, run_dir, images)
    entries += make_artifacts("student", args.student, args, run_dir, images)
    diffs = parity(entries, run_dir, images)

    settings = Settings(
        tuple(args.batch_sizes), args.warmup, args.min_runs, args.min_seconds, args.repeats, args.threads
    )
    with torch.no_grad(), runtime_for(run_dir / catalog.path_of("teacher"), threads=args.threads) as teacher:
        teacher_logits = predict(teacher, images, len(images))
    labels = teacher_logits.argmax(1)
    doc = benchmark_artifacts(entries, images, labels, teacher_logits, settings, "local", run_dir)

    table = Table(
        title=f"{args.teacher} -> {args.student} at {args.image_size}px, {args.threads} threads ({doc.system['cpu']})"
    )
    for col in ("Artifact", "Runtime", "Size MB"):
        table.add_column(col)
    for bs in args.batch_sizes:
        table.add_column(f"b{bs} p50 ms", justify="right")
        table.add_column(f"b{bs} p99 ms", justify="right")
        table.add_column(f"b{bs} img/s", justify="right")
        table.add_column(f"b{bs} vs teacher eager", justify="right")
    table.add_column("max |Δ logit| vs eager", justify="right")
    table.add_column("Status")
    reference = doc.get("teacher")
    for a in doc.artifacts:
        rt = a.runtime
        cells = [
            a.id,
            f"{rt.name} ({rt.provider})" if rt else "—",
            f"{a.size_bytes / 1e6:.1f}" if a.size_bytes else "—",
        ]
        for bs in args.batch_sizes:
            r, ref = a.latency_at(bs), reference.latency_at(bs) if reference else None
            cells += (
                [f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.throughput_ips:.1f}", f"{ref.p50_ms / r.p50_ms:.2f}x"]
                if r and ref
                else ["—"] * 4
            )
        cells += [
            f"{diffs[a.id]:.2e}" if a.id in diffs else "—",
            a.status if a.status == "done" else f"{a.status}: {a.reason}",
        ]
        table.add_row(*cells)
    Console(width=220).print(table)

    result = {
        "command": ["python", *sys.argv],
        "seconds": time.perf_counter() - started,
        "max_abs_logit_diff": diffs,
        "bench": doc.to_dict(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{tag}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(f"saved {out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
