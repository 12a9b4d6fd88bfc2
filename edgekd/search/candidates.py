"""Candidate students for the scout: names made into models at the pipeline's input, their size, the default list.

A candidate is a registry name (`resnet8`), `timm/<name>` (timm installed) or `prune/<share>`: the teacher with
whole channels removed by Torch-Pruning (edgekd.prune's magnitude importance, the same share per layer, in
multiples of 16 channels, else 8: PRUNINGS) until its MACs are at most that share of the teacher's. Every
candidate is built at the teacher's input (classes, channels, image size); the weights are random, since latency
does not depend on them. Only the chosen prune candidate is cut from the trained teacher, and per-layer pruning
gives it the same layer sizes.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from importlib.util import find_spec

import torch
from torch import nn

from edgekd.bench.macs import count_macs
from edgekd.config.pipeline import PRUNE_CANDIDATE
from edgekd.errors import EdgekdError
from edgekd.models import ModelSpec, count_params, model_names
from edgekd.models.registry import TIMM_PREFIX
from edgekd.models.structure import structure_of
from edgekd.ondevice.text import did_you_mean
from edgekd.prune.pruner import StepSettings, choose_share, cut, size_of

DEFAULT_SHARES = (0.5, 0.25)
"""The pruned teachers among the default candidates, as shares of the teacher's MACs."""

PRUNINGS = (StepSettings(round_to=16, max_step=0.99), StepSettings(max_step=0.99))
"""How a prune candidate is cut, tried in order until one reaches the share: Torch-Pruning's defaults as edgekd uses
them, the same share of every layer (so the trained teacher cut alike gets the same layer sizes as the scout timed),
in as few cuts as reach the share (no recovery between cuts, so nothing asks for small steps); channel multiples of
16 first (ONNX Runtime's CPU blocks on AVX-512, Tensor Cores' int8), then 8 where 16 cannot reach the share on a
narrow net. docs/pruning.md measured the difference: a half-MACs resnet20 at 8/24/48 channels ran 0.36 ms, at 16
channels 0.21 ms."""

MAX_CUTS = 8
"""Cuts tried before a prune candidate is given up (one cut removes at most half of each layer's channels)."""


def share_of(name: str) -> float | None:
    """The MACs share of a `prune/<share>` candidate; None for any other name."""
    return float(name.removeprefix(PRUNE_CANDIDATE)) if name.startswith(PRUNE_CANDIDATE) else None


def file_name(name: str) -> str:
    """A candidate as a plain name (for files, folders and bench records): `prune/0.5` -> `prune-0.5`."""
    return name.replace("/", "-")


def check_names(names: list[str], field: str = "scout.candidates") -> None:
    """Every candidate is a registry name, `timm/<name>` or `prune/<share>`: a misspelt name is a one-line error
    naming its place in `field`, before anything is built (a candidate that fails to build stays in the table)."""
    known = model_names()
    for i, name in enumerate(names):
        if name.startswith(TIMM_PREFIX) or share_of(name) is not None or name in known:
            continue
        raise EdgekdError(
            f"{field}[{i}]: unknown model {name!r}; {did_you_mean(name, known)}valid: a registry name "
            f"({', '.join(known)}), `{TIMM_PREFIX}<name>` (timm installed) or `{PRUNE_CANDIDATE}<share>`"
        )


def unavailable(name: str) -> str | None:
    """Why a candidate cannot be built on this machine (a package is not installed), or None."""
    if name.startswith(TIMM_PREFIX) and find_spec("timm") is None:
        return "timm is not installed: pip install 'edgekd[timm]'"
    if share_of(name) is not None and find_spec("torch_pruning") is None:
        return "Torch-Pruning is not installed: pip install 'edgekd[prune]'"
    return None


def spec_of(name: str, teacher: ModelSpec) -> ModelSpec:
    """The spec a candidate is built from, before pruning: the teacher's own for `prune/<share>` (input adapter
    included, as the prune stage keeps it), else the registry model at the teacher's input."""
    if share_of(name) is not None:
        return teacher
    return ModelSpec(name, teacher.num_classes, teacher.in_channels, teacher.image_size)


def identity(name: str, teacher: ModelSpec) -> dict:
    """What decides a candidate's architecture, for cache keys: its spec, and for a pruned teacher the share and
    how it is cut."""
    out: dict = {"spec": dataclasses.asdict(spec_of(name, teacher))}
    if (share := share_of(name)) is not None:
        out.update(share=share, pruning=[dataclasses.asdict(s) for s in PRUNINGS])
    return out


def build(name: str, teacher: ModelSpec, trained: nn.Module | None = None) -> tuple[nn.Module, ModelSpec]:
    """The candidate (eval mode, on the CPU) and the spec that rebuilds it; `prune/<share>` cuts a copy of `trained`
    (the trained teacher) when given, else a randomly initialised teacher."""
    spec = spec_of(name, teacher)
    share = share_of(name)
    if share is None:
        return spec.build().eval(), spec
    model = trained if trained is not None else teacher.build()
    model = prune_to(model, share, (teacher.in_channels, teacher.image_size, teacher.image_size))
    return model, dataclasses.replace(teacher, structure=structure_of(model, teacher.build()))


def prune_to(model: nn.Module, share: float, shape: tuple[int, int, int]) -> nn.Module:
    """`model` cut until its MACs are at most `share` of what they were, with the first of PRUNINGS that gets there
    (edgekd.prune's search per cut); `model` itself is left as it was."""
    reasons = []
    for settings in PRUNINGS:
        candidate = copy.deepcopy(model).cpu().eval()
        try:
            _cut_to(candidate, share, shape, settings)
            return candidate
        except EdgekdError as e:
            reasons.append(f"round_to {settings.round_to}: {e}")
    raise EdgekdError(f"{PRUNE_CANDIDATE}{share:g}: " + "; ".join(reasons))


def _cut_to(model: nn.Module, share: float, shape: tuple[int, int, int], settings: StepSettings) -> None:
    example = torch.zeros(1, *shape)
    base = size_of(model, shape).macs
    macs = base
    for _ in range(MAX_CUTS):
        if macs <= base * share:
            return
        cut(model, example, choose_share(model, example, int(base * share), settings).share, settings)
        macs, before = size_of(model, shape).macs, macs
        if macs >= before:
            break
    if macs > base * share:
        raise EdgekdError(f"Torch-Pruning stops at {macs / base:.2f} of the teacher's MACs; ask for a larger share")


def size(model: nn.Module, spec: ModelSpec) -> tuple[int, int]:
    """(params, MACs of one image) of a built candidate."""
    return count_params(model), count_macs(model, (spec.in_channels, spec.image_size, spec.image_size))


def defaults(teacher: ModelSpec, size_of_name: Callable[[str], tuple[int, int] | None]) -> list[str]:
    """The candidates of an empty `scout.candidates`: the registry models with fewer MACs than the teacher at its
    input (`size_of_name(name)`: (params, MACs), None when the model cannot be built there), then the pruned
    teachers of DEFAULT_SHARES."""
    teacher_size = size_of_name(teacher.name)
    if teacher_size is None:
        raise EdgekdError(f"teacher.model {teacher.name}: cannot be built to size the default scout candidates")
    smaller = []
    for name in model_names():
        found = size_of_name(name) if name != teacher.name else None
        if found is not None and found[1] < teacher_size[1]:
            smaller.append(name)
    return smaller + [f"{PRUNE_CANDIDATE}{share:g}" for share in DEFAULT_SHARES]
