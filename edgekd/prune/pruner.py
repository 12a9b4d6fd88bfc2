"""One pruning step on Torch-Pruning (DepGraph): remove whole channels until the model meets a size goal.

Torch-Pruning finds which layers must lose the same channels (residual adds, concatenations, depthwise
convolutions, BatchNorm) and removes them; its pruners take a channel share (`pruning_ratio`), not a MACs
goal, and with `round_to` the resulting size is a step function of that share. A step therefore searches
the share on copies of the model: the least share whose result meets the step's goal without removing more
than `max_step` of the MACs (or params) at once; when no share meets the goal under that cap, the largest
cut under it. Torch-Pruning's failures (a reshape that mixes channels, as ShuffleNet's channel shuffle)
become one-line errors naming the layer.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from edgekd.bench.macs import count_macs
from edgekd.errors import EdgekdError
from edgekd.models import count_params

IMPORTANCES = ("magnitude", "taylor", "bn_scale")
SEARCH_ITERATIONS = 7
"""Bisection rounds over the channel share per step (share resolution 0.5 / 2**7 = 0.004)."""
MAX_SHARE = 0.5
"""The largest channel share one step tries: beyond it Torch-Pruning's rounding to `round_to` can empty a layer,
which it then leaves whole, so the size stops falling with the share."""


def torch_pruning():
    """The torch_pruning package, or a one-line error saying how to install it."""
    try:
        import torch_pruning
    except ImportError:
        raise EdgekdError(
            "student.prune: structured pruning needs Torch-Pruning: pip install 'edgekd[prune]'"
        ) from None
    return torch_pruning


@dataclass(frozen=True)
class Size:
    macs: int
    params: int

    def of(self, kind: str) -> int:
        return self.params if kind == "params" else self.macs


def size_of(model: nn.Module, input_shape: tuple[int, ...]) -> Size:
    return Size(count_macs(model, input_shape), count_params(model))


@dataclass(frozen=True)
class StepSettings:
    """What one step is asked to do (the prune section's choices, resolved to modules and numbers)."""

    importance: str = "magnitude"
    round_to: int = 8
    global_pruning: bool = False
    ignored: tuple[str, ...] = ()
    layer_ratios: tuple[tuple[str, float], ...] = ()
    max_step: float = 1 / 3
    kind: str = "macs"  # what the goal and the cap count: "macs" or "params"


def head_of(model: nn.Module) -> str:
    """The classifier head: the last Linear (or, without one, the last Conv2d) layer; never pruned."""
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    last = last or [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not last:
        raise EdgekdError(f"student.prune: model {type(model).__name__} has no Linear or Conv2d layer to prune")
    return last[-1]


def _modules(model: nn.Module, names: tuple[str, ...], field: str) -> list[nn.Module]:
    found = dict(model.named_modules())
    out = []
    for name in names:
        if name not in found or not name:
            near = [n for n in found if n and (n.startswith(name) or name.startswith(n))][:3]
            hint = f" (near: {', '.join(near)})" if near else ""
            raise EdgekdError(f"{field}: no layer '{name}' in {type(model).__name__}{hint}")
        out.append(found[name])
    return out


def _importance(kind: str):
    tp = torch_pruning()
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)


def taylor_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Fill `.grad` with the cross-entropy gradient of one batch: what Taylor importance scores channels by."""
    model.zero_grad()
    model.eval()
    nn.functional.cross_entropy(model(images), labels).backward()


def _layer_of(error: BaseException, model: nn.Module) -> str:
    """The model layer where Torch-Pruning failed: from the innermost frame that holds a DepGraph node, the first
    named layer upstream of that node; else the innermost frame's model layer."""
    names = {m: n for n, m in model.named_modules() if n}
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if hasattr(value, "inputs") and hasattr(value, "module"):  # a DepGraph node: walk back to a layer
                seen, todo = set(), [value]
                while todo:
                    node = todo.pop(0)
                    if id(node) not in seen:
                        seen.add(id(node))
                        if isinstance(node.module, nn.Module) and node.module in names:
                            return names[node.module]
                        todo.extend(getattr(node, "inputs", []))
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, nn.Module) and value in names:
                return names[value]
    return "?"


def unsupported(error: BaseException, model: nn.Module) -> EdgekdError:
    layer = _layer_of(error, model)
    return EdgekdError(
        f"student.prune: Torch-Pruning cannot prune {type(model).__name__} at layer '{layer}' "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no message'}); "
        + (
            "a reshape or channel shuffle that mixes channels is not supported: pick another teacher or student.model"
            if isinstance(error, ZeroDivisionError)
            else "it could not map this model's channel dependencies: pick another teacher or student.model"
        )
    )


def cut(model: nn.Module, example: torch.Tensor, share: float, settings: StepSettings) -> nn.Module:
    """`model` (changed in place) with `share` of each prunable group's channels removed by Torch-Pruning."""
    tp = torch_pruning()
    ignored = _modules(model, (head_of(model), *settings.ignored), "student.prune.ignored")
    ratios = dict(settings.layer_ratios)
    ratio_layers = _modules(model, tuple(ratios), "student.prune.layer_ratios")
    try:
        with one_thread():
            pruner = tp.pruner.BasePruner(
                model,
                example,
                importance=_importance(settings.importance),
                pruning_ratio=share,
                pruning_ratio_dict={m: ratios[n] for m, n in zip(ratio_layers, ratios)} or None,
                global_pruning=settings.global_pruning,
                ignored_layers=ignored,
                round_to=settings.round_to if settings.round_to > 1 else None,
            )
            pruner.step()
    except EdgekdError:
        raise
    except Exception as e:  # Torch-Pruning raises ZeroDivisionError, IndexError, ... on graphs it cannot map
        raise unsupported(e, model) from None
    return model


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread while Torch-Pruning traces copies: a trace is many tiny ops that threads only slow down
    (20x on a loaded 2-core machine, 1.3 s instead of 0.06 s per resnet20 trial)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def with_grads(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters keep their `.grad` (deepcopy drops it; Taylor importance needs it)."""
    twin = copy.deepcopy(model)
    for mine, theirs in zip(twin.parameters(), model.parameters()):
        if theirs.grad is not None:
            mine.grad = theirs.grad.clone()
    return twin


@dataclass(frozen=True)
class StepChoice:
    share: float  # channel share handed to Torch-Pruning
    size: Size
    met_goal: bool


def choose_share(model: nn.Module, example: torch.Tensor, goal: int, settings: StepSettings) -> StepChoice:
    """The least channel share whose result meets `goal` (MACs or params, `settings.kind`) without removing more
    than `settings.max_step` of the current size; else the largest cut under that cap. Tried on copies."""
    shape = tuple(example.shape[1:])
    before = size_of(model, shape).of(settings.kind)
    floor = (1 - settings.max_step) * before - 1e-6
    cache: dict[float, Size] = {}

    def size_at(share: float) -> Size:
        if share not in cache:
            cache[share] = size_of(cut(with_grads(model), example, share, settings), shape)
        return cache[share]

    with one_thread():
        lo, hi = 0.0, MAX_SHARE  # the least share that meets the goal: hi meets it or is the top of the range
        for _ in range(SEARCH_ITERATIONS):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if size_at(mid).of(settings.kind) <= goal else (mid, hi)
        best = size_at(hi)
        if floor <= best.of(settings.kind) <= goal:
            return StepChoice(hi, best, True)
        lo, top = 0.0, hi  # over the cap: the largest share that stays within it (lo does)
        for _ in range(SEARCH_ITERATIONS):
            mid = (lo + top) / 2
            lo, top = (mid, top) if size_at(mid).of(settings.kind) >= floor else (lo, mid)
    under_cap = [(s, z) for s, z in cache.items() if floor <= z.of(settings.kind) < before]
    if not under_cap:
        smallest = min(cache.items(), key=lambda kv: (kv[1].of(settings.kind) >= before, kv[0]))
        removed = 1 - smallest[1].of(settings.kind) / before
        raise EdgekdError(
            f"student.prune.round_to: {settings.round_to}: the smallest cut Torch-Pruning makes removes {removed:.0%} "
            f"of the {settings.kind} in one step, more than max_step {settings.max_step:.0%} (or nothing); "
            f"lower round_to, or set global_pruning: true"
        )
    share, size = min(under_cap, key=lambda kv: kv[1].of(settings.kind))
    return StepChoice(share, size, size.of(settings.kind) <= goal)


def settings_of(prune, kind: str | None = None) -> StepSettings:
    """A step's settings from the prune section (edgekd.config.PruneConfig)."""
    return StepSettings(
        importance=prune.importance,
        round_to=prune.round_to,
        global_pruning=prune.global_pruning,
        ignored=tuple(prune.ignored),
        layer_ratios=tuple(sorted(prune.layer_ratios.items())),
        max_step=prune.max_step,
        kind=kind or ("params" if prune.target.kind == "params" else "macs"),
    )


def check_prunable(model: nn.Module, prune, in_channels: int, image_size: int = 32) -> None:
    """Before any training: the layer names exist, Torch-Pruning is installed and can map this model's channel
    dependencies (one small cut of a fresh copy); a one-line error otherwise."""
    settings = settings_of(prune)
    if settings.importance == "taylor":  # the check cuts by magnitude: Taylor needs gradients of real data
        settings = dataclasses.replace(settings, importance="magnitude")
    cut(copy.deepcopy(model).eval(), torch.zeros(1, in_channels, image_size, image_size), 0.1, settings)
