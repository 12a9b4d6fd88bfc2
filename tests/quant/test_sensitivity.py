"""Per-layer sensitivity finds the layer that int8 breaks; auto keep-float keeps it and meets the budget."""

import onnx
import torch
from quant_helpers import accuracy, batches

from edgekd.export import run_exported
from edgekd.quant import calibrate_ptq, export_qdq_onnx, inspect_qdq
from edgekd.quant.sensitivity import choose_keep_float, layer_sensitivity


def _broken_ptq(model, xt, yt, keep_float=()):
    """PTQ whose conv1 input range came out 1000x too wide (as one wild calibration pixel would make it):
    ordinary pixels all round to zero there; every other range is calibrated normally."""
    ptq = calibrate_ptq(model, batches(xt, yt, 64, seed=5), limit=2, keep_float=keep_float)
    if "conv1" not in keep_float:
        ptq.conv1.input_quantizer.amax.mul_(1000)
    return ptq


def test_a_tight_budget_keeps_the_broken_layer_float_and_is_met(trained_resnet8, digits_data, tmp_path):
    xt, yt, xv, yv = digits_data
    ptq = _broken_ptq(trained_resnet8, xt, yt)
    split_x, split_y = xt[:256], yt[:256]  # training images: the validation split stays unseen
    base, int8, ranking = layer_sensitivity(trained_resnet8, ptq, split_x, split_y)
    assert base.top1 - int8.top1 > 20, "the outlier must break all-int8 accuracy for this test to mean anything"
    assert ranking[0].layer == "conv1" and ranking[0].top1_gain > 20
    assert ranking[-1].top1_gain <= ranking[0].top1_gain

    kept, drop, _ = choose_keep_float(trained_resnet8, ptq, split_x, split_y, max_drop=1.0, max_layers=3)
    assert kept and kept[0] == "conv1"
    assert drop <= 1.0, f"budget not met with {kept}"

    mixed = _broken_ptq(trained_resnet8, xt, yt, keep_float=kept)
    path = export_qdq_onnx(mixed, tmp_path / "mixed.onnx", xv[:1])
    layout = inspect_qdq(path, keep_float=kept)
    assert layout.float_layers == len(kept) and layout.residual_adds == 3
    first = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")
    assert not first.input[0].endswith("DequantizeLinear_output_0"), "no Q/DQ around a kept layer"
    onnx_top1 = float((torch.from_numpy(run_exported(path, xv.numpy())).argmax(1) == yv).float().mean())
    assert onnx_top1 >= accuracy(trained_resnet8, xv, yv) - 0.03
