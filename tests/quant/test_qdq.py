"""Q/DQ ONNX: the layout TensorRT 8.5 wants, and ONNX Runtime agrees with the fake-quant model."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from quant_helpers import batches

from edgekd.errors import EdgekdError
from edgekd.export import export_onnx, run_exported
from edgekd.quant import calibrate_ptq, check_qdq, export_qdq_onnx


@pytest.fixture(scope="module")
def ptq_onnx(trained_resnet8, digits_data, tmp_path_factory):
    xt, yt, xv, _ = digits_data
    ptq = calibrate_ptq(trained_resnet8, batches(xt, yt, 64, seed=3), limit=4)
    path = tmp_path_factory.mktemp("qdq") / "student_ptq_int8_qdq.onnx"
    export_qdq_onnx(ptq, path, xv[:1], opset=17)
    return ptq, path


def _consts(graph):
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})
    return consts


def test_every_conv_and_gemm_reads_int8_qdq_input_and_per_channel_weight(ptq_onnx, trained_resnet8):
    _, path = ptq_onnx
    graph = onnx.load(str(path)).graph
    consts = _consts(graph)
    producer = {o: n for n in graph.node for o in n.output}
    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    n_layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in trained_resnet8.modules())
    assert len(layers) == n_layers
    for node in layers:
        act_dq, w_dq = producer[node.input[0]], producer[node.input[1]]
        assert act_dq.op_type == w_dq.op_type == "DequantizeLinear", node.name
        for dq in (act_dq, w_dq):
            zero = consts[dq.input[2]]
            assert zero.dtype == np.int8 and not zero.any()
        assert consts[act_dq.input[1]].shape == ()
        w_q = producer[w_dq.input[0]]
        assert w_q.op_type == "QuantizeLinear"
        weight = consts[w_q.input[0]]
        scale = consts[w_dq.input[1]]
        assert scale.shape == (weight.shape[0],) and (scale > 0).all()
        assert {a.name: a.i for a in w_dq.attribute}.get("axis") == 0
    assert check_qdq(path) == n_layers


def test_onnxruntime_matches_the_fake_quant_model(ptq_onnx, digits_data):
    ptq, path = ptq_onnx
    _, _, xv, _ = digits_data
    with torch.no_grad():
        want = ptq(xv[:128]).numpy()
    got = run_exported(path, xv[:128].numpy())
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.98


def test_every_bias_is_the_int32_grid_value_that_int8_kernels_add(ptq_onnx, digits_data):
    """ONNX Runtime rounds each Conv/Gemm bias to int32 steps of input scale x weight scale
    (`WeightBiasQuantization`, on from its `basic` optimizations up); the exported bias already is that
    value, so the rewrite changes nothing, and the fake-quant model adds the same bias."""
    ptq, path = ptq_onnx
    graph = onnx.load(str(path)).graph
    consts, producer = _consts(graph), {o: n for n in graph.node for o in n.output}
    biased = [n for n in graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2]
    assert biased
    for node in biased:
        x_scale = consts[producer[node.input[0]].input[1]]
        w_scale = consts[producer[node.input[1]].input[1]]
        steps = consts[node.input[2]] / (x_scale * w_scale)
        assert np.abs(steps - np.round(steps)).max() < 1e-3, node.name

    x = digits_data[2][:64].numpy()
    outs = []
    for disabled in ([], ["WeightBiasQuantization"]):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        session = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"], disabled_optimizers=disabled)
        outs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    with torch.no_grad():
        want = ptq(torch.from_numpy(x)).numpy()
    assert (outs[0].argmax(1) == want.argmax(1)).all()  # summation order still flips a rounding now and then:
    assert np.abs(outs[0] - want).max() <= 0.02 * np.abs(want).max()  # measured 0.5% of the logit range


def test_check_qdq_rejects_a_float_graph(trained_resnet8, digits_data, tmp_path):
    path = export_onnx(trained_resnet8, tmp_path / "fp32.onnx", digits_data[2][:1])
    with pytest.raises(EdgekdError, match=r"fp32.onnx: Conv .* input is not produced by DequantizeLinear"):
        check_qdq(path)


def test_exporting_an_unprepared_model_is_an_error(trained_resnet8, tmp_path):
    with pytest.raises(EdgekdError, match="no fake-quantized layers"):
        export_qdq_onnx(trained_resnet8, tmp_path / "x.onnx", torch.zeros(1, 1, 16, 16))
