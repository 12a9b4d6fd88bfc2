"""Helpers the fleet tests share: recording artifacts in a run's manifest as the runner would, Q/DQ files, and the
device-like python that runs the TensorRT stand-in."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

STANDINS = Path(__file__).resolve().parents[1] / "standins"


def vouch(run: Path, stage: str, files: dict[str, str]) -> None:
    """Record `files` (artifact id -> run-dir path) as a done stage in run/manifest.json, as the runner would."""
    path = run / "manifest.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"pipeline": "test", "stages": {}}
    arts = {
        art: {
            "path": rel,
            "sha256": hashlib.sha256((run / rel).read_bytes()).hexdigest(),
            "bytes": (run / rel).stat().st_size,
        }
        for art, rel in files.items()
    }
    doc["stages"][stage] = {"status": "done", "key": "test", "artifacts": arts, "metrics": {}}
    path.write_text(json.dumps(doc))


def write_qdq(fp32: Path, out: Path, images) -> None:
    """A symmetric int8 Q/DQ copy of `fp32` (input `images`) made by ONNX Runtime, calibrated on `images`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": images}])

        def get_next(self):
            return next(self.batches, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )


def device_python(folder: Path, venv_python: str, release: str, fault: str = "") -> str:
    """A `python3` for devices.yaml: the venv's python with the stand-ins behaving as TensorRT `release` (and, for a
    test that needs one, the stand-in's test-only fault injection `fault`: see tests/standins/tensorrt)."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "python3"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"export EDGEKD_TRT_STANDIN={release}\n"
        + (f"export EDGEKD_TRT_STANDIN_FAULT={fault}\n" if fault else "")
        + f'export PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{STANDINS}"\n'
        f'exec {venv_python} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)
