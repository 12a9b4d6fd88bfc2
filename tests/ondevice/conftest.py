"""The tiny real ONNX classifier of tests/conftest.py, and a Q/DQ int8 copy made by ONNX Runtime, for the TensorRT tests."""

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def fp32_onnx(tmp_path: Path, build_tiny_onnx) -> Path:
    return build_tiny_onnx(tmp_path / "student.onnx")  # tests/conftest.py: one tiny model for every test


@pytest.fixture
def qdq_onnx(tmp_path: Path, fp32_onnx: Path, images: np.ndarray) -> Path:
    """Symmetric int8 Q/DQ (what TensorRT's explicit quantization takes), calibrated on `images`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": images}])

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
