"""Real validation images (scikit-learn digits at 16x16) and a small model for the export tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgekd.data.datasets import digits_arrays
from edgekd.models import build_model


@pytest.fixture(scope="session")
def val_images() -> torch.Tensor:
    """64 digits images, (64, 1, 16, 16), normalised."""
    x = torch.tensor(digits_arrays()[0][:64], dtype=torch.float32).unsqueeze(1) / 16.0
    return (F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False) - 0.3) / 0.4


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet8", 10, 1).eval()
