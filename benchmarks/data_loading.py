"""Images/s of the pipeline's ImageFolder training loader against a bare torchvision ImageFolder + DataLoader loop.

Makes an ImageFolder of JPEGs of mixed sizes (default 2,000, 10 classes), then times one shuffled epoch of each
loader in interleaved rounds (same transforms, batch size and workers) and prints the ratio; the goal is >= 0.95.
The first up-front scan of the folder (every image decoded once, then cached) is timed and reported apart.

    python benchmarks/data_loading.py [--images 2000] [--workers N] [--rounds 3] [--root DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from edgekd.config import DataConfig
from edgekd.data.datasets import default_workers, load_data
from edgekd.data.scan import scan_imagefolder


def make_folder(root: Path, n: int, classes: int = 10, seed: int = 0, max_side: int = 800) -> None:
    """`n` JPEGs from 160x96 to `max_side` wide (photos are large), split 80/20 into train/ and val/."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        split = "val" if (i // classes) % 5 == 0 else "train"
        folder = root / split / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        w = int(rng.integers(160, max_side + 1))
        h = int(w * rng.uniform(0.6, 1.0))
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)  # smooth-ish content, like photos
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        img.save(folder / f"{i:05d}.jpg", quality=90)


def time_epoch(batches) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    for x, *_ in batches:
        n += x.shape[0]
    return n, time.perf_counter() - t0


def bare_loader(root: Path, size: int, resize: int, batch: int, workers: int, seed: int):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    transform = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    ds = ImageFolder(str(root / "train"), transform)
    return DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(seed)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="default: edgekd's default (the cores, at most 8)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--max-side", type=int, default=800, help="widest generated image, in pixels")
    ap.add_argument("--root", type=Path, default=None, help="reuse (or create) the folder here")
    args = ap.parse_args()
    workers = default_workers() if args.workers is None else args.workers
    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgekd-loading-")
        root = Path(tmp.name)
    if not (root / "train").is_dir():
        t0 = time.perf_counter()
        make_folder(root, args.images, max_side=args.max_side)
        print(f"made {args.images} JPEGs in {root} ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    scan_imagefolder(root)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan_imagefolder(root)
    print(f"up-front scan: {first:.1f} s the first time, {time.perf_counter() - t0:.2f} s cached")
    cfg = DataConfig(dataset="imagefolder", root=root, image_size=args.size, batch_size=args.batch, num_workers=workers)
    data = load_data(cfg)
    resize = data.info.resize_size
    ours, bare = [], []
    for r in range(args.rounds):  # interleaved, in alternating order, so a slow spell of the machine hits both
        for which in ("ours", "bare") if r % 2 == 0 else ("bare", "ours"):
            if which == "ours":
                batches = data.train.batches(args.batch, shuffle=True, generator=torch.Generator().manual_seed(r))
                n, s = time_epoch(batches)
                ours.append(n / s)
            else:
                n, s = time_epoch(bare_loader(root, args.size, resize, args.batch, workers, r))
                bare.append(n / s)
        print(f"round {r + 1}: edgekd {ours[-1]:.0f} img/s, bare torchvision {bare[-1]:.0f} img/s")
    best_ours, best_bare = max(ours), max(bare)
    print(
        f"{len(data.train)} train images, {args.size} px (resize {resize}), batch {args.batch}, {workers} workers: "
        f"edgekd {best_ours:.0f} img/s, bare {best_bare:.0f} img/s, ratio {best_ours / best_bare:.2f}x (goal >= 0.95x)"
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
