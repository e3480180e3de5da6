"""The weight tensors W_1 … W_d of a network, BatchNorm folded (MEASURES.md, Notation).

`layers(ctx, which)` gives the conv kernels and linear matrices in forward
(registration) order, for the final weights (``"final"``) or the initial
ones (``"init"``), each BatchNorm folded into the conv or linear layer just
before it with its eval-mode statistics (the init state's own statistics
for ``"init"``). Biases and normalisation parameters are not weights, but
the folded bias is kept for the folded network.

`folded_network(ctx, which)` is a copy of the network with every BatchNorm
replaced by the identity and its conv/linear layer carrying the folded
weight and bias: in eval mode it computes the same function.

All results are memoised on the context.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from . import core
from .context import MeasureContext
from .core import BATCHNORM, CONV, LINEAR
from .registry import Undefined


@dataclass(frozen=True)
class Layer:
    """One weight layer: the folded weight (module shape) and folded bias."""
    name: str                 # module name of the conv or linear layer
    bn: str | None            # module name of the BatchNorm folded into it
    weight: torch.Tensor      # float64
    bias: torch.Tensor | None  # float64

    @property
    def is_conv(self) -> bool:
        return self.weight.dim() > 2

    @property
    def matrix(self) -> torch.Tensor:
        """The weight as a matrix: a conv kernel C_out×C_in×k×k as C_out×(C_in·k·k)."""
        return self.weight.reshape(self.weight.shape[0], -1)


def _leaves(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]


def weight_modules(model: nn.Module) -> list[tuple[str, nn.Module, str | None, nn.Module | None]]:
    """(name, conv/linear, bn name or None, bn or None) in registration order.

    A BatchNorm must be the next module after the conv or linear layer it
    normalises; anything else cannot be folded and raises ValueError.
    """
    out: list[list] = []
    prev = None
    for name, mod in _leaves(model):
        if isinstance(mod, CONV + LINEAR):
            out.append([name, mod, None, None])
        elif isinstance(mod, BATCHNORM):
            if prev is None or not isinstance(prev, CONV + LINEAR) or out[-1][2] is not None:
                raise ValueError(
                    f"BatchNorm {name!r} does not directly follow a conv or linear layer, "
                    "so it cannot be folded; register each BatchNorm right after the layer "
                    "it normalises")
            if mod.num_features != prev.weight.shape[0]:
                raise ValueError(f"BatchNorm {name!r} has {mod.num_features} features but the "
                                 f"layer before it has {prev.weight.shape[0]} outputs")
            if not mod.track_running_stats:
                raise ValueError(f"BatchNorm {name!r} keeps no running statistics "
                                 "(track_running_stats=False); it cannot be folded")
            out[-1][2], out[-1][3] = name, mod
        prev = mod
    if not out:
        raise ValueError("the network has no conv or linear layer (nn.Conv*d / nn.Linear)")
    return [tuple(o) for o in out]


def state(ctx: MeasureContext, which: str) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name: the trained ones or those at initialisation."""
    frozen = {n: p.detach() for n, p in ctx.model.named_parameters() if not p.requires_grad}
    if which == "final":
        return {**frozen, **ctx.buffers, **ctx.params}
    if which == "init":
        if ctx.init_state is None:
            raise Undefined("needs the initial weights (pass init=...)")
        return {**frozen, **ctx.init_state}
    raise ValueError(f"which must be 'final' or 'init', got {which!r}")


def fold(model: nn.Module, st: dict[str, torch.Tensor]) -> list[Layer]:
    """The weight layers of ``model`` with the tensors ``st``, BatchNorm folded (float64)."""
    def get(key: str) -> torch.Tensor:
        if key not in st:
            raise ValueError(f"the state has no tensor {key!r} (needed to fold BatchNorm "
                             "or read a weight); pass a full state dict, buffers included")
        return st[key]

    out = []
    for name, mod, bn_name, bn in weight_modules(model):
        pre = f"{name}." if name else ""
        w = get(pre + "weight").double()
        b = get(pre + "bias").double() if mod.bias is not None else None
        if bn is not None:
            bp = f"{bn_name}."
            mean, var = get(bp + "running_mean").double(), get(bp + "running_var").double()
            gamma = get(bp + "weight").double() if bn.affine else torch.ones_like(mean)
            beta = get(bp + "bias").double() if bn.affine else torch.zeros_like(mean)
            s = gamma / torch.sqrt(var + bn.eps)
            w = w * s.reshape(-1, *([1] * (w.dim() - 1)))
            b = s * ((b if b is not None else 0) - mean) + beta
        out.append(Layer(name, bn_name, w.detach(), None if b is None else b.detach()))
    return out


def layers(ctx: MeasureContext, which: str = "final") -> list[Layer]:
    """W_1 … W_d (folded) of the trained (``"final"``) or initial (``"init"``) network.
    `Undefined` where a BatchNorm would be folded into a network that is not a chain of
    layers (`core.chain_of_layers`): the layer registered before it need not be what it
    normalises, nor its output used by the BatchNorm alone."""
    def make() -> list[Layer]:
        out = fold(ctx.model, state(ctx, which))
        bns = [l.bn for l in out if l.bn is not None]
        why = core.chain_of_layers(ctx) if bns else None
        if why is not None:
            raise Undefined(f"folding BatchNorm {bns[0]!r} into the layer before it {why[0].lower()}"
                            f"{why[1:]}")
        return out
    return ctx.cached(f"weights.layers.{which}", make)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def folded_network(ctx: MeasureContext, which: str = "final",
                   dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of the network in eval mode, BatchNorm folded into the layer before it.

    ``dtype``: cast the copy (the folded weights are made in float64, so a
    float64 copy keeps them exactly). Do not modify the result: it is
    memoised; copy it first.
    """
    def build() -> nn.Module:
        st = state(ctx, which)
        net = copy.deepcopy(ctx.model).eval()
        if dtype is not None:
            net = net.to(dtype)
        with torch.no_grad():
            for k, t in net.state_dict(keep_vars=True).items():
                if k in st:
                    t.copy_(st[k])
        for layer in layers(ctx, which):
            mod = net.get_submodule(layer.name)
            dt = mod.weight.dtype
            mod.weight = nn.Parameter(layer.weight.to(dt), requires_grad=False)
            if layer.bias is not None:
                mod.bias = nn.Parameter(layer.bias.to(dt), requires_grad=False)
            if layer.bn is not None:
                _set_module(net, layer.bn, nn.Identity())
        return net
    return ctx.cached(f"weights.folded_network.{which}.{dtype}", build)
