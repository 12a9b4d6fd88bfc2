"""Int8 quantization: QAT and PTQ to Q/DQ ONNX for TensorRT, dynamic int8 for CPUs."""

from edgekd.quant.check import QdqLayout, check_qdq, inspect_qdq
from edgekd.quant.qat import (
    calibrate,
    calibrate_ptq,
    freeze_observers,
    prepare_qat,
    quantizable_copy,
    quantized_layer_names,
)
from edgekd.quant.qdq import check_qdq_parity, export_qdq_onnx

__all__ = [
    "QdqLayout",
    "calibrate",
    "calibrate_ptq",
    "check_qdq",
    "check_qdq_parity",
    "export_qdq_onnx",
    "freeze_observers",
    "inspect_qdq",
    "prepare_qat",
    "quantizable_copy",
    "quantized_layer_names",
]
