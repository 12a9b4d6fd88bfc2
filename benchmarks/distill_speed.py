"""Seconds per epoch of edgekd's distillation loop against hand-written loops doing the same work.

  (a) edgekd distill: `train()` with the `Distillation` objective (teacher runs every batch)
  (b) a minimal hand-written KD loop (same models, optimizer, batches, loss)
  (c) edgekd distill with the teacher cache warm (the teacher does not run)
  (d) the student alone with cross-entropy, hand-written

Every epoch of every variant is one pass over the training set, one over the validation set
(top-1) and a checkpoint of model + optimizer. Variants run interleaved, `--repeats` times, from
the same initial weights. The ratios use the fastest run of each variant (the least disturbed by
other work on the machine); medians are reported beside them. Targets: (a)/(b) <= 1.05, (c)/(d) <= 1.15.

    python benchmarks/distill_speed.py [--epochs 2] [--repeats 5] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from edgekd.config import DataConfig, DistillConfig
from edgekd.data.datasets import load_data
from edgekd.distill.objectives import Distillation
from edgekd.distill.teacher_cache import TeacherCache
from edgekd.distill.trainer import TrainEnv, train
from edgekd.models import build_model
from edgekd.ondevice.files import write_json_atomic


def hand_loop(student, teacher, x_train, y_train, x_val, y_val, cfg, batch_size, epochs, seed, work, device):
    """The loop one would write by hand; `teacher=None` trains the student alone on hard labels."""
    opt = torch.optim.SGD(
        student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    )
    t = cfg.temperature
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        student.train()
        order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, y = x_train[idx].to(device), y_train[idx].to(device)
            logits = student(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                soft = (
                    F.kl_div(
                        F.log_softmax(logits / t, 1),
                        F.log_softmax(t_logits / t, 1),
                        reduction="batchmean",
                        log_target=True,
                    )
                    * t
                    * t
                )
                loss = cfg.soft_weight * soft + cfg.hard_weight * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        student.eval()
        with torch.no_grad():
            correct = sum(
                int((student(x_val[i : i + 256].to(device)).argmax(1).cpu() == y_val[i : i + 256]).sum())
                for i in range(0, len(y_val), 256)
            )
        torch.save(
            {
                "epoch": epoch,
                "model": student.state_dict(),
                "optimizer": opt.state_dict(),
                "top1": correct / len(y_val),
            },
            work / "hand.pt",
        )


def stack(images):
    xs, ys = zip(*[(x, y) for x, y, _ in images.batches(512)])
    return torch.cat(xs), torch.cat(ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet20")
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/distill_speed.json"))
    args = ap.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_cfg = DataConfig(dataset="digits", image_size=args.image_size, batch_size=args.batch_size)
    data = load_data(data_cfg, seed=0)
    cfg = DistillConfig(
        epochs=args.epochs, lr=0.05, temperature=4.0, soft_weight=0.9, hard_weight=0.1, teacher_cache=False
    )
    torch.manual_seed(0)
    teacher = build_model(args.teacher, data.info.num_classes, data.info.in_channels).to(device).eval()
    init = build_model(args.student, data.info.num_classes, data.info.in_channels)
    x_train, y_train = stack(data.train)
    x_val, y_val = stack(data.val)
    cache = TeacherCache.compute("bench", teacher, data.train, [], 256, device).to(device)

    def edgekd(use_cache: bool, work: Path) -> None:
        objective = Distillation(teacher, cfg, cache=cache if use_cache else None)
        train(
            copy.deepcopy(init),
            data.train,
            data.val,
            cfg,
            objective,
            TrainEnv(work_dir=work, key="bench", seed=0, batch_size=args.batch_size, device=device),
        )

    def hand(with_teacher: bool, work: Path) -> None:
        hand_loop(
            copy.deepcopy(init).to(device),
            teacher if with_teacher else None,
            x_train,
            y_train,
            x_val,
            y_val,
            cfg,
            args.batch_size,
            args.epochs,
            0,
            work,
            device,
        )

    variants = {
        "a_edgekd_distill": lambda w: edgekd(False, w),
        "b_hand_kd": lambda w: hand(True, w),
        "c_edgekd_cached_teacher": lambda w: edgekd(True, w),
        "d_hand_student_ce": lambda w: hand(False, w),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):  # the first round warms up and is dropped
        for name, fn in variants.items():
            with tempfile.TemporaryDirectory() as tmp:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn(Path(tmp))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if repeat:
                    seconds[name].append((time.perf_counter() - t0) / args.epochs)
    per_epoch = {name: min(v) for name, v in seconds.items()}
    medians = {name: statistics.median(v) for name, v in seconds.items()}
    ratios = {
        "a_over_b": per_epoch["a_edgekd_distill"] / per_epoch["b_hand_kd"],
        "c_over_d": per_epoch["c_edgekd_cached_teacher"] / per_epoch["d_hand_student_ce"],
    }
    targets = {"a_over_b": 1.05, "c_over_d": 1.15}
    doc = {
        "settings": {
            **vars(args),
            "out": str(args.out),
            "train_samples": len(data.train),
            "val_samples": len(data.val),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
        },
        "seconds_per_epoch": per_epoch,
        "median_seconds_per_epoch": medians,
        "runs": seconds,
        "ratios": ratios,
        "targets": targets,
        "within_target": {k: ratios[k] <= targets[k] for k in ratios},
    }
    write_json_atomic(args.out, doc)
    print(f"{'variant':<26}{'best s/epoch':>13}{'median':>9}   runs")
    for name, value in per_epoch.items():
        print(f"{name:<26}{value:>13.3f}{medians[name]:>9.3f}   {' '.join(f'{s:.3f}' for s in seconds[name])}")
    for k, r in ratios.items():
        print(f"{k}: {r:.3f} (target <= {targets[k]}) {'ok' if r <= targets[k] else 'OVER'}")
    print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
