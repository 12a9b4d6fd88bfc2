"""Parity: exported files reproduce the eager model, and a model changed after export is caught."""

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.export import check_parity, export_onnx, save_torchscript


def test_parity_passes_then_fails_after_the_model_is_altered(model, val_images, tmp_path):
    onnx_path = export_onnx(model, tmp_path / "student.onnx", val_images[:1])
    ts_path = save_torchscript(model, tmp_path / "student.ts.pt", val_images[:1])
    results = check_parity(model, [ts_path, onnx_path], val_images, atol=1e-3, min_agreement=0.99)
    assert [r.top1_agreement for r in results] == [1.0, 1.0]
    assert all(r.max_abs_diff < 1e-4 and r.samples == len(val_images) for r in results)

    with torch.no_grad():
        model.fc.weight.mul_(-1.0)  # the eager model no longer matches the files
    with pytest.raises(
        EdgekdError, match=r"student.ts.pt: max \|Δlogit\| [\d.]+ > atol 0.001 \(top-1 agreement [\d.]+% < 99%\)"
    ):
        check_parity(model, [ts_path, onnx_path], val_images, atol=1e-3, min_agreement=0.99)
