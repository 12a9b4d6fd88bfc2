"""Teacher outputs computed once per training sample and reused every epoch.

Valid only when the student sees the same image for a sample every epoch (no random augmentation):
the caller checks `BatchAugment.deterministic`. The cache file holds a key over everything that
decides the teacher's outputs: the teacher checkpoint's sha256, the data fingerprint (data section
and seed), the input transforms and the tapped teacher layers. A file whose key differs is
rebuilt, so changing any part invalidates it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.data.datasets import ImageSet
from edgekd.models.checkpoint import atomic_torch_save
from edgekd.models.taps import FeatureTaps

CACHE_FILE = "teacher_cache.pt"


def cache_key(teacher_sha256: str, data_fingerprint: str, transforms: dict[str, Any], layers: list[str]) -> str:
    """sha256 over the teacher checkpoint hash, the data fingerprint, the transforms and the tapped layers."""
    blob = json.dumps(
        {"teacher": teacher_sha256, "data": data_fingerprint, "transforms": transforms, "layers": list(layers)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class TeacherCache:
    """Teacher logits (N, classes) and tapped features {layer: (N, ...)} indexed by training sample index."""

    def __init__(self, key: str, logits: torch.Tensor, features: dict[str, torch.Tensor]) -> None:
        self.key, self.logits, self.features = key, logits, features
        self.built = False  # True when this run computed it, False when read from disk
        self.source: Path | None = None  # the file it was read from or written to

    @classmethod
    @torch.no_grad()
    def compute(
        cls,
        key: str,
        teacher: nn.Module,
        train_set: ImageSet,
        layers: list[str],
        batch_size: int,
        device: torch.device | str,
    ) -> TeacherCache:
        """One pass of the (eval-mode) teacher over the training set."""
        teacher.eval()
        n = len(train_set)
        logits: torch.Tensor | None = None
        features: dict[str, torch.Tensor] = {}
        with FeatureTaps(teacher, layers, what="teacher") as taps:
            for x, _, idx in train_set.batches(batch_size, device=device):
                out = teacher(x).float().cpu()
                if logits is None:
                    logits = torch.empty(n, *out.shape[1:])
                logits[idx] = out
                for name, feat in taps.pop().items():
                    if name not in features:
                        features[name] = torch.empty(n, *feat.shape[1:])
                    features[name][idx] = feat.float().cpu()
        cache = cls(key, logits, features)
        cache.built = True
        return cache

    @classmethod
    def load(cls, path: Path, key: str, samples: int) -> TeacherCache | None:
        """The cache at `path` if it exists with this key and one row per training sample, else None."""
        if not Path(path).is_file():
            return None
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("key") != key or len(blob["logits"]) != samples:
            return None
        return cls(key, blob["logits"], blob["features"])

    @classmethod
    def load_or_compute(
        cls,
        path: Path,
        key: str,
        teacher: nn.Module,
        train_set: ImageSet,
        layers: list[str],
        batch_size: int,
        device: torch.device | str,
        elsewhere: tuple[Path, ...] = (),
    ) -> TeacherCache:
        """The cache at `path` (or, read only, at one of `elsewhere`) when its key matches, else a fresh one
        (written to `path`, replacing the old)."""
        for candidate in (Path(path), *elsewhere):
            cache = cls.load(candidate, key, len(train_set))
            if cache is not None:
                cache.source = candidate
                return cache
        cache = cls.compute(key, teacher, train_set, layers, batch_size, device)
        atomic_torch_save({"key": key, "logits": cache.logits, "features": cache.features}, path)
        cache.source = Path(path)
        return cache

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.logits, *self.features.values()])

    def to(self, device: torch.device | str) -> TeacherCache:
        """Move the tables to `device` (cheap lookups when they fit there)."""
        self.logits = self.logits.to(device)
        self.features = {k: v.to(device) for k, v in self.features.items()}
        return self

    def lookup(self, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Teacher logits and features of the samples `idx`, on the tables' device."""
        idx = idx.to(self.logits.device)
        return self.logits[idx], {k: v[idx] for k, v in self.features.items()}
