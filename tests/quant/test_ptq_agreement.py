"""Fake quant and ONNX Runtime compute the same int8 model: for every registry model, trained until it is
a real classifier, its PTQ Q/DQ ONNX picks the same class as its fake-quant torch model on >= 99% of
validation images, twice:
- with ONNX Runtime running the file's operators as written (what the pipeline's parity check runs), on
  every machine;
- with ONNX Runtime's default optimizations (the Q/DQ pairs fused into int8 kernels with int32 bias), on
  CPUs whose int8 kernels add products in 32 bits. On x86 without VNNI they add u8 x s8 pairs in saturating
  16-bit sums, so what they compute depends on the CPU (measured on an AVX2-only AMD EPYC: 91-98% on 9 of the
  first 17 models): there a shortfall skips that half with the figure, after the first half passed.

CIFAR ResNets train at 16x16, torchvision models at 32x32 (ConvNeXt's stem and downsampling need 32).
"""

import time

import numpy as np
import pytest
import torch
import torchvision
from quant_helpers import batches, digits, train_until

from edgekd.bench.sysinfo import int8_dot
from edgekd.export import run_exported
from edgekd.models import build_model, model_names
from edgekd.quant import calibrate_ptq, export_qdq_onnx

TRAINED = 0.90  # val top-1 a model must reach before its agreement means anything (chance: 0.10)
MIN_AGREEMENT = 0.99
SETTINGS = {
    # no BatchNorm and a ReLU before its pooled logits: trains from scratch only at a small rate and
    # plateaus near 75% (a class whose logit channel died stays dead)
    "squeezenet1_1": {"lr": 2e-4, "target": 0.60, "max_steps": 1000},  # 75% on an Intel VM, 63.8% on an AMD EPYC
    # BatchNorm momentum 3e-4: 87% after 600 steps, 93% after 800
    "mnasnet0_5": {"target": 0.85},
    # at 92%, 4 of the 359 images are within 0.27 (of a 100-logit range) of a tie, which summation order
    # decides; at 96% none is (measured: agreement 98.9% and 100%)
    "resnet50": {"target": 0.95, "channels_last": False},  # NCHW: 125 steps to 95% (61 CPU s), channels-last 250 (117)
    # bunched logits: on an AVX2 AMD EPYC at 90.5% its median top-2 margin is 2.7% of the logit range, and the 8
    # images (2.2%) where the file and fake quant differ all have margins under 3% (max |Δlogit| 4.8%); trained
    # on to 95.3% (350 steps) it still differed on 5 (98.6%), all within 1.2%. Held to the pipeline's 97% bar.
    "efficientnet_b1": {"agreement": 0.97},
}


@pytest.fixture(scope="module")
def digits_by_size():
    return {16: digits(16), 32: digits(32)}


@pytest.mark.slow
@pytest.mark.parametrize("name", model_names())
def test_ptq_onnx_picks_the_fake_quant_class(name, digits_by_size, tmp_path, cores):
    torch.set_num_threads(cores)  # these models are large enough to gain from every core this process may use
    data = digits_by_size[32 if name in torchvision.models.list_models() else 16]
    xt, yt, xv, yv = data
    torch.manual_seed(0)
    start = time.monotonic()
    settings = {"lr": 2e-3, "target": TRAINED, "max_steps": 600, **SETTINGS.get(name, {})}
    bar = settings.pop("agreement", MIN_AGREEMENT)
    model, top1, steps = train_until(build_model(name, 10, 1), data, **settings)
    assert top1 >= settings["target"], f"{name} reached only {top1:.1%} val top-1 in {steps} steps: not trained enough"

    ptq = calibrate_ptq(model, [x for x, _ in batches(xt, yt, 64, seed=1)[:4]])
    path = export_qdq_onnx(ptq, tmp_path / f"{name}.onnx", xv[:1])
    with torch.no_grad():
        fake_quant = ptq(xv).numpy()
    as_written = _agreement(run_exported(path, xv.numpy(), int8_kernels=False), fake_quant)
    fused = _agreement(run_exported(path, xv.numpy()), fake_quant)
    print(
        f"{name}: fp32 {top1:.1%} after {steps} steps, agreement {as_written:.2%} as written, {fused:.2%} fused "
        f"(int8 dot products: {int8_dot()}), {time.monotonic() - start:.0f} s"
    )
    assert as_written >= bar, f"{name}: the Q/DQ file picks the fake-quant class on only {as_written:.2%}"
    if fused < bar and int8_dot() == "no-vnni":
        pytest.skip(
            f"{name}: ONNX Runtime's fused int8 kernels agree on {fused:.2%} on this x86 CPU without VNNI "
            f"(saturating 16-bit sums); the file as written agrees on {as_written:.2%}"
        )
    assert fused >= bar, f"{name}: ONNX Runtime's int8 kernels pick the fake-quant class on only {fused:.2%}"


def _agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    return float((logits.argmax(1) == reference.argmax(1)).mean())
