"""Curvature at the minimum (MEASURES.md, "Sharpness and curvature at the minimum"):
the Hessian's top eigenvalue, trace, Frobenius norm and spectral shares, the
empirical Fisher, and the mini-batch gradient variance.

``hessian_trace`` is exact where the network's output is linear in each single
parameter (`core.linear_in_each_parameter`: Linear, Conv, eval-mode BatchNorm,
ReLU, pooling, in an ``nn.Sequential``): there every ∇²f_k has a zero diagonal,
so tr ∇²L = tr GGN = (1/n) Σ_n Σ_k p_k ‖J_nᵀ(e_k − p)‖², computed exactly on the
``hessian_examples`` subset: as the summed diagonal of BackPACK's ``DiagGGNExact``
where BackPACK supports every module (`core.backpack_supports`), else from
per-example, per-class vector-Jacobian products (`core.ggn_trace_terms`). Elsewhere
it is Hutchinson's estimate below. Which one was used is recorded in
``ctx.methods["hessian_trace"]`` (``exact_ggn_backpack``, ``exact_ggn`` or
``hutchinson``), stored in the row's ``measure_methods``.

The empirical Fisher measures take per-example gradients from BackPACK where it
supports every module (``BatchL2Grad`` for the trace, ``BatchGrad`` for the Gram
matrix), else from ``vmap(grad(·))``; ctx.methods records ``backpack`` or
``torch.func`` for each. BackPACK was 15–83× (GGN trace) and 54–56× (Fisher trace)
faster on depth-4 MLPs (bench/curvature_peers.py, bench/README.md).

The other Hessian measures share one cached computation (`hessian_spectrum`): a batch
of Rademacher probes, one batched Hessian-vector product for Hutchinson's trace
and ‖H‖_F, and a batched Lanczos run with full reorthogonalisation on the first
probes that gives both the top eigenvalue (run until the residual of the top
Ritz pair is within the relative tolerance) and the stochastic Lanczos quadrature
(SLQ) density. HVPs are reverse-over-reverse (``vjp`` of ``grad``), vmapped
over probes, and per-example gradients ``vmap(grad(·))`` (both from `core`); every
batch is sized by the ``memory_mb`` budget.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
from threadpoolctl import threadpool_limits

from . import core
from .context import MeasureContext
from .registry import Undefined, knob, register

log = logging.getLogger("study.measures")

H_EXAMPLES = knob("hessian_examples", 0,
                  "examples of the Hessian measures (a seeded subset; 0, the default: the whole "
                  "measure set; a 512-example subset's draw moved hessian_neg_frac by more than the "
                  "spread between the mini study's networks)")
H_PROBES = knob("hutchinson_probes", 2, "Rademacher probes of hessian_fro (and hessian_trace where "
                "not exact), deflated by the first SLQ probe's Krylov basis (Hutch++)")
SLQ_PROBES = knob("slq_probes", 1, "Lanczos probes of the SLQ density and hessian_max_eig "
                  "(hessian_near_zero_frac has reliability 0.45 on the mini study at the defaults, "
                  "below 0.9; 2 probes × 24 steps gave 0.76 at ~2.5× the Hessian group's cost, "
                  "beyond the whole set's budget)")
SLQ_STEPS = knob("slq_steps", 16, "least Lanczos steps of the SLQ density")
LANCZOS_MAX = knob("lanczos_max_steps", 64, "most Lanczos steps (hessian_max_eig stops earlier "
                   "once the top Ritz value is within lanczos_tol)")
LANCZOS_TOL = knob("lanczos_tol", 1e-3, "relative tolerance of hessian_max_eig (Ritz residual)")
FISHER_N = knob("fisher_examples", 0,
                "examples of the Fisher measures (a seeded subset; 0, the default: the whole "
                "measure set, which makes them deterministic)")
GV_BATCH = knob("grad_var_batch_size", 128,
                "mini-batch size of grad_variance when the training log gives none")
GV_BATCHES = knob("grad_var_batches", 64, "most mini-batches averaged by grad_variance")

SHARE = 1e-3  # |λ| ≤ SHARE·λ_max is "near zero"; λ < −SHARE·λ_max is "negative"

# -- Lanczos -------------------------------------------


def _top_ritz(alphas: np.ndarray, betas: np.ndarray, length: int) -> tuple[float, float]:
    """Top Ritz value of one probe's tridiagonal T (first ``length`` steps) and the
    residual bound β_length·|s_last| of its Ritz pair."""
    a, bt = alphas[:length], betas[:length]
    T = np.diag(a) + np.diag(bt[:length - 1], 1) + np.diag(bt[:length - 1], -1)
    theta, S = np.linalg.eigh(T)
    return float(theta[-1]), abs(float(bt[length - 1] * S[-1, -1]))


def lanczos(hvp: Callable[[torch.Tensor], torch.Tensor], Q0: torch.Tensor, HQ0: torch.Tensor,
            min_steps: int, max_steps: int, tol: float) -> dict:
    """Batched Lanczos with full reorthogonalisation from the unit rows of ``Q0`` (k × P),
    ``HQ0`` = hvp(Q0) given.

    Runs at least ``min_steps`` and at most ``max_steps`` steps (capped at P); stops after
    ``min_steps`` once the largest top Ritz value over the probes has residual
    ≤ tol·|θ|. A probe whose β falls below ε^(2/3)·max|T| has found an invariant
    subspace: it stops (its T is cut there). Returns the per-probe tridiagonals
    ``alpha``/``beta`` (lists of numpy arrays), ``lam_max``, ``residual``, ``converged``.
    """
    k, P = Q0.shape
    max_steps = max(1, min(int(max_steps), P))
    min_steps = min(int(min_steps), max_steps)
    thresh = torch.finfo(Q0.dtype).eps ** (2 / 3)
    Q = torch.empty(k, max_steps, P, dtype=Q0.dtype, device=Q0.device)  # the Lanczos basis
    Q[:, 0] = Q0
    alphas, betas = [], []
    lengths = [max_steps] * k
    active = torch.ones(k, dtype=torch.bool, device=Q0.device)
    scale = torch.zeros(k, dtype=Q0.dtype, device=Q0.device)
    q_prev, b_prev, q = torch.zeros_like(Q0), torch.zeros(k, dtype=Q0.dtype, device=Q0.device), Q0
    lam, res, converged = -math.inf, math.inf, False
    for j in range(max_steps):
        wv = HQ0 if j == 0 else hvp(q)
        a = (wv * q).sum(1)
        wv = wv - a[:, None] * q - b_prev[:, None] * q_prev
        Qm = Q[:, :j + 1]
        for _ in range(2):
            wv = wv - torch.einsum("kj,kjp->kp", torch.einsum("kjp,kp->kj", Qm, wv), Qm)
        b = wv.norm(dim=1)
        scale = torch.maximum(scale, torch.maximum(a.abs(), b))
        broke = active & (b <= thresh * scale)
        for p in torch.nonzero(broke).flatten().tolist():
            lengths[p] = j + 1
        active = active & ~broke
        b = torch.where(active, b, torch.zeros_like(b))
        alphas.append(a.double().cpu().numpy())
        betas.append(b.double().cpu().numpy())
        steps = j + 1
        all_broke = not bool(active.any())
        if steps >= min_steps or all_broke:
            A, B = np.stack(alphas), np.stack(betas)
            tops = [_top_ritz(A[:, p], B[:, p], min(lengths[p], steps)) for p in range(k)]
            lam, res = max(tops)
            converged = res <= tol * abs(lam)
            if steps >= max_steps or converged or all_broke:
                break
        q_prev, q = q, torch.where(active[:, None], wv / b.clamp_min(torch.finfo(b.dtype).tiny)[:, None],
                                   torch.zeros_like(wv))
        b_prev = b
        Q[:, j + 1] = q
    steps = len(alphas)
    A, B = np.stack(alphas), np.stack(betas)
    cut = [min(lengths[p], steps) for p in range(k)]
    return {
        "alpha": [A[:cut[p], p] for p in range(k)],
        "beta": [B[:cut[p] - 1, p] for p in range(k)],
        "lam_max": lam, "residual": res, "converged": converged, "steps": steps,
        # the first probe's basis (rows) and the β that would lead out of it (0 if it broke off)
        "basis": Q[0, :cut[0]], "beta_out": float(B[cut[0] - 1, 0]),
    }


def slq_density(alpha: list, beta: list) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-quadrature nodes (Ritz values) and weights (squared first components of the
    Ritz vectors, averaged over probes) of the per-probe tridiagonals; weights sum to 1."""
    nodes, weights = [], []
    for a, bt in zip(alpha, beta):
        T = np.diag(a) + np.diag(bt, 1) + np.diag(bt, -1)
        theta, S = np.linalg.eigh(T)
        nodes.append(theta)
        weights.append(S[0] ** 2 / len(alpha))
    nodes, weights = np.concatenate(nodes), np.concatenate(weights)
    order = np.argsort(nodes, kind="stable")
    return nodes[order], weights[order]


def hessian_spectrum(ctx: MeasureContext) -> dict:
    """Shared Hessian estimates (cached), from ``slq_probes`` + ``hutchinson_probes`` seeded
    Rademacher probes:

    - λ_max and the SLQ density: batched Lanczos from the first ``slq_probes`` probes, at
      least ``slq_steps`` and at most ``lanczos_max_steps`` steps, until the top Ritz value
      is within ``lanczos_tol``;
    - tr H and ‖H‖_F: Hutchinson's estimator deflated by the first probe's Krylov basis Q (m
      orthonormal rows; Hutch++, Meyer et al. 2021): tr H = tr(QHQᵀ) + E_v v'ᵀHv',
      ‖H‖_F² = ‖HQᵀ‖_F² + E_v ‖Hv'‖², v' = (I − QᵀQ)v over the last ``hutchinson_probes``
      probes. The recurrence gives the deflated parts exactly, tr(QHQᵀ) = tr T and
      ‖HQᵀ‖_F² = ‖T‖_F² + β_m², so the top of the spectrum (which dominates both) carries no
      probe noise, and the deflation costs no Hessian-vector product."""
    def compute():
        idx = ctx.subset(int(ctx.knob(H_EXAMPLES)), "hessian")
        hvp = core.make_hvp(ctx, ctx.x[idx], ctx.y[idx])
        w = core.flat(ctx)
        n_h, n_s = int(ctx.knob(H_PROBES)), int(ctx.knob(SLQ_PROBES))
        if n_h < 1 or n_s < 1:
            raise ValueError("hutchinson_probes and slq_probes must be at least 1")
        gen = ctx.generator("hessian")
        V = ctx.rademacher(gen, n_s + n_h, w.numel()).to(w.dtype)
        root = math.sqrt(w.numel())
        tol = float(ctx.knob(LANCZOS_TOL))
        S = V[:n_s] / root
        lz = lanczos(hvp, S, hvp(S), int(ctx.knob(SLQ_STEPS)), int(ctx.knob(LANCZOS_MAX)), tol)
        if not lz["converged"]:
            log.warning("hessian_max_eig: Lanczos stopped after %d steps with residual %.3g "
                        "(tolerance %.3g·|λ|); raise lanczos_max_steps", lz["steps"],
                        lz["residual"], tol)
        nodes, weights = slq_density(lz["alpha"], lz["beta"])
        ctx.artifacts["hessian_density_nodes"] = nodes.tolist()
        ctx.artifacts["hessian_density_weights"] = weights.tolist()
        Q, a, b = lz["basis"], lz["alpha"][0], lz["beta"][0]
        U = V[n_s:]
        U = U - (U @ Q.T) @ Q
        U = U - (U @ Q.T) @ Q  # twice: orthogonal to Q to rounding
        HU = hvp(U)
        trace = float(a.sum()) + float((U * HU).sum(1).double().mean())
        fro2 = (float((a ** 2).sum() + 2 * (b ** 2).sum()) + lz["beta_out"] ** 2
                + float((HU * HU).sum(1).double().mean()))
        return {"trace": trace, "fro": math.sqrt(max(fro2, 0.0)),
                "lam_max": lz["lam_max"], "converged": lz["converged"],
                "nodes": nodes, "weights": weights}
    return ctx.cached("curvature.hessian", compute)


_H_KNOBS = (H_EXAMPLES, H_PROBES, SLQ_PROBES, SLQ_STEPS, LANCZOS_MAX, LANCZOS_TOL, core.MEMORY_MB)
_H_CITE = "Hutchinson 1989; Lanczos 1950; Ghorbani et al. 2019 (SLQ)"


@register("hessian_max_eig", "curvature", cite="Keskar et al. 2017; " + _H_CITE, knobs=_H_KNOBS, version=2,
          stochastic=True)
def hessian_max_eig(ctx):
    """Largest algebraic eigenvalue of ∇²L(w), Lanczos on HVPs to relative tolerance lanczos_tol."""
    return hessian_spectrum(ctx)["lam_max"]


def ggn_trace(ctx: MeasureContext) -> float:
    """tr GGN = (1/n) Σ_n tr(J_nᵀ Λ_n J_n) on the ``hessian_examples`` subset (the one
    `hessian_spectrum` uses), exact (cached): the summed diagonal of BackPACK's
    ``DiagGGNExact`` where BackPACK supports every module (`core.backpack_supports`), else
    per-class vector-Jacobian products (`core.ggn_trace_terms`)."""
    def compute():
        idx = ctx.subset(int(ctx.knob(H_EXAMPLES)), "hessian")
        x, y = ctx.x[idx], ctx.y[idx]
        if core.backpack_supports(ctx, second_order=True):
            return core.backpack_ggn_diag_sum(ctx, x, y) / len(x)
        return float(core.ggn_trace_terms(ctx, x).mean())
    return ctx.cached("curvature.ggn_trace", compute)


@register("hessian_trace", "curvature", cite=_H_CITE + "; Schraudolph 2002 (GGN)",
          knobs=_H_KNOBS, version=3, stochastic=True)
def hessian_trace(ctx):
    """tr ∇²L(w): exact, as the generalised Gauss-Newton matrix's trace, where the output is
    linear in each single parameter (there the diagonal of every ∇²f_k vanishes); otherwise
    Hutchinson's estimator with Rademacher probes (Hutchinson 1989). ctx.methods records
    which ("exact_ggn_backpack" or "exact_ggn": the GGN diagonal by BackPACK or by
    torch.func; "hutchinson")."""
    if core.linear_in_each_parameter(ctx):
        backpack = core.backpack_supports(ctx, second_order=True)
        ctx.methods["hessian_trace"] = "exact_ggn_backpack" if backpack else "exact_ggn"
        return ggn_trace(ctx)
    ctx.methods["hessian_trace"] = "hutchinson"
    return hessian_spectrum(ctx)["trace"]


@register("hessian_fro", "curvature", cite=_H_CITE + "; Meyer et al. 2021 (Hutch++)", knobs=_H_KNOBS,
          version=2, stochastic=True)
def hessian_fro(ctx):
    """‖∇²L(w)‖_F = sqrt(tr (∇²L)²): exact on the Lanczos basis of `hessian_spectrum`, plus
    E_v ‖∇²L(w)v'‖² over the Rademacher probes v projected off it."""
    return hessian_spectrum(ctx)["fro"]


def spectral_shares(nodes: np.ndarray, weights: np.ndarray, lam_max: float) -> tuple[float, float]:
    """(mass with |λ| ≤ 1e-3·λ_max, mass with λ < −1e-3·λ_max) of a discrete density."""
    if not lam_max > 0:
        raise Undefined(f"λ_max = {lam_max:.4g} ≤ 0: the spectral shares are relative to λ_max")
    near = float(weights[np.abs(nodes) <= SHARE * lam_max].sum())
    neg = float(weights[nodes < -SHARE * lam_max].sum())
    return near, neg


def _shares(ctx) -> tuple[float, float]:
    s = hessian_spectrum(ctx)
    return spectral_shares(s["nodes"], s["weights"], s["lam_max"])


@register("hessian_near_zero_frac", "curvature",
          cite="Chaudhari et al. 2019; Ghorbani et al. 2019 (SLQ)", knobs=_H_KNOBS, version=2, stochastic=True)
def hessian_near_zero_frac(ctx):
    """SLQ share of Hessian spectral mass with |λ| ≤ 1e-3·λ_max (Chaudhari et al. 2019).
    The density is kept in artifacts hessian_density_nodes / hessian_density_weights."""
    return _shares(ctx)[0]


@register("hessian_neg_frac", "curvature",
          cite="Dauphin et al. 2014; Ghorbani et al. 2019 (SLQ)", knobs=_H_KNOBS, version=2, stochastic=True)
def hessian_neg_frac(ctx):
    """SLQ share of Hessian spectral mass with λ < −1e-3·λ_max (Dauphin et al. 2014)."""
    return _shares(ctx)[1]


# -- empirical Fisher ---------------------------------------------------------------


def fisher_gradients(ctx: MeasureContext) -> dict:
    """Per-example gradients on the Fisher subset (cached): ``sq_norms`` (float64, ‖g_i‖²),
    and ``rows`` (n × P) when they fit the ``memory_mb`` budget (else None). Each gradient is
    computed once (`core.per_example_grads`). `fisher_gram` takes the rows and drops them."""
    def compute():
        idx = ctx.subset(int(ctx.knob(FISHER_N)), "fisher")
        x, y = ctx.x[idx], ctx.y[idx]
        n, P = len(idx), core.flat(ctx).numel()
        c = core.per_example_grad_block(ctx)
        if n <= _stored_rows(ctx, c):
            rows = core.per_example_grads(ctx, x, y, block=c)
            return {"sq_norms": rows.pow(2).sum(1).double(), "rows": rows, "x": x, "y": y}
        buf = torch.empty(min(c, n), P, dtype=ctx.dtype, device=ctx.device)
        sq = torch.empty(n, dtype=torch.float64, device=ctx.device)
        for i in range(0, n, c):
            g = core.per_example_grads(ctx, x[i:i + c], y[i:i + c], out=buf[:len(x[i:i + c])])
            sq[i:i + len(g)] = g.pow(2).sum(1).double()
        return {"sq_norms": sq, "rows": None, "x": x, "y": y}
    return ctx.cached("curvature.fisher_gradients", compute)


def _stored_rows(ctx: MeasureContext, c: int) -> int:
    """Gradient rows held at once next to one block of ``c`` being computed, within the
    memory budget."""
    P, size = core.flat(ctx).numel(), core.itemsize(ctx)
    working = c * (2 * P + 4 * core.probe(ctx).outputs) * size
    return max(c, int((float(ctx.knob(core.MEMORY_MB)) * 2**20 - working) // (P * size)))


def fisher_gram(ctx: MeasureContext) -> np.ndarray:
    """Gram matrix G_ij = g_i·g_j (returned as float64) of the per-example gradients on the
    Fisher subset (cached); the products in the network's precision (n²·P is the cost).

    When the n gradients fit the ``memory_mb`` budget they are computed once and G = R Rᵀ.
    Otherwise G is built panel by panel: a panel of as many rows as fit is computed once and
    kept, its diagonal block and its products with every later block follow, each later
    block computed once per panel, so n·(panels + 1)/2 gradients on average rather than n —
    unavoidable without storing them (width-512 depth-4 MLP, 256 examples, 512 MiB: two
    panels, 1.4 n gradients).
    """
    def compute():
        stats = fisher_gradients(ctx)
        x, y = stats["x"], stats["y"]
        n = len(x)
        if stats["rows"] is not None:
            rows = stats.pop("rows")  # the gradients are not needed after G: free them
            return (rows @ rows.T).double().cpu().numpy()
        P = core.flat(ctx).numel()
        c = core.per_example_grad_block(ctx)
        r = _stored_rows(ctx, c)
        G = torch.zeros(n, n, dtype=torch.float64, device=ctx.device)
        panel = torch.empty(min(r, n), P, dtype=ctx.dtype, device=ctx.device)
        buf = torch.empty(min(c, n), P, dtype=ctx.dtype, device=ctx.device)
        for a in range(0, n, r):
            b = min(a + r, n)
            S = core.per_example_grads(ctx, x[a:b], y[a:b], out=panel[:b - a], block=c)
            G[a:b, a:b] = (S @ S.T).double()
            for j in range(b, n, c):
                e = min(j + c, n)
                g = core.per_example_grads(ctx, x[j:e], y[j:e], out=buf[:e - j], block=c)
                blk = (S @ g.T).double()
                G[a:b, j:e] = blk
                G[j:e, a:b] = blk.T
        return G.cpu().numpy()
    return ctx.cached("curvature.fisher_gram", compute)


def _fisher_method(ctx: MeasureContext, name: str) -> bool:
    """Whether the Fisher measures use BackPACK (`core.backpack_supports`); records the
    method of ``name`` in ctx.methods ("backpack" or "torch.func")."""
    backpack = core.backpack_supports(ctx, second_order=False)
    ctx.methods[name] = "backpack" if backpack else "torch.func"
    return backpack


def fisher_sq_norms(ctx: MeasureContext) -> torch.Tensor:
    """‖g_i‖² (float64) on the Fisher subset (cached): BackPACK's ``BatchL2Grad`` where it
    supports every module, else from the torch.func gradients of `fisher_gradients`."""
    def compute():
        if core.backpack_supports(ctx, second_order=False):
            idx = ctx.subset(int(ctx.knob(FISHER_N)), "fisher")
            return core.backpack_sq_grad_norms(ctx, ctx.x[idx], ctx.y[idx])
        return fisher_gradients(ctx)["sq_norms"]
    return ctx.cached("curvature.fisher_sq_norms", compute)


def backpack_gram(ctx: MeasureContext) -> np.ndarray:
    """`fisher_gram` from BackPACK's per-example gradients (`core.backpack_grads`, one
    matrix per parameter): G = Σ_t R_t R_tᵀ over the parameters, products in the network's
    precision summed in float64; panel by panel as in `fisher_gram` when the n gradients
    do not fit the ``memory_mb`` budget."""
    idx = ctx.subset(int(ctx.knob(FISHER_N)), "fisher")
    x, y = ctx.x[idx], ctx.y[idx]
    n = len(x)
    c = core.backpack_grad_block(ctx)
    r = _stored_rows(ctx, c)
    G = torch.zeros(n, n, dtype=torch.float64, device=ctx.device)
    for a in range(0, n, r):
        b = min(a + r, n)
        S = core.backpack_grads(ctx, x[a:b], y[a:b])
        G[a:b, a:b] = sum((s @ s.T).double() for s in S)
        for j in range(b, n, c):
            e = min(j + c, n)
            blk = sum((s @ t.T).double() for s, t in zip(S, core.backpack_grads(ctx, x[j:e], y[j:e])))
            G[a:b, j:e] = blk
            G[j:e, a:b] = blk.T
        del S
    return G.cpu().numpy()


_F_KNOBS = (FISHER_N, core.MEMORY_MB)


def _gram(ctx: MeasureContext, name: str) -> np.ndarray:
    """The Gram matrix of `fisher_fro` and `fisher_max_eig`: factored per layer
    (`core.linear_gram`, ctx.methods "factored_linear") where every trained parameter is a
    ``nn.Linear``'s, else from BackPACK's or torch.func's per-example gradients."""
    if core.linear_gram_supported(ctx):
        ctx.methods[name] = "factored_linear"

        def factored() -> np.ndarray:
            idx = ctx.subset(int(ctx.knob(FISHER_N)), "fisher")
            return core.linear_gram(ctx, ctx.x[idx], ctx.y[idx]).cpu().numpy()
        return ctx.cached("curvature.linear_gram", factored)
    if _fisher_method(ctx, name):
        return ctx.cached("curvature.backpack_gram", lambda: backpack_gram(ctx))
    return fisher_gram(ctx)


@register("fisher_trace", "curvature", cite="Wu et al. 2023", knobs=_F_KNOBS, stochastic=True)
def fisher_trace(ctx):
    """tr F = (1/n) Σ_i ‖g_i‖², F the empirical Fisher (Wu et al. 2023): exact, from the
    per-example gradient norms (no Gram matrix); ctx.methods records "backpack" or
    "torch.func"."""
    _fisher_method(ctx, "fisher_trace")
    return float(fisher_sq_norms(ctx).mean())


@register("fisher_fro", "curvature", cite="Wu et al. 2023", knobs=_F_KNOBS, version=2, stochastic=True)
def fisher_fro(ctx):
    """‖F‖_F = (1/n) sqrt(Σ_ij (g_i·g_j)²) (Wu et al. 2023)."""
    G = _gram(ctx, "fisher_fro")
    return float(np.sqrt((G ** 2).sum())) / len(G)


@register("fisher_max_eig", "curvature", cite="Wu et al. 2023", knobs=_F_KNOBS, version=2, stochastic=True)
def fisher_max_eig(ctx):
    """λ_max(F) = λ_max(G)/n, G the Gram matrix of per-example gradients (Wu et al. 2023)."""
    G = _gram(ctx, "fisher_max_eig")
    n = len(G)
    with threadpool_limits(1):  # a small problem: BLAS threads only add overhead
        if n <= 256:
            return float(scipy.linalg.eigvalsh(G, subset_by_index=[n - 1, n - 1])[0]) / n
        # G is positive semi-definite: Lanczos (ARPACK) from a fixed start to machine precision,
        # O(n²) per step rather than eigvalsh's O(n³) tridiagonalisation
        lam = scipy.sparse.linalg.eigsh(G, k=1, which="LA", v0=np.ones(n), tol=0,
                                        return_eigenvectors=False)
        return float(lam[0]) / n


# -- gradient noise -----------------------------------------------------------------


def grad_variance_batches(ctx: MeasureContext) -> torch.Tensor:
    """nb × B indices: the first nb = min(⌊n/B⌋, grad_var_batches) batches of a seeded
    shuffle of the measure set, B the run's batch size (else grad_var_batch_size)."""
    B = int(ctx.train_log.batch_size) if ctx.train_log is not None else int(ctx.knob(GV_BATCH))
    n = len(ctx.x)
    nb = min(n // B, int(ctx.knob(GV_BATCHES)))
    if nb < 1:
        raise Undefined(f"the measure set ({n} examples) holds no full mini-batch of {B}")
    perm = torch.randperm(n, generator=ctx.generator("grad_variance"))
    return perm[:nb * B].view(nb, B).to(ctx.device)


@register("grad_variance", "curvature", cite="Jiang et al. 2020",
          knobs=(GV_BATCH, GV_BATCHES, core.MEMORY_MB), stochastic=True)
def grad_variance(ctx):
    """E_B ‖g_B − ḡ‖² over seeded mini-batches of the run's batch size, ḡ the gradient on
    the whole measure set (Jiang et al. 2020's gradient noise)."""
    idx = grad_variance_batches(ctx)
    w = core.flat(ctx)
    _, gbar, _ = core.loss_and_grad(ctx, w)
    _, G = core.batch_losses_and_grads(ctx, w, ctx.x[idx], ctx.y[idx])
    return float(((G - gbar) ** 2).sum(1).mean())
