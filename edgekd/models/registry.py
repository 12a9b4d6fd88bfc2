"""Models by name: torchvision classifiers, CIFAR-style nets and (with `edgekd[timm]`) timm's, sized to classes and channels."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models.cifar_resnet import CifarResNet
from edgekd.ondevice.text import did_you_mean

_CIFAR = {f"resnet{d}": partial(CifarResNet, d) for d in (8, 14, 20, 32, 44, 56, 110)}
_CIFAR["resnet8x4"] = partial(CifarResNet, 8, width=64)
_CIFAR["resnet32x4"] = partial(CifarResNet, 32, width=64)

_TORCHVISION = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "efficientnet_b0",
    "efficientnet_b1",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "squeezenet1_1",
    "mnasnet0_5",
    "convnext_tiny",
)


def model_names() -> list[str]:
    """Every name `build_model` accepts."""
    return sorted(_CIFAR) + sorted(_TORCHVISION)


TIMM_PREFIX = "timm/"


def timm_module(field: str = "model"):
    """The timm package, or an EdgekdError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise EdgekdError(f"{field}: timm models need the optional extra: pip install 'edgekd[timm]'") from None
    return timm


def _timm_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    timm = timm_module()
    base = name.partition(".")[0]
    if not timm.is_model(base):
        hint = did_you_mean(base, timm.list_models(), prefix="timm/")
        raise EdgekdError(f"unknown timm model '{name}'; {hint}`timm.list_models()` lists them")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise EdgekdError(f"model {type(model).__name__} has no Conv2d to adapt to the input channels")


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, new)


def conv_with_inputs(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A freshly initialised copy of `conv`'s geometry that takes `in_channels` (a depthwise conv stays depthwise)."""
    groups = conv.groups if conv.groups == 1 else in_channels
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups,
        conv.bias is not None,
        conv.padding_mode,
    )


def _adapt_in_channels(model: nn.Module, in_channels: int) -> None:
    """Replace the first convolution when the data has other than 3 channels."""
    name, conv = first_conv(model)
    if conv.in_channels != in_channels:
        set_module(model, name, conv_with_inputs(conv, in_channels))


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised model (no weights are downloaded)."""
    if name.startswith(TIMM_PREFIX):
        return _timm_model(name.removeprefix(TIMM_PREFIX), num_classes, in_channels)
    if name in _CIFAR:
        return _CIFAR[name](num_classes=num_classes, in_channels=in_channels)
    if name in _TORCHVISION:
        import torchvision.models as tvm  # here, not at the top: importing torchvision takes 2-3 s (torch._dynamo)

        builder: Callable[..., nn.Module] = getattr(tvm, name)
        model = builder(weights=None, num_classes=num_classes)
        _adapt_in_channels(model, in_channels)
        return model
    hint = did_you_mean(name, model_names())
    raise EdgekdError(f"unknown model '{name}'; {hint}valid models: {', '.join(model_names())}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
