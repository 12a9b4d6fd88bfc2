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


def test_tolerance_grows_with_the_logit_scale(model, val_images, tmp_path):
    """A student with huge logits (a diverged one) differs by float rounding alone; rtol keeps that from
    being reported as an exporter fault, while a real change is still caught at the same scale."""
    with torch.no_grad():
        model.fc.weight.mul_(1e6)
        model.fc.bias.mul_(1e6)
    onnx_path = export_onnx(model, tmp_path / "student.onnx", val_images[:1])
    with pytest.raises(EdgekdError, match=r"max \|Δlogit\| [\d.e+-]+ > atol 0.001 \(top-1"):
        check_parity(model, [onnx_path], val_images, atol=1e-3, min_agreement=0.99)
    (result,) = check_parity(model, [onnx_path], val_images, atol=1e-3, min_agreement=0.99, rtol=1e-4)
    assert result.max_abs_diff > 1e-3 and result.top1_agreement == 1.0
    with torch.no_grad():
        model.fc.weight.mul_(1.01)  # 1% off: far beyond rounding
    with pytest.raises(EdgekdError, match=r"> atol 0.001 \+ rtol 0.0001 x max \|logit\|"):
        check_parity(model, [onnx_path], val_images, atol=1e-3, min_agreement=0.99, rtol=1e-4)
