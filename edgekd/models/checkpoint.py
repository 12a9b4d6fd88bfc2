"""Model files: a state_dict plus the spec that rebuilds the module, never a pickled module."""

from __future__ import annotations

import io
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models.inputs import InputSpec, attach_input_adapter
from edgekd.models.registry import build_model
from edgekd.models.structure import shrink_to
from edgekd.ondevice.files import write_bytes_atomic
from edgekd.ondevice.text import first_line


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model before loading its weights.

    `input_adapter` ({"given": InputSpec dict, "wanted": InputSpec dict}) is set when the model expects other
    preprocessing than the pipeline's inputs (a teacher with its own mean/std or size): the rebuilt model
    converts its inputs itself, so every stage feeds it the same tensors.

    `structure` ({layer path: sizes}, edgekd.models.structure) is set for a pruned model: the registry model is
    rebuilt with those layers at those sizes, so every stage that loads it gets the pruned architecture.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    input_adapter: dict | None = None
    structure: dict | None = None

    def build(self) -> nn.Module:
        model = build_model(self.name, self.num_classes, self.in_channels)
        if self.structure:
            shrink_to(model, self.structure)
        return self.adapt_inputs(model)

    def adapt_inputs(self, model: nn.Module) -> nn.Module:
        """`model` with this spec's input adapter attached (unchanged when it has none)."""
        if self.input_adapter:
            given, wanted = (InputSpec.from_dict(self.input_adapter[k]) for k in ("given", "wanted"))
            attach_input_adapter(model, given, wanted)
        return model


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save through an in-memory buffer, a temporary file in the same folder, then a rename.

    Saving to a buffer keeps the bytes a function of the content alone (torch names the
    archive after the file), so an unchanged model keeps its sha256 and its cache hits.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def save_model(path: Path, model: nn.Module, spec: ModelSpec, **extra: object) -> None:
    """Save `{"spec", "state_dict", **extra}`; loadable with weights_only=True."""
    atomic_torch_save({"spec": asdict(spec), "state_dict": model.state_dict(), **extra}, Path(path))


def _safe_load(path: Path) -> object:
    if not path.is_file():
        raise EdgekdError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise EdgekdError(
            f"{path}: refused to load: not a torch.save file of tensors and plain data "
            f"({_unpickler_detail(e)}); save a state_dict instead"
        ) from None
    except (
        Exception
    ) as e:  # torch's unpickler raises IndexError, KeyError, ... on a damaged file: all mean "unreadable"
        raise EdgekdError(f"{path}: not a readable PyTorch checkpoint: {first_line(e)}") from None


def _unpickler_detail(error: pickle.UnpicklingError) -> str:
    """What the weights-only unpickler stopped at (e.g. "unsupported GLOBAL posix.system"), without torch's
    boilerplate, whose first line suggests weights_only=False (the unsafe load edgekd refuses)."""
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return lines[0].removeprefix("Trying to load ").rstrip(".") if lines else type(error).__name__


def load_model(path: Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model saved by `save_model`, in eval mode."""
    path = Path(path)
    blob = _safe_load(path)
    if not isinstance(blob, dict) or "spec" not in blob or "state_dict" not in blob:
        raise EdgekdError(f"{path}: not an edgekd model file (expected keys 'spec' and 'state_dict')")
    try:
        spec = ModelSpec(**blob["spec"])
    except TypeError as e:
        raise EdgekdError(f"{path}: broken model spec in the file ({e}); re-run the stage that made it") from None
    model = spec.build()
    load_into(model, blob["state_dict"], path)
    return model.eval(), spec


def read_state_dict(path: Path) -> tuple[dict, list[str] | None]:
    """A user's weights file (a state_dict, or a dict holding one under 'state_dict'/'model'; or .safetensors)
    and the class names it carries under 'class_names'/'classes', if any."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path), None
    blob = _safe_load(path)
    names = None
    if isinstance(blob, dict):
        for key in ("class_names", "classes"):
            if isinstance(blob.get(key), (list, tuple)) and all(isinstance(n, str) for n in blob[key]):
                names = list(blob[key])
        data = blob.get("data")
        if names is None and isinstance(data, dict) and isinstance(data.get("class_names"), (list, tuple)):
            names = list(data["class_names"])  # an edgekd model file
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(blob.get(key), dict):
                blob = blob[key]
                break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise EdgekdError(f"{path}: expected a state_dict (a mapping of tensor names to tensors)")
    return {k.removeprefix("module."): v for k, v in blob.items()}, names  # "module.": saved from DataParallel/DDP


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise EdgekdError(
            f"{path}: reading .safetensors needs the safetensors package (pip install safetensors)"
        ) from None
    if not path.is_file():
        raise EdgekdError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise EdgekdError(f"{path}: not a readable .safetensors file: {e}") from None


def load_state_dict_file(model: nn.Module, path: Path) -> list[str] | None:
    """Load a user's checkpoint into `model`; returns the class names the file carries, if any."""
    state, names = read_state_dict(path)
    load_into(model, state, Path(path))
    return names


def _classes_hint(model: nn.Module, name: str, found: torch.Tensor, wanted: torch.Tensor) -> str:
    """When the bad tensor is the classifier's output size: say it is a class count that differs from the data's."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if (
        not linears
        or name not in (f"{linears[-1]}.weight", f"{linears[-1]}.bias")
        or found.shape[1:] != wanted.shape[1:]
    ):
        return ""
    return f": the checkpoint has {found.shape[0]} classes, the data has {wanted.shape[0]}"


def load_into(model: nn.Module, state: dict, path: Path) -> None:
    """load_state_dict with an error that names the first bad tensor."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise EdgekdError(
                f"{path}: tensor '{name}' is missing from the checkpoint "
                f"(model {type(model).__name__} needs {len(own)} tensors, file has {len(state)})"
            )
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise EdgekdError(
                f"{path}: tensor '{name}' has shape {tuple(state[name].shape)} in the checkpoint, "
                f"the model needs {tuple(tensor.shape)}{_classes_hint(model, name, state[name], tensor)}"
            )
    extra = [k for k in state if k not in own]
    if extra:
        raise EdgekdError(
            f"{path}: tensor '{extra[0]}' in the checkpoint has no place in model {type(model).__name__} "
            f"({len(extra)} unexpected tensors): is it a checkpoint of another architecture?"
        )
    model.load_state_dict(state)
