"""ONNX export for TensorRT 8.5 and ONNX Runtime: input "input", output "logits", dynamic batch, metadata.

Uses torch's TorchScript-based exporter (`dynamo=False`), deprecated since torch 2.9 but
still present in 2.14: the torch.export-based default emits opset >= 18 (TensorRT 8.5
parses 13-17 and the down-conversion fails on ReduceMean), and it cannot export the
fake-quantize ops our Q/DQ models need. See docs/quantization.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export._errors import describe_export_failure
from edgekd.ondevice.files import atomic_path
from edgekd.ondevice.text import first_line

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET, MAX_OPSET = 13, 17  # 13: per-channel QuantizeLinear; 17: the newest TensorRT 8.5 parses


@dataclass(frozen=True)
class Preprocessing:
    """How to turn an image into the model's input; stored in the ONNX metadata_props."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    channel_order: str = ""  # "RGB" or "L"; default from `channels`
    resize_size: int = 0  # short side to resize to before the centre crop of image_size; 0: resize straight to it

    def metadata(self) -> dict[str, str]:
        """metadata_props entries, each value JSON (read on devices with `custom_metadata_map`)."""
        order = self.channel_order or ("RGB" if self.channels == 3 else "L")
        return {
            "edgekd.input_shape": json.dumps([self.channels, self.image_size, self.image_size]),
            "edgekd.layout": json.dumps("NCHW"),
            "edgekd.channel_order": json.dumps(order),
            "edgekd.pixel_scale": json.dumps("0-1"),
            "edgekd.mean": json.dumps(list(self.mean)),
            "edgekd.std": json.dumps(list(self.std)),
            "edgekd.class_names": json.dumps(list(self.class_names)),
            "edgekd.resize_size": json.dumps(self.resize_size or self.image_size),
        }


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise EdgekdError(
            f"export.opset: {opset} is not supported; valid: {MIN_OPSET} to {MAX_OPSET} "
            f"(TensorRT 8.5 on JetPack 5.1 parses at most opset 17)"
        )


def export_onnx(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    simplify: bool = False,
    preprocessing: Preprocessing | None = None,
) -> Path:
    """Export `model` (eval, CPU) to a checked, shape-inferred single-file ONNX model, written atomically."""
    path = Path(path)
    check_opset(opset)
    model = model.eval().cpu()
    with atomic_path(path) as tmp:
        _torch_export(model, tmp, example.cpu(), opset, dynamic_batch, what=str(path))
        proto = onnx.load(str(tmp))
        if simplify:
            proto = _simplify(proto, path)
        if preprocessing is not None:
            set_metadata(proto, preprocessing.metadata())
        proto = check_and_infer(proto, path)
        onnx.save(proto, str(tmp))
    return path


def _torch_export(
    model: nn.Module, dest: Path, example: torch.Tensor, opset: int, dynamic_batch: bool, what: str
) -> None:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings(), torch.no_grad(), _stdout_silenced():
            warnings.filterwarnings(
                "ignore", category=DeprecationWarning
            )  # dynamo=False is deprecated, chosen deliberately
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                (example,),
                str(dest),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except Exception as e:  # the exporter raises many types; all mean "this model cannot be exported"
        raise EdgekdError(describe_export_failure(what, model, example, e, opset)) from e


@contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Silence file descriptor 1: the exporter's C++ logger dumps the whole TorchScript graph there on failure."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _simplify(proto: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    try:
        import onnxslim  # optional: not a dependency of edgekd
    except ImportError:
        log.warning(
            "%s: export.simplify is on but onnxslim is not installed (pip install onnxslim); exported unsimplified",
            path,
        )
        return proto
    return onnxslim.slim(proto)


def set_metadata(proto: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Add or replace metadata_props entries."""
    keep = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)


def check_and_infer(proto: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """Strict shape inference, then onnx.checker with full_check; failures name the file."""
    try:
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise EdgekdError(f"{path}: exported ONNX graph is invalid: {first_line(e)}") from e
    return proto


def read_metadata(path: Path) -> dict[str, object]:
    """The edgekd.* metadata of an ONNX file, JSON-decoded, keys without the prefix."""
    proto = onnx.load(str(path), load_external_data=False)
    return {
        p.key.removeprefix("edgekd."): json.loads(p.value) for p in proto.metadata_props if p.key.startswith("edgekd.")
    }
