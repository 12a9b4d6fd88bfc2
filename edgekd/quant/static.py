"""Static int8 Q/DQ of an fp32 ONNX file by ONNX Runtime's quantizer, calibrated on given images.

What `edgekd bench FILE.onnx --calib IMAGES` times as the file's int8 version (in ONNX Runtime, and as the Q/DQ
source of int8 TensorRT engines): symmetric int8 activations and per-channel weights (TensorRT takes symmetric
scales only), biases left float, min/max calibration. A run makes its Q/DQ files by QAT/PTQ in PyTorch instead
(edgekd.quant.qdq); this is for models that exist only as ONNX.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.ondevice.files import atomic_path
from edgekd.ondevice.text import first_line
from edgekd.quant.dynamic import quiet_root_logger


def quantize_static_onnx(src: Path, dest: Path, input_name: str, images: np.ndarray, batch: int = 32) -> Path:
    """Write the Q/DQ int8 copy of `src` to `dest` (atomically), calibrated on `images` fed in batches of `batch`
    (the file's own batch size when it fixes one)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            chunks = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)] or [images]
            self.feeds = iter({input_name: np.ascontiguousarray(c, dtype=np.float32)} for c in chunks)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    with atomic_path(Path(dest)) as tmp, quiet_root_logger():
        try:
            quantize_static(
                str(src),
                str(tmp),
                Batches(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
        except Exception as e:  # onnxruntime raises its own types for graphs it cannot run or quantize
            raise EdgekdError(f"{src}: ONNX Runtime could not quantize it to int8: {first_line(e)}") from None
    return Path(dest)
