import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.runtimes import runtime_for, torch_eager


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
    ).eval()


def test_eager_runs_and_pins_threads(images: np.ndarray) -> None:
    net = tiny_net()
    rt = torch_eager.runtime(net, threads=1).load()
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(rt.run(images), expected, rtol=1e-6)
    assert rt.describe() == {"name": "pytorch", "version": torch.__version__, "provider": "cpu", "threads": 1}
    assert torch.get_num_threads() == 1 and rt.timer is None


def test_torchscript_file_matches_eager(tmp_path: Path, images: np.ndarray) -> None:
    net = tiny_net()
    path = tmp_path / "student.ts.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(net, torch.from_numpy(images)), str(path))
    rt = runtime_for(path, threads=1)
    assert rt.describe()["name"] == "torchscript"
    np.testing.assert_allclose(rt.run(images), torch_eager.runtime(net).load().run(images), rtol=1e-5, atol=1e-6)
    assert rt.prepare(images)().shape == (5, 10)


def test_corrupt_torchscript_names_file_and_backend(tmp_path: Path) -> None:
    path = tmp_path / "bad.ts.pt"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(EdgekdError, match=r"bad\.ts\.pt: torchscript cannot load"):
        runtime_for(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(EdgekdError, match="no CUDA GPU"):
        torch_eager.runtime(tiny_net(), device="cuda").load()


def test_corrupt_checkpoint_names_file_and_backend(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(EdgekdError, match=r"teacher\.pt.*\(pytorch runtime\)") as err:
        runtime_for(path)
    assert "\n" not in str(err.value)
