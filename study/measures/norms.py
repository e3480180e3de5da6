"""Norm- and margin-based measures (MEASURES.md, "Norms and margin").

Every norm is of the folded weight layers W_1 … W_d of `weights.layers`
(BatchNorm folded, biases excluded), computed in float64 on the context's
device. Natural logarithms throughout. Measures that divide by the margin
use `core.gamma(ctx)`, which raises `Undefined` when γ ≤ 0.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F

from . import core, weights
from .context import MeasureContext
from .registry import Undefined, knob, register

log = logging.getLogger("study.measures")

SPEC_OP_RTOL = knob("spec_op_rtol", 1e-6,
                    "log_prod_spec_op: stop the power iteration when the estimate of ‖W‖₂² "
                    "changes by less than this relative amount")
SPEC_OP_MAX_ITER = knob("spec_op_max_iter", 1000,
                        "log_prod_spec_op: most power-iteration steps per conv layer")

JIANG = "Jiang et al. 2020"
# The bounds behind products and sums of per-layer norms and the path norm hold for a
# chain of layers with positively homogeneous 1-Lipschitz activations (ReLU): elsewhere
# their numbers are silently wrong, so they are NaN with the reason (`core` requirements).
RELU_CHAIN = ("relu", "chain")


# -- per-layer norms -----------------------------------------------------------

def _spec2(m: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(m.double(), ord=2).item() ** 2


def _fro2(m: torch.Tensor) -> float:
    return m.double().pow(2).sum().item()


def _norms(ctx: MeasureContext) -> dict[str, list[float]]:
    """Squared spectral and Frobenius norms of each W_l."""
    def compute():
        ls = weights.layers(ctx)
        return {"spec2": [_spec2(l.matrix) for l in ls], "fro2": [_fro2(l.matrix) for l in ls]}
    return ctx.cached("norms.final", compute)


def _dist_norms(ctx: MeasureContext) -> dict[str, list[float]]:
    """Squared spectral and Frobenius norms of each W_l − W0_l."""
    def compute():
        ls, l0 = weights.layers(ctx), weights.layers(ctx, "init")
        diffs = []
        for a, b in zip(ls, l0, strict=True):
            if a.weight.shape != b.weight.shape:
                raise ValueError(f"layer {a.name!r}: initial weight has shape "
                                 f"{tuple(b.weight.shape)}, final {tuple(a.weight.shape)}")
            diffs.append(a.matrix.double() - b.matrix.double().to(a.matrix.device))
        return {"spec2": [_spec2(m) for m in diffs], "fro2": [_fro2(m) for m in diffs]}
    return ctx.cached("norms.dist", compute)


def _logs(values: list[float], what: str) -> list[float]:
    for i, v in enumerate(values):
        if not v > 0:
            raise Undefined(f"{what} of weight layer {i + 1} is {v:.4g}; its log is undefined")
    return [math.log(v) for v in values]


def _log_gamma2(ctx: MeasureContext) -> float:
    return 2 * math.log(core.gamma(ctx))


def _log_sum_over_margin(ctx: MeasureContext, logs: list[float]) -> float:
    """log d + (1/d)(Σ_l logs_l − log γ²): γ² inside the 1/d power, as in Jiang et al.'s
    d·(Π_l ‖W_l‖²/γ²)^{1/d} (scaling every layer of a bias-free ReLU chain by c scales
    Π_l ‖W_l‖² and γ² alike by c^{2d})."""
    return math.log(len(logs)) + (sum(logs) - _log_gamma2(ctx)) / len(logs)


# -- the true operator norm of a convolution ---------------------------------

_CONV = {1: (F.conv1d, F.conv_transpose1d), 2: (F.conv2d, F.conv_transpose2d),
         3: (F.conv3d, F.conv_transpose3d)}


def conv_maps(weight: torch.Tensor, op: core.ConvOp):
    """The convolution (bias-free) at ``op.in_shape`` and its adjoint, as functions of a batch."""
    nd = weight.dim() - 2
    conv, conv_t = _CONV[nd]
    pre_pad = op.padding_mode != "zeros" or isinstance(op.padding, str)
    pad = 0 if pre_pad else op.padding

    def fwd(x):
        if pre_pad:
            mode = "constant" if op.padding_mode == "zeros" else op.padding_mode
            x = F.pad(x, op.reversed_padding, mode=mode)
        return conv(x, weight, None, op.stride, pad, op.dilation, op.groups)

    if pre_pad:  # the adjoint of pad-then-conv, by reverse-mode differentiation
        def adj(y):
            with torch.enable_grad():
                x = torch.zeros((y.shape[0], *op.in_shape), dtype=y.dtype, device=y.device,
                                requires_grad=True)
                return torch.autograd.grad(fwd(x), x, y)[0]
        return fwd, adj

    k = weight.shape[2:]
    def adj(y):
        out_pad = [op.in_shape[1 + i] - ((y.shape[2 + i] - 1) * op.stride[i] - 2 * pad[i]
                                        + op.dilation[i] * (k[i] - 1) + 1) for i in range(nd)]
        return conv_t(y, weight, None, op.stride, pad, out_pad, op.groups, op.dilation)
    return fwd, adj


def conv_operator_norm(weight: torch.Tensor, op: core.ConvOp, gen: torch.Generator,
                       rtol: float, max_iter: int) -> tuple[float, int]:
    """‖A‖₂ of the convolution A at ``op.in_shape``, by power iteration on AᵀA.

    Returns the estimate and the steps taken (``max_iter`` + 1 when the
    tolerance was not met). The start is drawn on the CPU from ``gen``.
    """
    w = weight.double()
    fwd, adj = conv_maps(w, op)
    v = torch.randn((1, *op.in_shape), generator=gen, dtype=torch.float64).to(w.device)
    v = v / v.norm()
    prev = None
    for step in range(1, max_iter + 1):
        u = fwd(v)
        s2 = u.pow(2).sum().item()       # Rayleigh quotient vᵀAᵀAv, ‖v‖ = 1
        g = adj(u)
        gn = g.norm()
        if gn.item() == 0.0:
            return 0.0, step
        v = g / gn
        if prev is not None and abs(s2 - prev) <= rtol * s2:
            return math.sqrt(s2), step
        prev = s2
    return math.sqrt(s2), max_iter + 1


def operator_spec2(ctx: MeasureContext) -> list[float]:
    """‖W_l‖₂² with each conv taken as its linear operator at the layer's input size."""
    def compute():
        ops = core.probe(ctx).conv_ops
        gen = ctx.generator("log_prod_spec_op")
        rtol, max_iter = float(ctx.knob(SPEC_OP_RTOL)), int(ctx.knob(SPEC_OP_MAX_ITER))
        out = []
        for l in weights.layers(ctx):
            if not l.is_conv:
                out.append(_spec2(l.matrix))
                continue
            if l.name not in ops:
                raise ValueError(f"conv layer {l.name!r} was not called in the forward pass")
            s, steps = conv_operator_norm(l.weight, ops[l.name], gen, rtol, max_iter)
            if steps > max_iter:
                log.warning("log_prod_spec_op: power iteration on %s did not reach rtol %g "
                            "in %d steps", l.name, rtol, max_iter)
            out.append(s * s)
        return out
    return ctx.cached("norms.operator_spec2", compute)


# -- path norm -------------------------------------------------------------------

_PATH_OK = core.CONV + core.LINEAR


def path_norm_value(ctx: MeasureContext) -> float:
    """Σ_paths Π w²: the summed outputs, on an all-ones input, of the network with every
    parameter squared (biases included, BN folded), in float64 (cached)."""
    def compute():
        net = copy.deepcopy(weights.folded_network(ctx, dtype=torch.float64))
        for name, mod in net.named_modules():
            own = list(mod.parameters(recurse=False))
            if own and not isinstance(mod, _PATH_OK):
                raise Undefined(f"path norm needs a network of conv/linear layers, but module "
                                f"{name!r} ({type(mod).__name__}) has parameters")
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(p * p)
            ones = torch.ones((1, *ctx.x.shape[1:]), dtype=torch.float64, device=ctx.device)
            return net(ones).sum().item()
    return ctx.cached("norms.path_norm", compute)


# -- the measures ------------------------------------------------------------------

@register("inverse_margin", "norm", cite=JIANG)
def inverse_margin(ctx):
    """1/γ², γ the 10th percentile of the training margins (Jiang et al. 2020)."""
    return 1.0 / core.gamma(ctx) ** 2


@register("log_prod_spec", "norm", cite="Bartlett et al. 2017; Jiang et al. 2020",
          requires=RELU_CHAIN)
def log_prod_spec(ctx):
    """Σ_l log ‖W_l‖₂² (Bartlett et al. 2017; Jiang et al. 2020)."""
    return sum(_logs(_norms(ctx)["spec2"], "‖W‖₂²"))


@register("log_prod_spec_over_margin", "norm", cite="Bartlett et al. 2017; Jiang et al. 2020",
          requires=RELU_CHAIN)
def log_prod_spec_over_margin(ctx):
    """Σ_l log ‖W_l‖₂² − 2 log γ (Bartlett et al. 2017; Jiang et al. 2020)."""
    return sum(_logs(_norms(ctx)["spec2"], "‖W‖₂²")) - _log_gamma2(ctx)


@register("log_sum_spec", "norm", cite=JIANG,
          requires=RELU_CHAIN)
def log_sum_spec(ctx):
    """log d + (1/d) Σ_l log ‖W_l‖₂² (Jiang et al. 2020)."""
    s = _logs(_norms(ctx)["spec2"], "‖W‖₂²")
    return math.log(len(s)) + sum(s) / len(s)


# version 2: version 1 subtracted log γ² outside the 1/d power (not rescaling-invariant)
@register("log_sum_spec_over_margin", "norm", cite=JIANG, version=2,
          requires=RELU_CHAIN)
def log_sum_spec_over_margin(ctx):
    """log d + (1/d) (Σ_l log ‖W_l‖₂² − log γ²): the log of d·(Π_l ‖W_l‖₂²/γ²)^{1/d}, invariant
    to rescaling the layers like its product form (Jiang et al. 2020)."""
    return _log_sum_over_margin(ctx, _logs(_norms(ctx)["spec2"], "‖W‖₂²"))


def _spec_main(ctx, numerators: list[float], what: str) -> float:
    spec2 = _norms(ctx)["spec2"]
    logs = _logs(spec2, "‖W‖₂²")
    ratio = sum(n / s for n, s in zip(numerators, spec2))
    if not ratio > 0:
        raise Undefined(f"Σ_l {what}/‖W_l‖₂² is {ratio:.4g}; its log is undefined")
    return sum(logs) - _log_gamma2(ctx) + math.log(ratio)


@register("log_spec_init_main", "norm", cite="Neyshabur et al. 2018; Jiang et al. 2020",
          needs=("init",),
          requires=RELU_CHAIN)
def log_spec_init_main(ctx):
    """Σ_l log ‖W_l‖₂² − 2 log γ + log Σ_l ‖W_l − W0_l‖_F²/‖W_l‖₂²
    (Neyshabur et al. 2018; Jiang et al. 2020)."""
    return _spec_main(ctx, _dist_norms(ctx)["fro2"], "‖W_l − W0_l‖_F²")


@register("log_spec_orig_main", "norm", cite="Bartlett et al. 2017; Jiang et al. 2020",
          requires=RELU_CHAIN)
def log_spec_orig_main(ctx):
    """Σ_l log ‖W_l‖₂² − 2 log γ + log Σ_l ‖W_l‖_F²/‖W_l‖₂²
    (Bartlett et al. 2017; Jiang et al. 2020)."""
    return _spec_main(ctx, _norms(ctx)["fro2"], "‖W_l‖_F²")


@register("fro_over_spec", "norm", cite=JIANG)
def fro_over_spec(ctx):
    """Σ_l ‖W_l‖_F²/‖W_l‖₂² (Jiang et al. 2020)."""
    n = _norms(ctx)
    _logs(n["spec2"], "‖W‖₂²")
    return sum(f / s for f, s in zip(n["fro2"], n["spec2"]))


@register("dist_spec_init", "norm", cite=JIANG, needs=("init",))
def dist_spec_init(ctx):
    """Σ_l ‖W_l − W0_l‖₂² (Jiang et al. 2020)."""
    return sum(_dist_norms(ctx)["spec2"])


@register("log_prod_fro", "norm", cite="Neyshabur et al. 2015; Jiang et al. 2020",
          requires=RELU_CHAIN)
def log_prod_fro(ctx):
    """Σ_l log ‖W_l‖_F² (Neyshabur et al. 2015; Jiang et al. 2020)."""
    return sum(_logs(_norms(ctx)["fro2"], "‖W‖_F²"))


@register("log_prod_fro_over_margin", "norm", cite="Neyshabur et al. 2015; Jiang et al. 2020",
          requires=RELU_CHAIN)
def log_prod_fro_over_margin(ctx):
    """Σ_l log ‖W_l‖_F² − 2 log γ (Neyshabur et al. 2015; Jiang et al. 2020)."""
    return sum(_logs(_norms(ctx)["fro2"], "‖W‖_F²")) - _log_gamma2(ctx)


@register("log_sum_fro", "norm", cite=JIANG,
          requires=RELU_CHAIN)
def log_sum_fro(ctx):
    """log d + (1/d) Σ_l log ‖W_l‖_F² (Jiang et al. 2020)."""
    s = _logs(_norms(ctx)["fro2"], "‖W‖_F²")
    return math.log(len(s)) + sum(s) / len(s)


# version 2: version 1 subtracted log γ² outside the 1/d power (not rescaling-invariant)
@register("log_sum_fro_over_margin", "norm", cite=JIANG, version=2,
          requires=RELU_CHAIN)
def log_sum_fro_over_margin(ctx):
    """log d + (1/d) (Σ_l log ‖W_l‖_F² − log γ²): the log of d·(Π_l ‖W_l‖_F²/γ²)^{1/d}, invariant
    to rescaling the layers like its product form (Jiang et al. 2020)."""
    return _log_sum_over_margin(ctx, _logs(_norms(ctx)["fro2"], "‖W‖_F²"))


@register("param_norm", "norm", cite=JIANG)
def param_norm(ctx):
    """Σ_l ‖W_l‖_F² (Jiang et al. 2020)."""
    return sum(_norms(ctx)["fro2"])


@register("fro_dist", "norm", cite="Nagarajan & Kolter 2019; Jiang et al. 2020",
          needs=("init",))
def fro_dist(ctx):
    """Σ_l ‖W_l − W0_l‖_F², the distance from initialisation
    (Nagarajan & Kolter 2019; Jiang et al. 2020)."""
    return sum(_dist_norms(ctx)["fro2"])


@register("path_norm", "norm", cite="Neyshabur et al. 2015; Jiang et al. 2020",
          requires=RELU_CHAIN)
def path_norm(ctx):
    """Σ_paths Π w²: the summed outputs, on an all-ones input, of the folded network
    with every parameter (biases included) squared (Neyshabur et al. 2015; Jiang et al. 2020)."""
    return path_norm_value(ctx)


@register("path_norm_over_margin", "norm", cite="Neyshabur et al. 2015; Jiang et al. 2020",
          requires=RELU_CHAIN)
def path_norm_over_margin(ctx):
    """path_norm / γ² (Neyshabur et al. 2015; Jiang et al. 2020)."""
    return path_norm_value(ctx) / core.gamma(ctx) ** 2


@register("log_prod_spec_op", "norm", cite="Sedghi et al. 2019; Bartlett et al. 2017",
          knobs=(SPEC_OP_RTOL, SPEC_OP_MAX_ITER), stochastic=True,
          requires=RELU_CHAIN)
def log_prod_spec_op(ctx):
    """Σ_l log ‖W_l‖₂², each conv's ‖W_l‖₂ the operator norm of the convolution at its
    input size (stride, padding included), by power iteration on the conv and its
    transpose (Sedghi et al. 2019; Bartlett et al. 2017)."""
    return sum(_logs(operator_spec2(ctx), "operator ‖W‖₂²"))
