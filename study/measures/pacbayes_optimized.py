"""The optimised PAC-Bayes bound of Dziugaite & Roy 2017 (MEASURES.md, "The optimised
PAC-Bayes bound"): ``pacbayes_optimized_bound``, a bound on the test error of a stochastic
network Q = N(w_Q, diag(s)) optimised from the trained weights.

- Prior P = N(w0, λI), w0 the initial weights, λ = c·e^{−j/b} (c = 0.1, b = 100) on a
  grid of integers j ≥ 1; the union bound over j costs 2 log j = 2 log(b log(c/λ)).
- KL(Q‖P) = ½[(Σ s_i + ‖w_Q − w0‖²)/λ − P + P log λ − Σ log s_i] (`kl_gaussians`), P the
  number of trainable parameters (all of them: Q perturbs every one).
- Optimisation: from w_Q = w, s_i = max(w_i², `S_FLOOR`) and λ the KL-minimising prior variance
  of that start, ``(Σ s_i + ‖w_Q − w0‖²)/P``, `OPT_STEPS` Adam steps on (w_Q, log s, log λ), each
  on one mini-batch with one reparametrised draw w_Q + √s·ε, of the surrogate
  ``ℓ̂(Q) + sqrt((KL + log(π²n/(6δ)) + 2 log(b log(c/λ))) / (2(n − 1)))``, ℓ̂ the mean
  cross-entropy divided by ln 2 (≥ the 0-1 error of the argmax); log λ kept where j ≥ 1;
  then j rounded to the nearer integer (at least 1).
- Final figure: ê_m, the mean training error of m independent draws of Q, each on the whole
  measure set (n examples); ê⁺ = kl⁻¹(ê_m, log(2/δ′)/m) (Langford & Caruana's sample bound);
  the bound kl⁻¹(ê⁺, (KL + log(π²n/(6δ)) + 2 log j)/(n − 1)), δ = 0.025, δ′ = 0.01: it holds
  with probability ≥ 1 − δ − δ′ over the sample and the draws. kl⁻¹ by bisection (`kl_inv`).

Choices where MEASURES.md leaves room, or where this deviates from it:

- The union bound over j: MEASURES.md writes ``log(n/δ)``; a union over j ≥ 1 with weights
  6/(π² j²) (which sum to 1) needs ``log(π²n/(6δ))`` (Dziugaite & Roy's form), 0.50 nats more,
  so that the bound holds at 1 − δ as stated. This module uses the latter.
- "SGD" is Adam with two rates: `OPT_LR` on log s and log λ, `OPT_MEAN_LR` (30× smaller) on
  w_Q, over mini-batches of `OPT_BATCH` examples drawn without replacement, reshuffled every
  pass. With one rate for all (plain SGD, RMSprop as Dziugaite & Roy, or Adam) the noise of
  the draws walks w_Q away from w0 faster than the KL pulls it back: on a 784-600-2 MLP on
  10,000 binary Fashion-MNIST examples ‖w_Q − w0‖² grew from 54 to 160–220 and KL stayed
  above 50,000 (a vacuous bound) in 3,000–10,000 steps; with the two rates ‖w_Q − w0‖² fell
  to 2 and KL to 1,600 in 5,000 steps (bound 0.38, m = 1,000).
- n is the size of the measure set (``[measures] subset`` shrinks it: the bound is then on
  that many examples, valid but looser); run it on the whole training set.
- The draws of Q also give its mean error on the held-out (test) set where the context has one
  (`MeasureContext.held_out`): reported beside the bound, never used by it.

Everything a reader needs to see what bounds the bound is kept in the artifact
``pacbayes_optimized_parts`` (`study.schema.ARTIFACTS`: KL, λ, j, ê_m, ê⁺, the slack
ê⁺ − ê_m, Q's mean test error, n, m, the final surrogate). Cost: `OPT_STEPS` forward and
backward passes of one mini-batch, and m forward passes of the measure set (2m with a held-out
set): a study asks for it by name (it is not part of ``all``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..schema import ARTIFACTS
from . import core
from .context import EVAL_BATCH, MeasureContext
from .registry import Undefined, knob, register

C_LAMBDA, B_LAMBDA = 0.1, 100.0
DELTA, DELTA_PRIME = 0.025, 0.01
S_FLOOR = 1e-8   # least initial posterior variance (a weight at 0 would start with s = 0)
CITE = "Dziugaite & Roy 2017, Computing nonvacuous generalization bounds (Sec. 4, Table 1)"

OPT_STEPS = knob("pacbayes_optimized_steps", 5000, "pacbayes_optimized_bound: optimisation steps (mini-batches)")
OPT_LR = knob("pacbayes_optimized_lr", 0.01, "pacbayes_optimized_bound: Adam's rate on log s and log λ")
OPT_MEAN_LR = knob("pacbayes_optimized_mean_lr", 3e-4, "pacbayes_optimized_bound: Adam's rate on w_Q (the "
                   "posterior mean): at the rate of log s the draws' noise walks w_Q away from w0 and the KL "
                   "grows tenfold")
OPT_BATCH = knob("pacbayes_optimized_batch_size", 100, "pacbayes_optimized_bound: examples per optimisation step")
DRAWS = knob("pacbayes_optimized_draws", 1000, "pacbayes_optimized_bound: m, the draws of Q whose mean "
             "training error ê_m is bounded by Langford & Caruana's sample bound")

PARTS = ARTIFACTS["pacbayes_optimized_parts"].labels


# -- the pieces of the bound (pure) -----------------------------------------------------


def kl_bernoulli(q: float, p: float) -> float:
    """kl(q‖p) = q log(q/p) + (1 − q) log((1 − q)/(1 − p)), 0·log 0 = 0; inf where p ∈ {0, 1}
    and q ≠ p."""
    def term(a, b):
        if a == 0:
            return 0.0
        return math.inf if b == 0 else a * math.log(a / b)
    return term(q, p) + term(1 - q, 1 - p)


def kl_inv(q: float, c: float, iters: int = 100) -> float:
    """kl⁻¹(q, c) = max{p ∈ [q, 1] : kl(q‖p) ≤ c}, by bisection (kl(q‖·) increases on [q, 1])."""
    if not 0 <= q <= 1 or not c >= 0:
        raise ValueError(f"kl_inv needs q in [0, 1] and c ≥ 0, got q = {q}, c = {c}")
    if kl_bernoulli(q, 1.0) <= c:
        return 1.0
    lo, hi = q, 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if kl_bernoulli(q, mid) <= c:
            lo = mid
        else:
            hi = mid
    return lo


def sample_bound(e_m: float, m: int, delta_prime: float = DELTA_PRIME) -> float:
    """Langford & Caruana's bound on Q's error from the mean error ê_m of m draws:
    kl⁻¹(ê_m, log(2/δ′)/m)."""
    return kl_inv(e_m, math.log(2 / delta_prime) / m)


def kl_gaussians(mean: torch.Tensor, var: torch.Tensor, prior_mean: torch.Tensor, lam) -> torch.Tensor:
    """KL(N(mean, diag(var)) ‖ N(prior_mean, λI)) in closed form (float64 where given so)."""
    P = mean.numel()
    lam = torch.as_tensor(lam, dtype=mean.dtype, device=mean.device)
    return 0.5 * ((var.sum() + (mean - prior_mean).pow(2).sum()) / lam - P + P * torch.log(lam)
                  - torch.log(var).sum())


def union_cost(j: float) -> float:
    """log(π²n/(6δ)) without the n: log(π²/(6δ)) + 2 log j, the price of λ's grid index j ≥ 1."""
    return math.log(math.pi ** 2 / (6 * DELTA)) + 2 * math.log(j)


def final_bound(e_plus: float, kl: float, j: int, n: int) -> float:
    """kl⁻¹(ê⁺, (KL + log(π²n/(6δ)) + 2 log j)/(n − 1))."""
    return kl_inv(e_plus, (kl + math.log(n) + union_cost(j)) / (n - 1))


def lambda_of(j: int) -> float:
    """λ = c·e^{−j/b} of grid index j."""
    return C_LAMBDA * math.exp(-j / B_LAMBDA)


# -- the optimisation and the draws ---------------------------------------------------------


@dataclass
class Posterior:
    """The optimised Q = N(mean, diag(var)), the prior's grid index j, and the last surrogate."""
    mean: torch.Tensor
    var: torch.Tensor
    j: int
    surrogate: float


def optimise(ctx: MeasureContext) -> Posterior:
    """Q and λ minimising the surrogate from the trained weights (module docstring)."""
    w, w0 = core.flat(ctx).detach(), core.flat(ctx, ctx.init_params).detach()
    n, P = len(ctx.x), w.numel()
    if n < 2:
        raise Undefined(f"needs at least 2 examples in the measure set, got {n}")
    gen = ctx.generator("pacbayes_optimized_bound.optimise")
    mean = w.clone().requires_grad_(True)
    s0 = torch.clamp(w.double() ** 2, min=S_FLOOR)
    log_s = torch.log(s0).to(w.dtype).requires_grad_(True)
    lam0 = float((s0.sum() + (w.double() - w0.double()).pow(2).sum()) / P)
    lam_max = math.log(C_LAMBDA) - 1 / B_LAMBDA            # j ≥ 1
    log_lam = torch.tensor(min(math.log(lam0), lam_max), dtype=torch.float64, device=w.device,
                           requires_grad=True)
    opt = torch.optim.Adam([{"params": [mean], "lr": float(ctx.knob(OPT_MEAN_LR))},
                            {"params": [log_s, log_lam], "lr": float(ctx.knob(OPT_LR))}])
    batch = min(int(ctx.knob(OPT_BATCH)), n)
    order, at = torch.randperm(n, generator=gen), 0
    surrogate = math.nan
    for _ in range(int(ctx.knob(OPT_STEPS))):
        if at + batch > n:
            order, at = torch.randperm(n, generator=gen), 0
        idx = order[at:at + batch].to(ctx.device)
        at += batch
        eps = ctx.randn(gen, P)
        sample = mean + torch.exp(0.5 * log_s) * eps
        loss = F.cross_entropy(ctx.forward(core.unflat(ctx, sample), ctx.x[idx]), ctx.y[idx]) / math.log(2)
        kl = kl_gaussians(mean.double(), torch.exp(log_s.double()), w0.double(), torch.exp(log_lam))
        j = B_LAMBDA * (math.log(C_LAMBDA) - log_lam)
        value = loss.double() + torch.sqrt(torch.clamp(kl + math.log(n) + math.log(math.pi ** 2 / (6 * DELTA))
                                                       + 2 * torch.log(j), min=0) / (2 * (n - 1)))
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        with torch.no_grad():
            log_lam.clamp_(max=lam_max)
        surrogate = float(value.detach())
    if not math.isfinite(surrogate):
        raise Undefined(f"the optimisation of the bound diverged (surrogate {surrogate})")
    j = max(1, round(B_LAMBDA * (math.log(C_LAMBDA) - float(log_lam.detach()))))
    return Posterior(mean.detach(), torch.exp(log_s.detach()), j, surrogate)


@torch.no_grad()
def draw_errors(ctx: MeasureContext, q: Posterior, m: int, x: torch.Tensor, y: torch.Tensor,
                name: str) -> torch.Tensor:
    """The error rate on (x, y) of each of m independent draws of Q (from the generator
    ``name``, drawn in order one vector at a time, in chunks that fit the memory budget)."""
    gen = ctx.generator(name)
    sd = torch.sqrt(q.var).to(q.mean.dtype)
    b = int(ctx.knob(EVAL_BATCH))
    k = max(1, min(m, core.networks_per_chunk(ctx, min(b, len(x)))))
    out = []
    for r in range(0, m, k):
        W = torch.stack([q.mean + sd * ctx.randn(gen, q.mean.numel()) for _ in range(min(k, m - r))])
        wrong = sum(core.over_networks(ctx, W, x[i:i + b], y[i:i + b], core.wrong) for i in range(0, len(x), b))
        out.append(wrong.double() / len(x))
    return torch.cat(out)


@register("pacbayes_optimized_bound", "flatness", cite=CITE, needs=("init",), stochastic=True,
          knobs=(OPT_STEPS, OPT_LR, OPT_MEAN_LR, OPT_BATCH, DRAWS, EVAL_BATCH), by_name=True)
def pacbayes_optimized_bound(ctx):
    """kl⁻¹(ê⁺, (KL(Q‖P) + log(π²n/(6δ)) + 2 log j)/(n − 1)): Dziugaite & Roy's PAC-Bayes bound
    on the error of Q = N(w_Q, diag(s)), optimised from the trained weights against the prior
    N(w0, λI), ê⁺ Langford & Caruana's bound from m draws (module docstring)."""
    q = optimise(ctx)
    n, m = len(ctx.x), int(ctx.knob(DRAWS))
    e_m = float(draw_errors(ctx, q, m, ctx.x, ctx.y, "pacbayes_optimized_bound.draws").mean())
    e_plus = sample_bound(e_m, m)
    kl = float(kl_gaussians(q.mean.double(), q.var.double(), core.flat(ctx, ctx.init_params).double(),
                            lambda_of(q.j)))
    bound = final_bound(e_plus, kl, q.j, n)
    test = math.nan
    if ctx.held_out is not None:
        xt, yt = ctx.held_out
        test = float(draw_errors(ctx, q, m, xt, yt, "pacbayes_optimized_bound.draws").mean())
    parts = {"kl": kl, "lambda": lambda_of(q.j), "j": q.j, "e_m": e_m, "e_plus": e_plus,
             "slack": e_plus - e_m, "test_error": test, "n": n, "m": m, "surrogate": q.surrogate}
    ctx.artifacts["pacbayes_optimized_parts"] = [float(parts[p]) for p in PARTS]
    return bound
