"""Shared fixtures: a tiny digits pipeline that trains in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = """\
name: tiny
seed: 0
data:
  dataset: digits
  image_size: 16
  batch_size: 32
  limit_train: {limit_train}
  limit_val: 96
teacher:
  model: resnet8
  train:
    epochs: {teacher_epochs}
    lr: 0.1
student:
  model: resnet8
benchmark:
  batch_sizes: [1]
  warmup: 1
  min_runs: 3
  min_seconds: 0.0
  repeats: 1
distill:
  epochs: {distill_epochs}
  lr: 0.1
  temperature: 4.0
"""


@pytest.fixture
def tiny_pipeline(tmp_path: Path):
    """Write a tiny pipeline.yaml (extra YAML appended) and return its path."""

    def make(extra: str = "", teacher_epochs: int = 1, distill_epochs: int = 2, name: str = "p.yaml",
             limit_train: int = 256) -> Path:
        path = tmp_path / name
        path.write_text(TINY.format(teacher_epochs=teacher_epochs, distill_epochs=distill_epochs, limit_train=limit_train) + extra)
        return path

    return make
