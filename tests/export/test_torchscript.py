"""TorchScript: trace and script round-trip through a file; failures name the model."""

import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export import run_exported, save_torchscript


@pytest.mark.parametrize("method", ["trace", "script"])
def test_saved_module_reloads_and_matches_eager(model, val_images, tmp_path, method):
    path = save_torchscript(model, tmp_path / "student.ts.pt", val_images[:2], method=method)
    got = run_exported(path, val_images[:7].numpy())  # reloads the file from disk
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(val_images[:7]), atol=1e-5, rtol=1e-5)


class Unscriptable(nn.Module):
    def forward(self, x):
        return x * len({id(x): x})  # dict comprehension with id(): TorchScript cannot compile it


def test_script_failure_is_a_named_error(tmp_path):
    with pytest.raises(EdgekdError, match="TorchScript script of Unscriptable failed: .*try export.torchscript: trace"):
        save_torchscript(Unscriptable(), tmp_path / "u.ts.pt", torch.zeros(1, 1, 4, 4), method="script")
    assert list(tmp_path.iterdir()) == []
