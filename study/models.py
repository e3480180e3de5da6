"""The model families: Jiang et al.'s Network-in-Network and a plain MLP.

Both are ``nn.Sequential`` with modules in forward order, BatchNorm directly
after the layer it normalises and ``nn.ReLU`` activations: the layout that
`study.measures` relies on for BN folding, path norm and unit counts.
"""

from __future__ import annotations

import math

from torch import nn

MODELS = ("nin", "mlp")


def nin(input_shape: tuple[int, ...], num_classes: int, depth: int = 2, width: int = 16,
        dropout: float = 0.0, batchnorm: bool = False) -> nn.Sequential:
    """NiN as in Jiang et al. 2020: ``depth`` blocks of a 3×3 stride-2 conv and two
    1×1 convs (``width`` channels each, ReLU, optional BN), dropout after each
    block, then a 1×1 conv to the classes and global average pooling.
    ``width`` is the number of channels (Jiang's width multiplier × base)."""
    if len(input_shape) != 3:
        raise ValueError(f"nin needs image input (C, H, W), got shape {tuple(input_shape)}")
    layers: list[nn.Module] = []
    c = input_shape[0]

    def conv(cin, k, stride):
        layers.append(nn.Conv2d(cin, width, k, stride=stride, padding=k // 2, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())

    for _ in range(depth):
        conv(c, 3, 2)
        conv(width, 1, 1)
        conv(width, 1, 1)
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        c = width
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


def mlp(input_shape: tuple[int, ...], num_classes: int, depth: int = 2, width: int = 64,
        dropout: float = 0.0, batchnorm: bool = False, bias: bool = True) -> nn.Sequential:
    """MLP: ``depth`` hidden layers of ``width`` ReLU units (optional BN, dropout)."""
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(input_shape)
    for _ in range(depth):
        layers.append(nn.Linear(d, width, bias=bias and not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = width
    layers.append(nn.Linear(d, num_classes, bias=bias))
    return nn.Sequential(*layers)


_BUILDERS = {"nin": nin, "mlp": mlp}
_OPTIONS = {"nin": {"depth", "width", "dropout", "batchnorm"},
            "mlp": {"depth", "width", "dropout", "batchnorm", "bias"}}


def build_model(name: str, input_shape, num_classes: int, **options) -> nn.Sequential:
    """The model ``name`` with ``options`` (unknown names and options are errors)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    bad = set(options) - _OPTIONS[name]
    if bad:
        raise ValueError(f"model {name!r} has no option(s) {', '.join(sorted(bad))}; "
                         f"options: {', '.join(sorted(_OPTIONS[name]))}")
    return _BUILDERS[name](tuple(input_shape), num_classes, **options)


def model_options(name: str) -> set[str]:
    return set(_OPTIONS[name])
