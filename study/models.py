"""The model families: Jiang et al.'s Network-in-Network and a plain MLP.

Both are ``nn.Sequential`` with modules in forward order, BatchNorm directly
after the layer it normalises and ``nn.ReLU`` activations: the layout that
`study.measures` relies on for BN folding, path norm and unit counts.

A family is a builder ``(input_shape, num_classes, options) -> nn.Module`` and
its `Options` type, registered once with ``@register(name, OptionsType)``: the
options are the study file's ``[model]`` keys and grid axes, and the builder is
then also callable with keywords, ``mlp((64,), 10, depth=3)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

from pydantic import Field
from torch import nn

from .options import Options, did_you_mean, parse


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[..., nn.Module]   # (input_shape, num_classes, options)
    options: type[Options]


MODELS: dict[str, Family] = {}


def register(name: str, options: type[Options]):
    """Register a builder as the model family ``name`` with its options type."""
    def add(build):
        MODELS[name] = Family(name, build, options)

        @functools.wraps(build)
        def with_keywords(input_shape, num_classes: int, **given) -> nn.Module:
            return build(tuple(input_shape), num_classes, parse(options, given))
        return with_keywords
    return add


def family(name: str) -> Family:
    """The registered model family ``name``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}{did_you_mean(name, MODELS)}; models: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, input_shape, num_classes: int, **options) -> nn.Module:
    """The model ``name`` with ``options`` (unknown names and options are errors)."""
    f = family(name)
    return f.build(tuple(input_shape), num_classes, parse(f.options, options))


#: The largest width and depth a study file may give (the widest Jiang NiN is 192 channels,
#: the deepest 4 blocks); `MAX_PARAMETERS` bounds their product (`study.spec` checks it).
MAX_WIDTH, MAX_DEPTH = 2**16, 1000
#: The most parameters of a network of a study: 10⁸ (400 MB of float32 weights, before the
#: copies that training and the measures make; the largest Jiang NiN has 1.3·10⁶).
MAX_PARAMETERS = 10**8


class Layers(Options):
    depth: int = Field(2, ge=1, le=MAX_DEPTH)
    dropout: float = Field(0.0, ge=0, lt=1)
    batchnorm: bool = False


class NiNOptions(Layers):
    width: int = Field(16, ge=1, le=MAX_WIDTH)


class MLPOptions(Layers):
    width: int = Field(64, ge=1, le=MAX_WIDTH)
    bias: bool = True


@register("nin", NiNOptions)
def nin(input_shape: tuple[int, ...], num_classes: int, o: NiNOptions) -> nn.Sequential:
    """NiN as in Jiang et al. 2020: ``depth`` blocks of a 3×3 stride-2 conv and two
    1×1 convs (``width`` channels each, ReLU, optional BN), dropout after each
    block, then a 1×1 conv to the classes and global average pooling.
    ``width`` is the number of channels (Jiang's width multiplier × base)."""
    if len(input_shape) != 3:
        raise ValueError(f"nin needs image input (C, H, W), got shape {tuple(input_shape)}")
    layers: list[nn.Module] = []
    c = input_shape[0]

    def conv(cin, k, stride):
        layers.append(nn.Conv2d(cin, o.width, k, stride=stride, padding=k // 2,
                                bias=not o.batchnorm))
        if o.batchnorm:
            layers.append(nn.BatchNorm2d(o.width))
        layers.append(nn.ReLU())

    for _ in range(o.depth):
        conv(c, 3, 2)
        conv(o.width, 1, 1)
        conv(o.width, 1, 1)
        if o.dropout > 0:
            layers.append(nn.Dropout(o.dropout))
        c = o.width
    layers += [nn.Conv2d(c, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    net = nn.Sequential(*layers)
    # He initialisation: with PyTorch's default conv init the signal fades through
    # the blocks and deeper NiNs do not train at all on small images.
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    return net


@register("mlp", MLPOptions)
def mlp(input_shape: tuple[int, ...], num_classes: int, o: MLPOptions) -> nn.Sequential:
    """MLP: ``depth`` hidden layers of ``width`` ReLU units (optional BN, dropout)."""
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(input_shape)
    for _ in range(o.depth):
        layers.append(nn.Linear(d, o.width, bias=o.bias and not o.batchnorm))
        if o.batchnorm:
            layers.append(nn.BatchNorm1d(o.width))
        layers.append(nn.ReLU())
        if o.dropout > 0:
            layers.append(nn.Dropout(o.dropout))
        d = o.width
    layers.append(nn.Linear(d, num_classes, bias=o.bias))
    return nn.Sequential(*layers)
