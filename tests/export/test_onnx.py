"""ONNX export: names, dynamic batch, opset, metadata, and one-line errors for unexportable layers."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export import Preprocessing, export_onnx, read_metadata


def test_export_names_dynamic_batch_opset_and_metadata(model, val_images, tmp_path):
    pre = Preprocessing(image_size=16, channels=1, mean=(0.3,), std=(0.4,), class_names=tuple("0123456789"))
    path = export_onnx(model, tmp_path / "student.onnx", val_images[:1], opset=17, preprocessing=pre)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = read_metadata(path)
    assert {k: meta[k] for k in ("input_shape", "channel_order", "mean", "std", "class_names")} == {
        "input_shape": [1, 16, 16],
        "channel_order": "L",
        "mean": [0.3],
        "std": [0.4],
        "class_names": list("0123456789"),
    }
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        out = session.run(None, {"input": val_images[:n].numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(out, model(val_images[:n]).numpy(), atol=1e-4)
    assert list(tmp_path.iterdir()) == [path], "no temporary or external-data files are left behind"


def test_static_batch_when_asked(model, val_images, tmp_path):
    path = export_onnx(model, tmp_path / "s.onnx", val_images[:4], dynamic_batch=False)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4


@pytest.mark.parametrize("opset", [12, 18])
def test_opsets_tensorrt_85_cannot_parse_are_refused(model, val_images, tmp_path, opset):
    with pytest.raises(EdgekdError, match=f"export.opset: {opset} is not supported; valid: 13 to 17"):
        export_onnx(model, tmp_path / "m.onnx", val_images[:1], opset=opset)


class Eigen(nn.Module):
    def forward(self, x):
        return torch.linalg.eigvals(x[..., :2, :2].double()).real.float().flatten(1)


class WithEigenHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(1, 4, 3)
        self.head = Eigen()

    def forward(self, x):
        return self.head(self.body(x))


def test_unexportable_layer_is_a_one_line_error_naming_op_and_module(val_images, tmp_path):
    with pytest.raises(EdgekdError) as info:
        export_onnx(WithEigenHead().eval(), tmp_path / "bad.onnx", val_images[:1])
    message = str(info.value)
    assert "\n" not in message
    assert "aten::linalg_eigvals" in message and "module 'head' (Eigen)" in message and "opset 17" in message
    assert info.value.__cause__ is not None, "the exporter's own exception stays available for --debug"
    assert not (tmp_path / "bad.onnx").exists() and list(tmp_path.iterdir()) == []
