"""Pretrained weights: torchvision enums, timm tags, local files; found offline, adapted to the user's classes and channels.

Nothing is downloaded unless `download` is true: torchvision weights are looked up in the torch hub
cache (torch.hub.get_dir()/checkpoints/<file of the URL>), timm weights in the Hugging Face cache,
and a missing file is an EdgekdError naming the URL, the cache path and a command that fetches it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgekd.config import is_weights_file
from edgekd.errors import EdgekdError
from edgekd.models.checkpoint import load_into, read_state_dict
from edgekd.models.inputs import InputSpec
from edgekd.models.registry import TIMM_PREFIX, build_model, conv_with_inputs, first_conv, set_module, timm_module
from edgekd.ondevice.text import did_you_mean


@dataclass(frozen=True)
class Weights:
    """Where a `weights:` value points, and what its metadata says (nothing loaded yet)."""

    kind: str  # "torchvision", "timm" or "file"
    label: str  # e.g. "ResNet50_Weights.IMAGENET1K_V2"
    path: Path | None  # the local file (cache path for torchvision/timm), None when timm has no cached file yet
    url: str | None = None
    inputs: InputSpec | None = None
    categories: tuple[str, ...] | None = None
    fetch: str = ""  # a command that puts the file in place


def describe_weights(model: str, weights: str | Path, field: str) -> Weights:
    """Resolve a `weights:` value for `model`; raises EdgekdError for unknown names (with a did-you-mean)."""
    if isinstance(weights, Path) or is_weights_file(weights):
        return Weights("file", str(weights), Path(weights))
    if model.startswith(TIMM_PREFIX):
        return _timm_weights(model.removeprefix(TIMM_PREFIX), weights, field)
    return _torchvision_weights(model, weights, field)


def _torchvision_weights(model: str, weights: str, field: str) -> Weights:
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(model)
    except (KeyError, ValueError):
        raise EdgekdError(
            f"{field}: model '{model}' has no torchvision pretrained weights; give a local file "
            f"(a state_dict .pt/.pth) or pick a torchvision model"
        ) from None
    names = list(enum.__members__)
    name = weights.rpartition(".")[2] if weights.startswith(enum.__name__ + ".") else weights
    if name not in names:
        hint = did_you_mean(name, names)
        raise EdgekdError(f"{field}: '{weights}' is not a weights name of {model}; {hint}valid: {', '.join(names)}")
    w = enum[name]
    t = w.transforms()
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
    fetch = f"curl -L --create-dirs -o {path} {w.url}"
    inputs = InputSpec(int(t.crop_size[0]), int(t.resize_size[0]), tuple(t.mean), tuple(t.std))
    return Weights("torchvision", f"{enum.__name__}.{name}", path, w.url, inputs, tuple(w.meta["categories"]), fetch)


def _timm_weights(name: str, weights: str, field: str) -> Weights:
    timm = timm_module(field)
    from huggingface_hub import constants, try_to_load_from_cache

    if weights not in ("pretrained", "DEFAULT"):
        raise EdgekdError(
            f"{field}: '{weights}' for a timm model; use `pretrained` (the tag goes in the model name, "
            f"e.g. timm/convnext_atto.d2_in1k) or a local file"
        )
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise EdgekdError(f"{field}: timm model '{name}' has no pretrained weights; add a tag, e.g. '{name}.<tag>'")
    path = None
    if cfg.hf_hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                path = Path(found)
                break
    url = f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
    size = int(cfg.input_size[-1])
    inputs = InputSpec(size, int(size / cfg.crop_pct), tuple(cfg.mean), tuple(cfg.std))
    fetch = f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""
    hub_dir = Path(constants.HF_HUB_CACHE) / f"models--{(cfg.hf_hub_id or name).replace('/', '--')}"
    return Weights("timm", f"timm:{name}", path or hub_dir, url, inputs, None, fetch)


ALLOW_DOWNLOAD_ENV = "EDGEKD_ALLOW_DOWNLOAD"  # set to 1 by `edgekd run --allow-download`


def downloads_allowed(download: bool) -> bool:
    return download or os.environ.get(ALLOW_DOWNLOAD_ENV) == "1"


def require_available(w: Weights, download: bool, field: str) -> None:
    """Raise EdgekdError unless the weights' file is here (or may be downloaded)."""
    if w.kind == "file":
        if not w.path.is_file():
            raise EdgekdError(f"{field}: weights file {w.path} not found")
        return
    if downloads_allowed(download) or (w.path is not None and w.path.is_file()):
        return
    raise EdgekdError(
        f"{field}: {w.label} is not in the local cache and downloads are off: fetch {w.url} into {w.path} "
        f"(`{w.fetch}`), or allow the download with --allow-download or `download: true`"
    )


def pretrained_model(
    model: str,
    weights: str | Path,
    num_classes: int,
    in_channels: int,
    *,
    download: bool = False,
    field: str = "weights",
    class_names: Sequence[str] | None = None,
) -> tuple[nn.Module, dict]:
    """`model` with `weights` loaded, a new head when the classes differ, the first conv fitted to `in_channels`.

    Returns the model and the choices made, for the manifest.
    """
    w = describe_weights(model, weights, field)
    require_available(w, download, field)
    if w.kind == "timm":
        return _timm_model(model.removeprefix(TIMM_PREFIX), w, num_classes, in_channels)
    if w.kind == "torchvision":
        state, names = _torchvision_state(w), w.categories
    else:
        state, names = read_state_dict(w.path)
    net = _model_for_state(model, state, w.path)
    load_into(net, state, w.path)
    head = adapt_head(net, num_classes, names, class_names, field)
    conv = adapt_first_conv(net, in_channels)
    return net, {"weights": w.label, "head": head, "first_conv": conv}


def _torchvision_state(w: Weights) -> dict:
    if w.path.is_file():
        return torch.load(w.path, map_location="cpu", weights_only=True)
    return torch.hub.load_state_dict_from_url(w.url, map_location="cpu", progress=True, weights_only=True)


def _model_for_state(model: str, state: dict, path: Path | None) -> nn.Module:
    """A fresh `model` with the class count and input channels that `state` was saved with."""
    probe = build_model(model, 10, 3)
    conv_name, _ = first_conv(probe)
    head_name, _ = classifier_head(probe)
    try:
        classes = state[f"{head_name}.weight"].shape[0]
        channels = state[f"{conv_name}.weight"].shape[1]
    except KeyError as e:
        raise EdgekdError(f"{path}: tensor {e} is missing from the weights: is it a state_dict of a {model}?") from None
    return build_model(model, int(classes), int(channels))


def classifier_head(model: nn.Module) -> tuple[str, nn.Module]:
    """The last Linear (or, for nets without one such as SqueezeNet, the last Conv2d): the layer that emits the logits."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    found = found or [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not found:
        raise EdgekdError(f"model {type(model).__name__} has no Linear or Conv2d classifier to resize")
    return found[-1]


def adapt_head(
    model: nn.Module,
    num_classes: int,
    names: Sequence[str] | None,
    class_names: Sequence[str] | None,
    field: str,
) -> str:
    """Keep the head when it already predicts the data's classes (checked by name when both are known), else a new one."""
    name, head = classifier_head(model)
    out = head.out_features if isinstance(head, nn.Linear) else head.out_channels
    if out == num_classes and (names is None or class_names is None or list(names) == list(class_names)):
        return f"{name}: kept ({out} classes)"
    if out == num_classes and names is not None and class_names is not None and set(names) == set(class_names):
        check_class_names(names, class_names, field)  # same classes, other order: named
    if isinstance(head, nn.Linear):
        new: nn.Module = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    else:
        new = nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride, head.padding)
    set_module(model, name, new)
    return f"{name}: new, {out} -> {num_classes} classes (freshly initialised)"


def adapt_first_conv(model: nn.Module, in_channels: int) -> str:
    """Fit the first convolution to `in_channels` keeping its weights: 3 -> 1 sums the kernel over its input channels."""
    name, conv = first_conv(model)
    have = conv.in_channels
    if have == in_channels:
        return f"{name}: kept ({have} input channels)"
    if conv.groups != 1 or 1 not in (have, in_channels):
        raise EdgekdError(f"{name}: cannot adapt a {have}-channel first convolution to {in_channels} channels")
    new = conv_with_inputs(conv, in_channels)
    with torch.no_grad():
        if in_channels == 1:  # a gray image x seen as (x, x, x): sum_c W_c * x
            new.weight.copy_(conv.weight.sum(1, keepdim=True))
            how = f"pretrained kernel summed over its {have} input channels"
        else:  # 1 -> C: each channel gets the kernel / C, so a gray image repeated C times gives the same output
            new.weight.copy_(conv.weight.repeat(1, in_channels, 1, 1) / in_channels)
            how = f"pretrained kernel spread over {in_channels} input channels"
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    set_module(model, name, new)
    return f"{name}: {have} -> {in_channels} input channels, {how}"


def check_class_names(found: Sequence[str], data: Sequence[str], where: str) -> None:
    """Raise EdgekdError naming the first difference between a checkpoint's class names and the data's folders."""
    found, data = list(found), list(data)
    if found == data:
        return
    if set(found) == set(data):
        i = next(i for i, (a, b) in enumerate(zip(found, data)) if a != b)
        raise EdgekdError(
            f"{where}: the checkpoint's classes are in another order than the data's folders "
            f"(index {i}: '{found[i]}' in the checkpoint, '{data[i]}' in the data); the predictions would be mislabelled"
        )
    extra = sorted(set(found) - set(data))[:5]
    missing = sorted(set(data) - set(found))[:5]
    raise EdgekdError(
        f"{where}: the checkpoint's {len(found)} classes are not the data's {len(data)} folders "
        f"(in the checkpoint only: {extra or 'none'}; in the data only: {missing or 'none'})"
    )


def _timm_model(name: str, w: Weights, num_classes: int, in_channels: int) -> tuple[nn.Module, dict]:
    timm = timm_module("weights")
    overlay = {"file": str(w.path)} if w.path is not None and w.path.is_file() else None
    net = timm.create_model(
        name, pretrained=True, num_classes=num_classes, in_chans=in_channels, pretrained_cfg_overlay=overlay
    )
    return net, {
        "weights": w.label,
        "head": f"timm: new head of {num_classes} classes",
        "first_conv": f"timm: {in_channels} input channels",
    }


def initial_model(
    model: str,
    weights: str | Path | None,
    num_classes: int,
    in_channels: int,
    *,
    download: bool = False,
    field: str = "weights",
    class_names: Sequence[str] | None = None,
) -> tuple[nn.Module, dict]:
    """The model a training stage starts from: `weights` adapted to the data, or freshly initialised."""
    if not weights:
        return build_model(model, num_classes, in_channels), {"weights": "none (random initialisation)"}
    return pretrained_model(
        model, weights, num_classes, in_channels, download=download, field=field, class_names=class_names
    )
