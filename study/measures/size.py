"""Size and capacity measures (MEASURES.md, "Size and capacity").

ω (`core.omega`) counts the weight scalars (conv kernels and linear
matrices; biases and normalisation parameters excluded); U counts
the hidden activations for one input, i.e. the elements of every
``nn.ReLU`` module's output. Both VC bounds are for piecewise-linear
networks (of any graph): they require ReLU activations (``requires``).
"""

from __future__ import annotations

import math

from . import core, weights
from .registry import Undefined, register


@register("params", "size", cite="Jiang et al. 2020")
def params(ctx):
    """ω, the number of weights (Jiang et al. 2020)."""
    return float(core.omega(ctx))


@register("vc_wl_log_w", "size", cite="Bartlett et al. 2019", requires=("relu",))
def vc_wl_log_w(ctx):
    """ω · d · log ω, the O(WL log W) VC-dimension bound (Bartlett et al. 2019)."""
    w, d = core.omega(ctx), len(weights.weight_modules(ctx.model))
    return float(w * d * math.log(w))


@register("vc_wu", "size", cite="Harvey et al. 2017", requires=("relu",))
def vc_wu(ctx):
    """ω · U, U the hidden activations for one input (Harvey et al. 2017, Θ(WU))."""
    pr = core.probe(ctx)
    if pr.activations == 0 and len(weights.weight_modules(ctx.model)) > 1:
        raise Undefined("no nn.ReLU module was called in the forward pass, so the hidden "
                        "units cannot be counted; use nn.ReLU modules as activations")
    return float(core.omega(ctx) * pr.hidden_units)
