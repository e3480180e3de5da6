"""Sharpness at the minimum (MEASURES.md, "Sharpness and curvature at the minimum"):
Keskar's ζ, expected sharpness, adaptive worst-case sharpness,
filter-normalised sharpness and Entropy-SGD's local energy.

Every quantity is a function of the flat parameter vector ``w`` and the mean
cross-entropy ``L`` on the measure set, the network in eval mode, computed by
`core` (perturbed losses batched with vmap, gradients, the ``memory_mb`` budget).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import Bounds, minimize

from ..schema import ARTIFACTS
from . import core
from .context import EVAL_BATCH, MeasureContext
from .registry import Undefined, knob, register


def minibatch_index(ctx: MeasureContext, gen: torch.Generator, batch_size: int,
                    n_batches: int) -> torch.Tensor:
    """``n_batches`` × ``batch_size`` example indices: consecutive slices of seeded
    permutations of the measure set (a fresh permutation when one is used up). A measure
    set smaller than ``batch_size`` gives whole-set batches."""
    n = len(ctx.x)
    if n <= batch_size:
        return torch.arange(n).repeat(n_batches, 1).to(ctx.device)
    per_perm = n // batch_size
    rows = []
    while len(rows) < n_batches:
        perm = torch.randperm(n, generator=gen)
        rows += [perm[i * batch_size:(i + 1) * batch_size] for i in range(per_perm)]
    return torch.stack(rows[:n_batches]).to(ctx.device)


# -- Keskar et al. 2017 -----------------------------------------------------------

KESKAR_ITERS = knob("keskar_maxiter", 10, "L-BFGS-B iterations of Keskar's sharpness")
KESKAR_N = knob("keskar_examples", 512,
                "examples of Keskar's sharpness (a seeded subset; 0: the whole measure set)", ge=0)


def keskar(ctx: MeasureContext, eps: float, maxiter: int) -> float:
    """ζ(w; ε) = 100 (max_{|v_i| ≤ ε(|w_i|+1)} L(w+v) − L(w)) / (1 + L(w)), L on a seeded
    subset of ``keskar_examples`` examples; the maximum by scipy's L-BFGS-B (box bounds,
    ``maxiter`` iterations, start v = 0, float64 on the scipy side, gradient by autograd).

    Each evaluation is one pass over the subset (chunks of ``eval_batch``): v is copied once
    into a kept buffer in the network's dtype and device, w + v written in place, the loss
    and its gradient taken with respect to the parameter tensors (views of that buffer, not
    the flat vector), the gradient written straight into the float64 array handed to scipy.
    """
    w = core.flat(ctx)
    idx = ctx.subset(int(ctx.knob(KESKAR_N)), "keskar")
    x, y = ctx.x[idx], ctx.y[idx]
    b = int(ctx.knob(EVAL_BATCH))
    chunks = [(x[i:i + b], y[i:i + b]) for i in range(0, len(x), b)]
    bound = (eps * (w.abs() + 1)).double().cpu().numpy()
    wv = torch.empty_like(w)            # w + v, in the network's dtype, on its device
    v_dev = torch.empty_like(w)
    shapes = [(name, p.shape, p.numel()) for name, p in ctx.params.items()]
    seen = {}

    def neg_loss(v: np.ndarray):
        v_dev.copy_(torch.from_numpy(v))  # one host→device copy, float64→dtype on the way
        torch.add(w, v_dev, out=wv)
        params, j = {}, 0
        for name, shape, k in shapes:
            params[name] = wv[j:j + k].view(shape).detach().requires_grad_(True)
            j += k
        leaves = list(params.values())
        total, grads = 0.0, None
        for xb, yb in chunks:
            L = core.ce_sum(ctx.forward(params, xb), yb)
            gs = torch.autograd.grad(L, leaves)
            total = total + L.detach()
            grads = gs if grads is None else [a + c for a, c in zip(grads, gs)]
        L = float(total / len(x))
        # a fresh array each call: scipy may keep the previous gradient it was handed
        g_host, j = np.empty(len(bound)), 0
        g_view = torch.from_numpy(g_host)
        for (_, _, k), g in zip(shapes, grads):
            g_view[j:j + k].copy_((g / len(x)).reshape(-1))
            j += k
        np.negative(g_host, out=g_host)
        seen.setdefault("L0", L)
        return -L, g_host

    fun = lbfgsb_box(neg_loss, -bound, bound, int(maxiter))
    L0 = seen["L0"]  # the first evaluation is at v = 0
    return 100.0 * (max(-fun, L0) - L0) / (1.0 + L0)


def lbfgsb_box(fg, lo: np.ndarray, hi: np.ndarray, maxiter: int) -> float:
    """min f over the box lo ≤ v ≤ hi (finite) from v = 0 by scipy's L-BFGS-B with
    ``minimize``'s defaults (10 corrections, ftol 2.2e-9, gtol 1e-5, 20 line-search steps);
    ``fg(v)`` gives (f, ∇f as a fresh float64 array). Returns the final f.

    Drives scipy's own routine (``scipy.optimize._lbfgsb.setulb``) the way ``minimize``
    does, iterate for iterate, but without its per-variable Python loops over the bounds
    (~0.7 s a call at 42k parameters, more than the ten iterations); where that private
    routine's signature differs (another scipy), ``minimize`` itself.
    """
    n, m, maxls = len(lo), 10, 20
    factr, pgtol = 2.2204460492503131e-09 / np.finfo(float).eps, 1e-5
    x, f, g = np.zeros(n), np.array(0.0), np.zeros(n)
    low, up, nbd = np.ascontiguousarray(lo, np.float64), np.ascontiguousarray(hi, np.float64), \
        np.full(n, 2, np.int32)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m)
    iwa, task, ln_task = np.zeros(3 * n, np.int32), np.zeros(2, np.int32), np.zeros(2, np.int32)
    lsave, isave, dsave = np.zeros(4, np.int32), np.zeros(44, np.int32), np.zeros(29)
    try:
        from scipy.optimize import _lbfgsb
        _lbfgsb.setulb(m, x, low, up, nbd, f, g, factr, pgtol, wa, iwa, task, lsave, isave,
                       dsave, maxls, ln_task)
    except (ImportError, AttributeError, TypeError, ValueError):
        res = minimize(fg, np.zeros(n), jac=True, method="L-BFGS-B", bounds=Bounds(lo, hi),
                       options={"maxiter": maxiter})
        return float(res.fun)
    iters = evals = 0
    while True:
        if task[0] == 3:  # evaluate f and ∇f at x
            f, g = fg(x.copy())
            f, g, evals = float(f), np.asarray(g, np.float64), evals + 1
        elif task[0] == 1:  # a new iterate
            iters += 1
            if iters >= maxiter:
                task[0], task[1] = 5, 504
            elif evals > 15000:
                task[0], task[1] = 5, 502
        else:
            return float(f)
        _lbfgsb.setulb(m, x, low, up, nbd, f, g, factr, pgtol, wa, iwa, task, lsave, isave,
                       dsave, maxls, ln_task)


@register("keskar_sharpness_1e-3", "curvature", cite="Keskar et al. 2017",
          knobs=(KESKAR_ITERS, KESKAR_N), stochastic=True)
def keskar_sharpness_1e3(ctx):
    """Keskar's ζ(w; 1e-3) by L-BFGS-B in the box |v_i| ≤ 1e-3(|w_i|+1) (Keskar et al. 2017)."""
    return keskar(ctx, 1e-3, ctx.knob(KESKAR_ITERS))


@register("keskar_sharpness_5e-4", "curvature", cite="Keskar et al. 2017",
          knobs=(KESKAR_ITERS, KESKAR_N), stochastic=True)
def keskar_sharpness_5e4(ctx):
    """Keskar's ζ(w; 5e-4) by L-BFGS-B in the box |v_i| ≤ 5e-4(|w_i|+1) (Keskar et al. 2017)."""
    return keskar(ctx, 5e-4, ctx.knob(KESKAR_ITERS))


# -- expected sharpness (Neyshabur et al. 2017) -----------------------------------

ES_RHO = knob("expected_sharpness_rho", 0.01,
              "ρ of expected_sharpness: u ~ N(0, ρ²I)")
ES_MAG_RHO = knob("expected_sharpness_mag_rho", 0.1,
                  "ρ of expected_sharpness_mag: u_i ~ N(0, ρ²w_i²)")
ES_DRAWS = knob("expected_sharpness_draws", 16,
                "Monte-Carlo draws of the expected sharpness measures")


def expected_sharpness_value(ctx: MeasureContext, name: str, scale: torch.Tensor,
                             draws: int) -> float:
    """mean_d L(w + scale ⊙ z_d) − L(w), z_d ~ N(0, I) drawn one vector at a time, in order,
    from ``ctx.generator(name)``; the perturbed losses batched with vmap."""
    w = core.flat(ctx)
    gen = ctx.generator(name)
    k = core.fit(ctx, 4 * w.numel() * core.itemsize(ctx))  # draws held at once
    total, done = 0.0, 0
    while done < draws:
        c = min(k, draws - done)
        U = torch.stack([ctx.randn(gen, w.numel()) for _ in range(c)]) * scale
        total += float(core.losses(ctx, w + U).sum())
        done += c
    return total / draws - float(core.loss_w(ctx))


@register("expected_sharpness", "curvature", cite="Neyshabur et al. 2017",
          knobs=(ES_RHO, ES_DRAWS, core.MEMORY_MB), stochastic=True)
def expected_sharpness(ctx):
    """E_{u~N(0,ρ²I)} L(w+u) − L(w), Monte-Carlo (Neyshabur et al. 2017)."""
    w = core.flat(ctx)
    return expected_sharpness_value(ctx, "expected_sharpness",
                                    torch.full_like(w, float(ctx.knob(ES_RHO))),
                                    int(ctx.knob(ES_DRAWS)))


@register("expected_sharpness_mag", "curvature", cite="Neyshabur et al. 2017",
          knobs=(ES_MAG_RHO, ES_DRAWS, core.MEMORY_MB), stochastic=True)
def expected_sharpness_mag(ctx):
    """E L(w+u) − L(w), u_i ~ N(0, ρ²w_i²), Monte-Carlo (Neyshabur et al. 2017)."""
    w = core.flat(ctx)
    return expected_sharpness_value(ctx, "expected_sharpness_mag",
                                    float(ctx.knob(ES_MAG_RHO)) * w.abs(),
                                    int(ctx.knob(ES_DRAWS)))


# -- adaptive worst-case sharpness (Andriushchenko et al. 2023) -------------------

AS_RHO_LINF = knob("adaptive_rho_linf", 0.01, "ρ of adaptive_sharpness_linf: |v_i| ≤ ρ|w_i|")
AS_RHO_L2 = knob("adaptive_rho_l2", 0.2, "ρ of adaptive_sharpness_l2: ‖v/|w|‖₂ ≤ ρ")
AS_STEPS = knob("adaptive_steps", 20, "projected gradient-ascent steps of adaptive sharpness")
AS_BATCHES = knob("adaptive_batches", 4, "mini-batches averaged by adaptive sharpness")
AS_BATCH = knob("adaptive_batch_size", 128, "mini-batch size of adaptive sharpness")


def _project(Z: torch.Tensor, p: float, rho: float) -> torch.Tensor:
    if p == math.inf:
        return Z.clamp(-rho, rho)
    norm = Z.norm(dim=1, keepdim=True)
    return Z * (rho / norm.clamp_min(rho))


def adaptive_sharpness(ctx: MeasureContext, p: float, rho: float, steps: int,
                       n_batches: int, batch_size: int, name: str):
    """Worst-case adaptive sharpness, one ascent per mini-batch, all batches vmapped.

    In z = v/|w| (v_i = 0 where w_i = 0) each batch runs ``steps`` projected gradient-ascent
    steps from z = 0 with step 2.5ρ/steps (sign of the gradient for p = ∞, the normalised
    gradient for p = 2), keeping its best iterate. Returns (mean over batches of
    max_z L_B(w+|w|z) − L_B(w), the best z per batch, the batch indices).
    """
    if p not in (2, math.inf):
        raise ValueError(f"adaptive sharpness supports p = 2 or inf, got {p}")
    w = core.flat(ctx)
    c = w.abs()
    idx = minibatch_index(ctx, ctx.generator(name), batch_size, n_batches)
    X, Y = ctx.x[idx], ctx.y[idx]
    Z = torch.zeros(len(idx), w.numel(), dtype=w.dtype, device=w.device)
    best_z, best = Z.clone(), torch.zeros(len(idx), dtype=w.dtype, device=w.device)
    step = 2.5 * rho / max(steps, 1)
    L0 = None
    for t in range(steps + 1):
        L, G = core.batch_losses_and_grads(ctx, w + c * Z, X, Y)
        if L0 is None:
            L0 = L
        gain = L - L0
        better = gain > best
        best = torch.where(better, gain, best)
        best_z[better] = Z[better]
        if t == steps:
            break
        Gz = c * G
        if p == math.inf:
            Z = Z + step * Gz.sign()
        else:
            Z = Z + step * Gz / Gz.norm(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        Z = _project(Z, p, rho)
    return float(best.mean()), best_z, idx


@register("adaptive_sharpness_linf", "curvature", cite="Andriushchenko et al. 2023",
          knobs=(AS_RHO_LINF, AS_STEPS, AS_BATCHES, AS_BATCH, core.MEMORY_MB), stochastic=True)
def adaptive_sharpness_linf(ctx):
    """max_{‖v/|w|‖_∞ ≤ ρ} L_B(w+v) − L_B(w), mean over mini-batches (Andriushchenko et al. 2023)."""
    return adaptive_sharpness(ctx, math.inf, float(ctx.knob(AS_RHO_LINF)), int(ctx.knob(AS_STEPS)),
                              int(ctx.knob(AS_BATCHES)), int(ctx.knob(AS_BATCH)),
                              "adaptive_sharpness_linf")[0]


@register("adaptive_sharpness_l2", "curvature", cite="Andriushchenko et al. 2023",
          knobs=(AS_RHO_L2, AS_STEPS, AS_BATCHES, AS_BATCH, core.MEMORY_MB), stochastic=True)
def adaptive_sharpness_l2(ctx):
    """max_{‖v/|w|‖₂ ≤ ρ} L_B(w+v) − L_B(w), mean over mini-batches (Andriushchenko et al. 2023)."""
    return adaptive_sharpness(ctx, 2, float(ctx.knob(AS_RHO_L2)), int(ctx.knob(AS_STEPS)),
                              int(ctx.knob(AS_BATCHES)), int(ctx.knob(AS_BATCH)),
                              "adaptive_sharpness_l2")[0]


# -- filter-normalised sharpness (Li et al. 2018) ---------------------------------

FS_DIRS = knob("filter_directions", 8, "random filter-normalised directions of filter_sharpness "
               "(reliability 0.85 at 8 on the mini study, 0.90 at 12, beyond the cost budget)")
FS_RADIUS = knob("filter_radius", 0.1, "radius r of filter_sharpness: L(w + r·δ) − L(w)")
FILTER_T = ARTIFACTS["filter_sharpness_t"].grid  # curve grid, in units of r (the row schema's)
LS_POINTS = knob("loss_surface_points", 0, "N of filter_sharpness's optional 2-D loss surface "
                 "(Li et al. 2018): N × N losses over two random filter-normalised directions, "
                 "a, b from the least to the largest filter_sharpness t (N² loss evaluations); "
                 "0: not computed", artifact=True)


def filter_directions(ctx: MeasureContext, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` random directions (k × P), filter-normalised as in Li et al. 2018.

    For each parameter tensor with two or more dimensions (conv kernel, linear matrix) a
    Gaussian tensor is drawn and each filter (slice along the output dimension 0) is
    rescaled to the norm of the same filter of w. One-dimensional parameters (biases, BN
    scales and shifts) get direction 0, as in Li et al.'s experiments.
    """
    rows = []
    for _ in range(k):
        parts = []
        for p in ctx.params.values():
            if p.dim() < 2:
                parts.append(torch.zeros(p.numel(), dtype=p.dtype, device=p.device))
                continue
            d = ctx.randn(gen, *p.shape).reshape(len(p), -1)
            wn = p.reshape(len(p), -1).norm(dim=1, keepdim=True)
            dn = d.norm(dim=1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
            parts.append((d * (wn / dn)).reshape(-1))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def filter_sharpness_curves(ctx: MeasureContext, k: int, r: float):
    """(directions, t grid, K × T losses L(w + t·δ_k)) with t = r·FILTER_T; t = 0 is L(w)."""
    w = core.flat(ctx)
    D = filter_directions(ctx, k, ctx.generator("filter_sharpness"))
    t = torch.tensor(FILTER_T, dtype=w.dtype, device=w.device) * r
    nz = t != 0
    W = (w + t[nz][None, :, None] * D[:, None, :]).reshape(-1, w.numel())
    curves = torch.empty(k, len(t), dtype=w.dtype, device=w.device)
    curves[:, nz] = core.losses(ctx, W).reshape(k, -1)
    curves[:, ~nz] = core.loss_w(ctx)
    return D, t, curves


def loss_surface(ctx: MeasureContext, n: int, r: float):
    """(directions δ₁, δ₂ as 2 × P, grid a of N steps, N × N losses L(w + a_i·δ₁ + a_j·δ₂)):
    Li et al. 2018's 2-D filter-normalised surface. The directions are `filter_directions`
    drawn from ``ctx.generator("loss_surface")`` (not filter_sharpness's stream, whose value
    stays the same); a runs evenly from r·min(FILTER_T) to r·max(FILTER_T) (N = 1: a = 0)."""
    w = core.flat(ctx)
    D = filter_directions(ctx, 2, ctx.generator("loss_surface"))
    lo, hi = r * min(FILTER_T), r * max(FILTER_T)
    a = (torch.linspace(lo, hi, n, dtype=w.dtype, device=w.device) if n > 1
         else torch.zeros(1, dtype=w.dtype, device=w.device))
    A, B = torch.meshgrid(a, a, indexing="ij")
    W = w + A.reshape(-1, 1) * D[0] + B.reshape(-1, 1) * D[1]
    return D, a, core.losses(ctx, W).reshape(n, n)


@register("filter_sharpness", "curvature", cite="Li et al. 2018",
          knobs=(FS_DIRS, FS_RADIUS, LS_POINTS, core.MEMORY_MB), stochastic=True)
def filter_sharpness(ctx):
    """mean_k L(w + r·δ_k) − L(w) over random filter-normalised directions δ_k (Li et al. 2018).
    Keeps the 1-D curves in ``artifacts["filter_sharpness_t"]`` and
    ``artifacts["filter_sharpness_curves"]`` (K × T, row-major); with ``loss_surface_points``
    = N > 0 also the 2-D surface (`loss_surface`) in ``artifacts["loss_surface_t"]`` and
    ``artifacts["loss_surface"]`` (N × N, row-major), its cost charged to this measure."""
    k, r = int(ctx.knob(FS_DIRS)), float(ctx.knob(FS_RADIUS))
    _, t, curves = filter_sharpness_curves(ctx, k, r)
    ctx.artifacts["filter_sharpness_t"] = t.tolist()
    ctx.artifacts["filter_sharpness_curves"] = curves.reshape(-1).tolist()
    n = int(ctx.knob(LS_POINTS))
    if n:
        _, a, surface = loss_surface(ctx, n, r)
        ctx.artifacts["loss_surface_t"] = a.tolist()
        ctx.artifacts["loss_surface"] = surface.reshape(-1).tolist()
    at_r = FILTER_T.index(1.0)
    return float(curves[:, at_r].mean() - core.loss_w(ctx))


# -- local entropy (Chaudhari et al. 2019) ----------------------------------------

LE_GAMMA = knob("local_entropy_gamma", 1e4, "scope γ of local_entropy's coupling (γ/2)‖w'−w‖²")
LE_TEMP = knob("local_entropy_temperature", 1e-3, "temperature T of local_entropy")
LE_STEPS = knob("local_entropy_steps", 30, "SGLD steps of local_entropy (reliability 0.70 at 30 "
                "on the mini study, 0.85 at 50, beyond the cost budget)")
LE_LR = knob("local_entropy_lr", 2e-5, "SGLD step size η of local_entropy (stable for η(γ + λ_max/T) < 2)")
LE_BURNIN = knob("local_entropy_burnin", 5, "SGLD steps of local_entropy left out of the mean", ge=0)
LE_BATCH = knob("local_entropy_batch_size", 128, "mini-batch size of local_entropy's SGLD")
LE_HALVINGS = 4  # a diverged chain is rerun with η/2, at most this many times (local_entropy)


def sgld_mean_loss(loss_grad, w: torch.Tensor, gamma: float, temperature: float, steps: int,
                   lr: float, burnin: int, noise) -> float:
    """Mean of L(w'_k), k = burnin+1 … steps, along the SGLD chain w'_0 = w,
    w'_{k+1} = w'_k − η (∇L(w'_k)/T + γ(w'_k − w)) + √(2η) ξ_k,
    which samples p(w') ∝ exp(−L(w')/T − (γ/2)‖w' − w‖²) as η → 0.

    ``loss_grad(v, k)`` gives (L, ∇L) at v for step k (a mini-batch estimate);
    ``noise(k)`` gives ξ_k ~ N(0, I).

    NaN where the chain diverged or samples too coarsely: a non-finite loss, or
    ‖w'_k − w‖² above 4·P/γ at the end. The target law has E‖w' − w‖² ≤ P/γ (the coupling
    alone; the loss's curvature makes it tighter); the chain's own law has 2/(2 − ηc) times
    the target's variance along a direction of curvature c = γ + λ/T, beyond 4× once
    ηc > 1.5, and grows geometrically once ηc ≥ 2 — to finite, meaningless losses long
    before an overflow (a NiN with λ_max ≈ 200 gave a "local energy" of 26).
    """
    if not 0 <= burnin < steps:
        raise ValueError(f"local entropy needs 0 ≤ burnin < steps, got burnin={burnin}, steps={steps}")
    v, total = w.clone(), 0.0
    for k in range(steps + 1):
        L, g = loss_grad(v, k)
        if k > burnin:
            total += float(L)
        if k < steps:
            v = v - lr * (g / temperature + gamma * (v - w)) + math.sqrt(2 * lr) * noise(k)
    if float(((v - w) ** 2).sum()) > 4 * w.numel() / gamma:
        return math.nan
    return total / (steps - burnin)


@register("local_entropy", "curvature", cite="Chaudhari et al. 2019",
          knobs=(LE_GAMMA, LE_TEMP, LE_STEPS, LE_LR, LE_BURNIN, LE_BATCH), version=2, stochastic=True)
def local_entropy(ctx):
    """Local energy E[L(w')] − L(w) under p(w') ∝ exp(−L(w')/T − (γ/2)‖w'−w‖²), the mean
    over a seeded SGLD chain on mini-batches started at w (Chaudhari et al. 2019), less the
    mean of L_{B_k}(w) over the same mini-batches B_k: a control variate (E_B L_B(w) = L(w))
    that cancels the mini-batches' own spread in the loss, which otherwise dominates the
    draw-to-draw noise.

    The chain is stable for η(γ + λ_max/T) < 2; a sharper network than ``local_entropy_lr``
    allows (a NiN on Fashion-MNIST: λ_max ≈ 70) makes it diverge. It is then rerun with η/2,
    the same mini-batches and noise, at most `LE_HALVINGS` times; ``ctx.methods`` records
    the step used. A chain that does not diverge keeps its value (the first try)."""
    w = core.flat(ctx)
    steps = int(ctx.knob(LE_STEPS))
    lr = float(ctx.knob(LE_LR))
    for halved in range(LE_HALVINGS + 1):
        gen = ctx.generator("local_entropy")  # a fresh stream: the same batches and noise each try
        idx = minibatch_index(ctx, gen, int(ctx.knob(LE_BATCH)), steps + 1)

        def loss_grad(v, k):
            return core.loss_and_grad(ctx, v, ctx.x[idx[k]], ctx.y[idx[k]])[:2]

        mean = sgld_mean_loss(loss_grad, w, float(ctx.knob(LE_GAMMA)), float(ctx.knob(LE_TEMP)),
                              steps, lr / 2 ** halved, int(ctx.knob(LE_BURNIN)),
                              lambda k: ctx.randn(gen, w.numel()))
        if math.isfinite(mean):
            break
    else:
        raise Undefined(f"the SGLD chain diverged even at η = local_entropy_lr / 2^{LE_HALVINGS} "
                        f"(mean loss {mean}); lower local_entropy_lr")
    if halved:
        ctx.methods["local_entropy"] = f"sgld_lr_halved_{halved}x"
    used = idx[int(ctx.knob(LE_BURNIN)) + 1:].reshape(-1)  # equal-sized batches: one mean
    with torch.no_grad():
        base = float(core.batch_loss(ctx, w, ctx.x[used], ctx.y[used]))
    return mean - base
