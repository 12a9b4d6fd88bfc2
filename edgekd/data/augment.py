"""Batch augmentation, applied once per batch so that teacher and student see the same images.

Works on batches of already-normalised float images (N, C, H, W). Every random draw comes from one
CPU `torch.Generator`, so a seeded BatchAugment makes the same choices on CPU and CUDA. Order: random
crop, horizontal flip, RandAugment, random erasing (each per image), then MixUp or CutMix (per batch;
one of the two at random when both are on). With MixUp/CutMix the targets are soft (N, num_classes) mixtures of one-hot labels,
which `F.cross_entropy` takes as class probabilities; otherwise the integer labels pass through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from edgekd.config import AugmentConfig

# RandAugment (Cubuk et al. 2020) as in torchvision: 2 ops per image, magnitude 9 of 30 bins.
RANDAUGMENT_OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
_NUM_OPS, _MAGNITUDE, _BINS = 2, 9, 31
_SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast", "sharpness"}


def _frac(top: float) -> float:
    return top * _MAGNITUDE / (_BINS - 1)


def _randaugment_op(name: str, sign: float, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The op with torchvision's RandAugment magnitudes, for uint8 (N, C, H, W) images of side `size`."""
    import torchvision.transforms.v2.functional as TF  # here: importing torchvision takes 2-3 s (torch._dynamo)

    shear = math.degrees(math.atan(_frac(0.3))) * sign
    shift = int(_frac(150.0 / 331.0 * size) * sign)
    factor = 1.0 + _frac(0.9) * sign
    affine = dict(angle=0.0, scale=1.0, interpolation=TF.InterpolationMode.NEAREST, fill=0)
    return {
        "identity": lambda x: x,
        "shear_x": lambda x: TF.affine(x, translate=[0, 0], shear=[shear, 0.0], center=[0, 0], **affine),
        "shear_y": lambda x: TF.affine(x, translate=[0, 0], shear=[0.0, shear], center=[0, 0], **affine),
        "translate_x": lambda x: TF.affine(x, translate=[shift, 0], shear=[0.0, 0.0], **affine),
        "translate_y": lambda x: TF.affine(x, translate=[0, shift], shear=[0.0, 0.0], **affine),
        "rotate": lambda x: TF.rotate(x, _frac(30.0) * sign, interpolation=TF.InterpolationMode.NEAREST, fill=0),
        "brightness": lambda x: TF.adjust_brightness(x, factor),
        "color": lambda x: TF.adjust_saturation(x, factor),
        "contrast": lambda x: TF.adjust_contrast(x, factor),
        "sharpness": lambda x: TF.adjust_sharpness(x, factor),
        "posterize": lambda x: TF.posterize(x, 8 - round(_MAGNITUDE / ((_BINS - 1) / 4))),
        "solarize": lambda x: TF.solarize(x, (1.0 - _MAGNITUDE / (_BINS - 1)) * 255),
        "autocontrast": TF.autocontrast,
        "equalize": TF.equalize,
    }[name]


class BatchAugment:
    """`augment(images, labels) -> (images, targets)` for a DistillConfig's `augment` section.

    `mean`/`std` (the data normalisation) let RandAugment work on the real pixel range; without them
    each image is min-max scaled to [0, 1] for RandAugment and scaled back afterwards.
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    @property
    def deterministic(self) -> bool:
        """True when no random op is on: the images (and teacher outputs) are the same every epoch."""
        return not self.cfg.active

    @property
    def mixes(self) -> bool:
        """True when targets come back as soft (N, num_classes) label mixtures."""
        return self.cfg.mixup_alpha > 0 or self.cfg.cutmix_alpha > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.deterministic:
            return images, labels
        x = images
        if self.cfg.random_crop:
            x = self._random_crop(x, max(1, x.shape[-1] // 8))
        if self.cfg.hflip:
            flip = self._rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if self.cfg.randaugment:
            x = self._randaugment(x)
        if self.cfg.random_erasing > 0:
            x = self._random_erasing(x, self.cfg.random_erasing)
        if self.mixes:
            return self._mix(x, labels)
        return x, labels

    # ------------------------------------------------------------------ random draws

    def _rand(self, *shape: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.rand(shape, generator=self.generator).to(device)

    def _randint(self, high: int, n: int) -> torch.Tensor:
        return torch.randint(high, (n,), generator=self.generator)

    def _beta(self, alpha: float) -> float:
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        return float(np.random.default_rng(seed).beta(alpha, alpha))

    # ------------------------------------------------------------------ per-image ops

    def _random_crop(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        oy = self._randint(2 * pad + 1, n).to(x.device)
        ox = self._randint(2 * pad + 1, n).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)

    def _to_unit(self, x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """Map normalised images to [0, 1] and return the inverse map."""
        if self.mean is not None and self.std is not None:
            mean, std = self.mean.to(x.device), self.std.to(x.device)
            return (x * std + mean).clamp(0, 1), lambda u: (u - mean) / std
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-8)
        return (x - lo) / span, lambda u: u * span + lo

    def _randaugment(self, x: torch.Tensor) -> torch.Tensor:
        unit, back = self._to_unit(x)
        img = (unit * 255).round().to(torch.uint8)
        n, size = x.shape[0], x.shape[-1]
        for _ in range(_NUM_OPS):
            ops = self._randint(len(RANDAUGMENT_OPS), n)
            keys = ops * 2 + (self._rand(n) < 0.5)  # op and sign (odd: negative)
            # images that drew the same op and sign go through it together
            for key in torch.unique(keys).tolist():
                op = RANDAUGMENT_OPS[key // 2]
                if op == "identity":
                    continue
                idx = (keys == key).nonzero().squeeze(1).to(x.device)
                sign = -1.0 if key % 2 and op in _SIGNED else 1.0
                img[idx] = _randaugment_op(op, sign, size)(img[idx])
        return back(img.to(x.dtype) / 255)

    def _random_erasing(
        self,
        x: torch.Tensor,
        p: float,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
    ) -> torch.Tensor:
        """torchvision's RandomErasing per image (value 0, the data mean after normalisation)."""
        n, _, h, w = x.shape
        x = x.clone()
        chosen = (self._rand(n) < p).nonzero().squeeze(1).tolist()
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for i in chosen:
            for _ in range(10):
                draws = self._rand(4).tolist()
                area = h * w * (scale[0] + (scale[1] - scale[0]) * draws[0])
                aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * draws[1])
                eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if eh < h and ew < w:
                    top, left = int(draws[2] * (h - eh + 1)), int(draws[3] * (w - ew + 1))
                    x[i, :, top : top + eh, left : left + ew] = 0
                    break
        return x

    # ------------------------------------------------------------------ batch mixing

    def _mix(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        onehot = F.one_hot(labels, self.num_classes).to(x.dtype)
        use_cutmix = self.cfg.cutmix_alpha > 0 and (self.cfg.mixup_alpha <= 0 or float(self._rand(1)) < 0.5)
        lam = self._beta(self.cfg.cutmix_alpha if use_cutmix else self.cfg.mixup_alpha)
        perm = torch.randperm(n, generator=self.generator).to(x.device)
        if use_cutmix:
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(h * cut), int(w * cut)
            cy, cx = int(self._randint(h, 1)), int(self._randint(w, 1))
            top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (h * w)  # the share of the box actually pasted
        else:
            x = lam * x + (1.0 - lam) * x[perm]
        return x, lam * onehot + (1.0 - lam) * onehot[perm]

    def reseed(self, seed: int) -> None:
        """Restart the random stream; training loops reseed every epoch from (seed, epoch), so a resumed
        run draws what an uninterrupted one would."""
        self.generator.manual_seed(seed)
