"""The channel structure of a model whose layers were cut down (structured pruning), as plain data.

A pruned model is saved like any other (ModelSpec + state_dict, never a pickled module): its spec's
`structure` maps module paths to the sizes that differ from the registry model's, and `shrink_to` rebuilds
those layers at those sizes before the weights are loaded with `weights_only=True`. Only the layer types a
channel pruner changes are described; a model holding another layer whose size changed cannot be described,
and `structure_of` says which.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgekd.errors import EdgekdError

_SIZES: dict[type, tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm2d: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
}
"""What a pruner may change in each layer type, in constructor-argument names."""


def _sizes(module: nn.Module) -> dict[str, int] | None:
    fields = _SIZES.get(type(module))
    return {f: int(getattr(module, f)) for f in fields} if fields else None


def structure_of(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, int]]:
    """{module path: sizes} for every layer of `model` whose sizes differ from the same layer of `reference`
    (the registry model it was cut from)."""
    ref = dict(reference.named_modules())
    out = {}
    for name, module in model.named_modules():
        other = ref.get(name)
        if other is None or type(other) is not type(module):
            raise EdgekdError(f"layer '{name}': pruned model does not match its registry model's layers")
        sizes = _sizes(module)
        if sizes is None:
            if any(p.shape != q.shape for p, q in zip(module.parameters(False), other.parameters(False))):
                raise EdgekdError(
                    f"layer '{name}': {type(module).__name__} changed size under pruning; only "
                    f"{', '.join(t.__name__ for t in _SIZES)} can be saved pruned"
                )
            continue
        if sizes != _sizes(other):
            out[name] = sizes
    return out


def check_structure(doc: Any, where: str = "spec.structure") -> dict[str, dict[str, int]]:
    """A structure read from a file: {str: {size name: positive int}}, or a one-line error."""
    if not isinstance(doc, dict):
        raise EdgekdError(f"{where}: expected a mapping of layer paths to sizes, got {type(doc).__name__}")
    known = {f for fields in _SIZES.values() for f in fields}
    for name, sizes in doc.items():
        if not isinstance(name, str) or not isinstance(sizes, dict):
            raise EdgekdError(f"{where}.{name}: expected layer path -> {{size: int}}")
        for k, v in sizes.items():
            if k not in known or not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise EdgekdError(f"{where}.{name}.{k}: expected one of {sorted(known)} with a positive int, got {v!r}")
    return doc


def _rebuilt(old: nn.Module, sizes: dict[str, int]) -> nn.Module:
    s = {**(_sizes(old) or {}), **sizes}
    if isinstance(old, nn.Conv2d):
        return nn.Conv2d(
            s["in_channels"],
            s["out_channels"],
            old.kernel_size,
            old.stride,
            old.padding,
            old.dilation,
            s["groups"],
            old.bias is not None,
            old.padding_mode,
        )
    if isinstance(old, nn.BatchNorm2d):
        return nn.BatchNorm2d(s["num_features"], old.eps, old.momentum, old.affine, old.track_running_stats)
    return nn.Linear(s["in_features"], s["out_features"], old.bias is not None)


def shrink_to(model: nn.Module, structure: dict[str, dict[str, int]]) -> nn.Module:
    """`model` (fresh from the registry) with the layers named in `structure` rebuilt at those sizes."""
    check_structure(structure)
    modules = dict(model.named_modules())
    for name, sizes in structure.items():
        old = modules.get(name)
        if old is None or type(old) not in _SIZES:
            raise EdgekdError(
                f"spec.structure: layer '{name}' is not a {'/'.join(t.__name__ for t in _SIZES)} of "
                f"{type(model).__name__}: a structure saved from another model?"
            )
        parent_path, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, leaf, _rebuilt(old, sizes))
    return model
