"""Fixtures: digits data and a tiny ResNet trained on it once per session."""

from __future__ import annotations

import pytest
import torch
from quant_helpers import digits, train

from edgekd.models import build_model


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train several times faster on one thread than on contended OpenMP threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_data():
    return digits(16)


@pytest.fixture(scope="session")
def trained_resnet8(digits_data):
    """resnet8 trained in fp32 on 16x16 digits (about 5 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    xt, yt, _, _ = digits_data
    model = train(build_model("resnet8", 10, 1), xt, yt, epochs=3, lr=0.05)
    torch.set_num_threads(before)
    return model
