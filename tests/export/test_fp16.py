"""fp16 ONNX: fp16 weights and compute with fp32 inputs and outputs, run by ONNX Runtime, parity with the fp32 file."""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper

from edgekd.errors import EdgekdError
from edgekd.export.fp16 import check_fp16_parity, convert_to_fp16, write_fp16_onnx


def elem_types(values) -> list[int]:
    return [v.type.tensor_type.elem_type for v in values]


def test_tiny_model_becomes_fp16_inside_and_stays_fp32_at_its_boundary(build_tiny_onnx, tmp_path, images):
    fp32 = build_tiny_onnx(tmp_path / "tiny.onnx")
    model = onnx.load(str(fp32))
    model.metadata_props.add(key="edgekd.class_names", value='["a"]')
    onnx.save(model, str(fp32))
    fp16 = write_fp16_onnx(fp32, tmp_path / "tiny_fp16.onnx")

    converted = onnx.load(str(fp16))
    graph = converted.graph
    assert elem_types(graph.input) == elem_types(graph.output) == [TensorProto.FLOAT]
    assert {i.data_type for i in graph.initializer} == {TensorProto.FLOAT16}
    assert (graph.node[0].op_type, graph.node[-1].op_type) == ("Cast", "Cast")
    assert {v.type.tensor_type.elem_type for v in graph.value_info} == {TensorProto.FLOAT16}  # compute is fp16
    assert {p.key: p.value for p in converted.metadata_props} == {"edgekd.class_names": '["a"]'}
    weights = lambda m: sum(numpy_helper.to_array(i).nbytes for i in m.graph.initializer)  # noqa: E731
    assert weights(converted) * 2 == weights(model)

    session = ort.InferenceSession(str(fp16), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]
    got = session.run(None, {"input": images})[0]
    assert got.dtype == np.float32 and got.shape == reference.shape
    assert 0 < np.abs(got - reference).max() <= 1e-2 * np.abs(reference).max()  # rounded, within fp16's precision

    parity = check_fp16_parity(fp32, fp16, images, rtol=0.01, min_agreement=1.0)
    assert parity.top1_agreement == 1.0 and parity.max_abs_diff == pytest.approx(np.abs(got - reference).max())


def test_resize_scales_stay_fp32_and_constants_and_casts_turn_fp16(tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x):  # Resize (fp32-only scales), a Cast to float and a float Constant
            y = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            return (y.int().float() * 0.5 + 1.0).mean(dim=(2, 3))

    fp32 = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Net(), (torch.randn(1, 3, 4, 4),), str(fp32), input_names=["input"], opset_version=17, dynamo=False
        )
    converted = convert_to_fp16(onnx.load(str(fp32)))
    resize = next(n for n in converted.graph.node if n.op_type == "Resize")
    scales = {i.name: i for i in converted.graph.initializer}.get(resize.input[2])
    if scales is None:  # exported as a Constant node
        const = next(n for n in converted.graph.node if n.output[0] == resize.input[2])
        assert const.attribute[0].t.data_type == TensorProto.FLOAT
    else:
        assert scales.data_type == TensorProto.FLOAT
    casts = [n for n in converted.graph.node if n.op_type == "Cast"]
    assert [a.i for n in casts for a in n.attribute if a.name == "to"].count(
        TensorProto.FLOAT16
    ) >= 2  # input + y.float()
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 4)).astype(np.float32) * 4
    onnx.save(converted, str(tmp_path / "net_fp16.onnx"))
    check_fp16_parity(fp32, tmp_path / "net_fp16.onnx", x, rtol=0.01, min_agreement=1.0)


def test_weights_beyond_fp16_range_are_refused_naming_the_initializer(build_tiny_onnx, tmp_path):
    model = onnx.load(str(build_tiny_onnx(tmp_path / "tiny.onnx")))
    big = next(i for i in model.graph.initializer if i.name == "fc_b")
    big.CopyFrom(numpy_helper.from_array(np.full(10, 1e6, np.float32), "fc_b"))
    with pytest.raises(EdgekdError, match=r"initializer 'fc_b': float32 values up to 1e\+06 overflow float16"):
        convert_to_fp16(model)


def test_parity_beyond_tolerance_fails_with_the_figures(build_tiny_onnx, tmp_path, images):
    fp32 = build_tiny_onnx(tmp_path / "a.onnx", seed=0)
    other = write_fp16_onnx(build_tiny_onnx(tmp_path / "b.onnx", seed=1), tmp_path / "b_fp16.onnx")  # another model
    with pytest.raises(EdgekdError, match=r"b_fp16.onnx: max \|Δlogit\| .* from a.onnx > .* \(export.fp16_rtol 0.01"):
        check_fp16_parity(fp32, other, images)
