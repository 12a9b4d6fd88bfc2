"""A tiny real ONNX classifier (fp32, and a Q/DQ int8 copy made by ONNX Runtime) and images for the TensorRT tests."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def conv_onnx(path: Path) -> Path:
    """Conv(1->8, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(8->10) on Nx1x8x8 images, dynamic batch."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(size=(10, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(size=10).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(5, 1, 8, 8)).astype(np.float32)


@pytest.fixture
def fp32_onnx(tmp_path: Path) -> Path:
    return conv_onnx(tmp_path / "student.onnx")


@pytest.fixture
def qdq_onnx(tmp_path: Path, fp32_onnx: Path, images: np.ndarray) -> Path:
    """Symmetric int8 Q/DQ (what TensorRT's explicit quantization takes), calibrated on `images`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": images}])

        def get_next(self):
            return next(self.batches, None)

    out = tmp_path / "student_int8_qdq.onnx"
    quantize_static(
        str(fp32_onnx),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        # what TensorRT 8.5 takes: symmetric int8, fp32 bias (no int32 bias), Q/DQ pairs on fp32 weights
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": True,
        },
    )
    return out
