"""TorchScript export: trace or script, freeze, save atomically, reload and compare with eager.

torch.jit is deprecated in torch 2.14 (it warns); it is still the one format that the
C++ runtime and Python 3.8 JetPack torch wheels load without the model's source code.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.ondevice.files import write_bytes_atomic
from edgekd.ondevice.text import first_line


def to_torchscript(
    model: nn.Module, example: torch.Tensor, method: Literal["trace", "script"] = "trace"
) -> torch.jit.ScriptModule:
    """A frozen (weights inlined, eval-mode) TorchScript module of `model` on the CPU."""
    model = model.eval().cpu()
    example = example.cpu()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit is deprecated in 2.14
        try:
            if method == "trace":
                scripted = torch.jit.trace(model, example, check_trace=False)
            elif method == "script":
                scripted = torch.jit.script(model)
            else:
                raise EdgekdError(f"export.torchscript: unknown method '{method}'; valid: trace, script")
        except EdgekdError:
            raise
        except Exception as e:
            hint = " (try export.torchscript: trace)" if method == "script" else ""
            raise EdgekdError(f"TorchScript {method} of {type(model).__name__} failed: {first_line(e)}{hint}") from e
        return torch.jit.freeze(scripted)


def save_torchscript(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    method: Literal["trace", "script"] = "trace",
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> Path:
    """Export, save atomically, reload the file and check it against eager `model` on `example`.

    Raises EdgekdError when the reloaded module's outputs differ from eager by more than atol + rtol x max |output|
    (a trace that baked in data-dependent control flow shows up here; float rounding that differs between two
    runs of one kernel on several threads, about 1e-3 on logits of 15 measured on a dynamic-int8 MobileNetV2,
    does not).
    """
    path = Path(path)
    scripted = to_torchscript(model, example, method)
    buffer = (
        io.BytesIO()
    )  # in memory first: the archive is not named after a temporary file, and a failed check writes nothing
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        reloaded = torch.jit.load(buffer, map_location="cpu")
    with torch.no_grad():
        want = model(example.cpu())
        got = reloaded(example.cpu())
    diff, bound = float((want - got).abs().max()), atol + rtol * float(want.abs().max())
    if not diff <= bound:
        raise EdgekdError(
            f"{path}: reloaded TorchScript differs from the eager model by {diff:.3g} > {bound:.3g} "
            f"(atol {atol:g} + rtol {rtol:g} x max |output|)"
        )
    write_bytes_atomic(path, buffer.getvalue())
    return path
