"""Feature taps: capture the outputs of named submodules during a forward pass.

with FeatureTaps(model, ["layer2", "layer3"]) as taps:
    logits = model(x)
    feats = taps.features          # {"layer2": tensor, "layer3": tensor}
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.ondevice.text import did_you_mean


def layer_names(model: nn.Module) -> list[str]:
    """Every submodule path of `model` (the names FeatureTaps accepts), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def check_layer_names(model: nn.Module, names: Iterable[str], what: str = "model") -> None:
    """Raise EdgekdError for the first name that is not a submodule path, naming the nearest valid ones."""
    valid = layer_names(model)
    known = set(valid)
    for name in names:
        if name in known:
            continue
        hint = did_you_mean(name, valid, n=3, cutoff=0.5)
        top = [n for n in valid if "." not in n]
        raise EdgekdError(
            f"{what} ({type(model).__name__}) has no layer '{name}'; {hint}"
            f"top-level layers: {', '.join(top)} (nested ones are dotted, e.g. '{_example(valid)}')"
        )


def _example(valid: list[str]) -> str:
    nested = [n for n in valid if "." in n]
    return nested[0] if nested else (valid[0] if valid else "layer1")


class FeatureTaps:
    """Context manager that records the output of each named submodule on every forward pass.

    `features` maps each name to the output of its latest call (a module called twice in one
    pass keeps the second output). Hooks are removed on exit, also after an exception.
    Tuple/list outputs keep their first tensor.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], what: str = "model") -> None:
        self.names = list(dict.fromkeys(names))
        check_layer_names(model, self.names, what)
        self.model = model
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def record(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            self.features[name] = output

        return record

    def __enter__(self) -> FeatureTaps:
        for name in self.names:
            self._handles.append(self.model.get_submodule(name).register_forward_hook(self._hook(name)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`model(*inputs)` with the taps on: (output, features of this pass)."""
        with self:
            out = self.model(*inputs)
        return out, self.pop()

    def pop(self) -> dict[str, torch.Tensor]:
        """The features of the latest pass, clearing them so the next pass starts empty."""
        feats, self.features = self.features, {}
        return feats
