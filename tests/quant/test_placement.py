"""TensorRT placement for every registry model: Q/DQ on Conv/Gemm data and weight, on each skip Add's
residual input, one scale per Concat; the checker names the node that lacks it."""

import numpy as np
import onnx
import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.export import run_exported
from edgekd.models import build_model, model_names
from edgekd.quant import calibrate_ptq, export_qdq_onnx, inspect_qdq

FAST = {"resnet8", "resnet20", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1", "mnasnet0_5", "regnet_x_400mf"}
# skip Adds per model (ModelOpt quantizes none of them by default: resnet18 0/8, mobilenet_v2 0/10, efficientnet_b0 0/9)
ADDS = {"resnet8": 3, "resnet18": 8, "mobilenet_v2": 10, "efficientnet_b0": 9, "regnet_x_400mf": 22}


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in model_names()])
def test_every_registry_model_exports_the_tensorrt_placement(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 10, 3).eval()
    x = torch.randn(4, 3, 32, 32)
    ptq = calibrate_ptq(model, [x])
    path = export_qdq_onnx(ptq, tmp_path / f"{name}.onnx", x[:1])  # runs check_qdq
    layout = inspect_qdq(path)
    n_weighted = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    assert layout.quantized_layers == n_weighted and layout.float_layers == 0
    if name in ADDS:
        assert layout.residual_adds == ADDS[name]
    if name.startswith(("shufflenet", "squeezenet")):
        assert layout.concats > 0
    with torch.no_grad():
        want = ptq(x).numpy()
    got = run_exported(path, x.numpy(), int8_kernels=False)  # the file as written: the CPU's kernels vary
    assert np.abs(got - want).max() <= 0.1 * np.abs(want).max() + 1e-4


def test_the_checker_names_a_skip_add_without_residual_qdq(tmp_path):
    model = build_model("resnet8", 10, 1).eval()
    x = torch.randn(4, 1, 16, 16)
    path = export_qdq_onnx(calibrate_ptq(model, [x]), tmp_path / "r.onnx", x[:1])
    m = onnx.load(str(path))
    add = next(n for n in m.graph.node if n.op_type == "Add")
    producer = {o: n for n in m.graph.node for o in n.output}
    dq = next(i for i, t in enumerate(add.input) if producer[t].op_type == "DequantizeLinear")
    q = producer[producer[add.input[dq]].input[0]]
    add.input[dq] = q.input[0]  # bypass the residual's Q/DQ pair
    onnx.save(m, str(tmp_path / "bad.onnx"))
    with pytest.raises(EdgekdError, match=rf"Add '{add.name}': skip Add without Q/DQ on its residual input"):
        inspect_qdq(tmp_path / "bad.onnx")


def test_stochastic_depth_stays_one_module_call_in_a_training_trace():
    """A trace taken in training mode (QAT) keeps torchvision's StochasticDepth as a call, not its random draw
    frozen at trace time; placement looks up the class only once torchvision is loaded (a lazy import)."""
    from torchvision.ops import StochasticDepth

    from edgekd.quant.placement import trace

    model = build_model("efficientnet_b0", 10, 1).train()
    gm = trace(model)
    depth = [
        n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), StochasticDepth)
    ]
    assert len(depth) == ADDS["efficientnet_b0"]  # one per residual block, the blocks that skip
