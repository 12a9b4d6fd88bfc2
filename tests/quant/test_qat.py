"""QAT and PTQ on digits keep the fp32 accuracy; the QAT model trains like any module."""

import pytest
import torch
from quant_helpers import accuracy, batches, train

from edgekd.config import QatConfig
from edgekd.models import build_model
from edgekd.quant import calibrate_ptq, freeze_observers, prepare_qat, quantizable_copy, quantized_layer_names
from edgekd.quant.fake_quant import ActivationQuantizer, QuantConvBn2d


def test_prepare_qat_folds_batchnorm_and_wraps_every_conv_and_linear(trained_resnet8, digits_data):
    xt, yt, xv, _ = digits_data
    qat = prepare_qat(trained_resnet8, batches(xt, yt, 64, seed=1), QatConfig(calibration_batches=2))
    assert qat.training
    bn_paths = [name for name, m in trained_resnet8.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(isinstance(qat.get_submodule(p), torch.nn.Identity) for p in bn_paths), "each BN moved into its conv"
    assert sum(isinstance(m, QuantConvBn2d) for m in qat.modules()) == len(bn_paths)
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in trained_resnet8.modules())
    assert len(quantized_layer_names(qat)) == n_conv + 1  # + fc
    assert all(float(q.amax) > 0 for q in qat.modules() if isinstance(q, ActivationQuantizer))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained_resnet8.modules()), (
        "the input model must stay untouched"
    )


def test_frozen_observers_keep_their_ranges_while_training(trained_resnet8, digits_data):
    xt, yt, _, _ = digits_data
    cfg = QatConfig(calibration_batches=1, activation_ranges="moving_average")
    qat = prepare_qat(trained_resnet8, batches(xt, yt, 64, seed=1), cfg)
    ranges = lambda: [float(q.amax) for q in qat.modules() if isinstance(q, ActivationQuantizer)]  # noqa: E731
    before = ranges()
    qat(xt[:64])
    moved = ranges()
    assert moved != before, "an unfrozen observer follows the batches (EMA)"
    assert freeze_observers(qat) == len(before)
    qat(xt[64:128] * 3)
    assert ranges() == moved


def test_calibrated_ranges_stay_fixed_during_qat_by_default(trained_resnet8, digits_data):
    xt, yt, _, _ = digits_data
    qat = prepare_qat(trained_resnet8, batches(xt, yt, 64, seed=1), QatConfig(calibration_batches=1))
    quantizers = [q for q in qat.modules() if isinstance(q, ActivationQuantizer)]
    calibrated = [float(q.amax) for q in quantizers]
    assert calibrated == [q.calibrated_amax for q in quantizers]
    qat(xt[64:128] * 3)  # a training-mode batch three times larger than anything calibration saw
    assert [float(q.amax) for q in quantizers] == calibrated


@pytest.mark.slow
def test_qat_and_ptq_stay_within_two_points_of_fp32(trained_resnet8, digits_data):
    xt, yt, xv, yv = digits_data
    fp32 = accuracy(trained_resnet8, xv, yv)
    calib = batches(xt, yt, 64, seed=7)
    ptq = calibrate_ptq(trained_resnet8, calib, limit=8)
    torch.manual_seed(0)
    qat = prepare_qat(trained_resnet8, calib, QatConfig(calibration_batches=8))
    qat = train(qat, xt, yt, epochs=2, lr=0.005, on_epoch=lambda m, epoch: epoch == 1 and freeze_observers(m))
    assert fp32 > 0.9, "the fp32 reference must have learnt the task"
    assert accuracy(ptq, xv, yv) >= fp32 - 0.02
    assert accuracy(qat, xv, yv) >= fp32 - 0.02


def test_a_saved_qat_state_dict_reloads_into_a_fresh_skeleton(trained_resnet8, digits_data):
    xt, yt, xv, _ = digits_data
    qat = prepare_qat(trained_resnet8, batches(xt, yt, 64, seed=1), QatConfig(calibration_batches=2)).eval()
    fresh = quantizable_copy(build_model("resnet8", 10, 1))
    fresh.load_state_dict(qat.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(xv[:16]), qat(xv[:16]))
