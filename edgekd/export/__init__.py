"""TorchScript and ONNX export with parity checks."""

from edgekd.export.onnx import INPUT_NAME, OUTPUT_NAME, Preprocessing, export_onnx, read_metadata
from edgekd.export.parity import Parity, check_parity, load_runner, measure_parity, run_exported, top1_accuracy
from edgekd.export.torchscript import save_torchscript, to_torchscript

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "Parity",
    "Preprocessing",
    "check_parity",
    "export_onnx",
    "load_runner",
    "measure_parity",
    "read_metadata",
    "run_exported",
    "save_torchscript",
    "to_torchscript",
    "top1_accuracy",
]
