"""Flatness found by search (Jiang et al. 2020, §C "sharpness/PAC-Bayes"): the
largest perturbation scale the network tolerates, and the bound-shaped
numbers made from it, each defined below.

Four scales are searched, each once per context (``ctx.cached``) and shared
by the measures that use it:

- ``σ``  : ``E_{u∼N(0,σ²I)} err(w+u) − err(w) ≤ δ``            (``sigma``)
- ``σ'`` : the same with ``u_i ∼ N(0, σ'²w_i² + ε²)``           (``sigma_mag``)
- ``α``  : ``max_{|v_i|≤α} err(w+v) − err(w) ≤ δ``               (``alpha``)
- ``α'`` : the same in the box ``|v_i| ≤ α'(|w_i| + ε)``         (``alpha_mag``)

with ``δ = 0.1`` and ``ε = 1e-3``. The α' box departs from Jiang et al.'s
``α'|w_i| + ε`` as MEASURES.md does: with an ε floor that does not shrink with
α', the box at α' → 0 is still ε on every weight, which on wide networks alone
breaks the criterion (the measure was undefined on most width-512 MLPs). Every trainable parameter is perturbed
(biases and BatchNorm affine parameters included; BN running statistics are
buffers and stay fixed). ``err`` is the error rate on the examples the
searches use: a seeded subset of ``flat_subset`` examples of the measure set
(generator ``flatness.subset``; all of it when smaller or ``flat_subset=0``),
the same subset for ``err(w)``, every scale and every candidate.

Search. Bisection on ``[0, s_max]``: the criterion is evaluated at ``s_max``
first; if it holds there the upper end is doubled (at most ``flat_expand``
times, else the measure is `Undefined`). Then the bracket ``[lo, hi]`` is
halved until ``hi − lo ≤ flat_rtol·hi`` or ``flat_depth`` halvings. The
returned scale is ``lo``, the largest scale *at which the criterion was
seen to hold* (``0`` is never returned: `Undefined` instead). Comparisons
``… ≤ δ`` allow ``1e-9`` for rounding.

Common random numbers. Every criterion evaluation restarts the generator
``ctx.generator("flatness.<scale>")``, so all candidate scales see the same
draws, only rescaled; the search is deterministic.

- Monte Carlo (``σ``, ``σ'``): draw ``k`` (``k = 0 … M−1``) is the k-th
  ``torch.randn(P)`` from that generator, ``z_k``, over all P parameters in
  `core.flat` order, and ``u_k = s·z_k`` or ``u_k = z_k ⊙ sqrt(s²w² + ε²)``.
  On an accelerator the draws are vmapped in chunks (`core.over_networks`,
  sized by ``memory_mb``); on the CPU one at a time (measured: vmap is no
  faster there, grouped convolutions slower). The mean stops early once the
  errors counted exceed the target: errors are non-negative, so the decision
  is exact and the chunking never changes a result. The criterion holds when
  the upper confidence bound ``mean + z·sd/√M`` of the rise is ≤ δ (sd over the
  M per-draw error rates, ``z = flat_confidence``), not the mean alone: a
  deviation from Jiang et al. (``flat_confidence = 0`` restores their rule),
  because the bisection otherwise keeps the largest scale whose M-draw mean
  fell below δ by chance, where the expected rise exceeds δ (bench/README.md,
  "Searches against their own criterion").
- Worst case (``α``, ``α'``): the box is ``|v| ≤ b`` with ``b = s`` or
  ``b = s(|w| + ε)``; write ``v = b ⊙ t``, ``t ∈ [−1, 1]^P``. Restart ``r``
  starts at ``t = 2·torch.rand(P) − 1`` (the r-th draw of that
  generator) and takes ``flat_steps`` steps of projected sign-gradient ascent
  on the mean cross-entropy of those examples,
  ``t ← clip(t + (2.5/steps)·sign(∇_v L(w + b⊙t)), −1, 1)``. The inner maximum
  is the largest error among all visited points (start, every iterate, end;
  the error of each comes with the forward pass of its gradient step, so it is
  free), and the ascent stops as soon as one point violates the criterion.

Quantities in the bound-shaped measures. ``‖w‖`` and ``‖w − w0‖`` in
``pacbayes_{init,orig}``, ``sharpness_{init,orig}`` and ``pacbayes_bound``
are over *all* trainable parameters: the vector that was perturbed, whose
Gaussian posterior/prior KL the bounds describe (no BN folding: folding would
change the parameterisation the search perturbed). In the magnitude-aware
measures the sum over ``i``, ``ω`` and the norm inside the log are over the
weight scalars only: the parameters with ``ndim ≥ 2`` (conv kernels and
linear matrices; biases and normalisation parameters are 1-D), so that
``‖·‖²/ω`` is the mean of the summed terms. ``ω`` in ``sharpness_*`` is the
same weight-scalar count (`core.omega`). ``m`` is ``ctx.m``.

``pacbayes_bound``'s ``ê`` is the Monte-Carlo error found at ``σ`` during
the search (the same ``M`` draws; no new ones).

Cost (defaults; digits NiN, 512 examples, one CPU thread): about 9-11
criterion evaluations per scale, ~150 forward-pass equivalents of the
1400-example set in all, ~2 s. Failing evaluations stop early, so a generous
``s_max`` costs little.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable

import torch

from . import core
from .context import MeasureContext
from .registry import Undefined, knob, register

DELTA = 0.1    # allowed rise of the training error
EPS = 1e-3     # ε of the magnitude-aware scales and measures
TOL = 1e-9     # rounding slack of the criterion "≤ δ"

CITE = "Jiang et al. 2020, Fantastic generalization measures (Sec. 7, App. C.3-C.4)"

SAMPLES = knob("flat_samples", 12, "Monte-Carlo draws M per evaluation of the σ, σ' criteria "
               "(at 12 pacbayes_init/pacbayes_bound reach reliability 0.88 on the mini study, "
               "0.95 at 16 with flat_subset = 1024, beyond the cost budget)")
CONFIDENCE = knob("flat_confidence", 1.645,
                  "z of the σ, σ' criterion's upper confidence bound mean + z·sd/√M ≤ δ "
                  "(1.645: one-sided 95 %; 0: the plain Monte-Carlo mean, Jiang et al.'s rule). "
                  "With the plain mean the bisection keeps the largest scale whose M-draw mean "
                  "happened to fall below δ, and the expected rise there exceeded δ beyond "
                  "Monte-Carlo error on 5/16 (σ) and 8/16 (σ') mini-study networks", ge=0)
DEPTH = knob("flat_depth", 15, "at most this many bisection halvings per searched scale")
RTOL = knob("flat_rtol", 0.02, "stop bisecting when the bracket [lo, hi] has hi − lo ≤ rtol·hi")
EXPAND = knob("flat_expand", 6, "times s_max may be doubled while the criterion still holds there",
              ge=0)
STEPS = knob("flat_steps", 5, "projected gradient-ascent steps per restart (α, α')")
RESTARTS = knob("flat_restarts", 1, "random starts of the ascent (α, α')")
SUBSET = knob("flat_subset", 768, "examples of the measure set the searches use (a seeded "
              "subset; 0: all of it). The subset's draw is the searches' main noise: "
              "sharpness_mag_flatness has reliability 0.82 at 768, 0.96 on all 1,437 digits "
              "examples, which the cost budget does not allow", ge=0)
SIGMA_MAX = knob("flat_sigma_max", 0.5, "s_max of the σ search (absolute standard deviation)")
SIGMA_MAG_MAX = knob("flat_sigma_mag_max", 1.0, "s_max of the σ' search (relative to |w_i|)")
ALPHA_MAX = knob("flat_alpha_max", 0.1, "s_max of the α search (absolute box half-width)")
ALPHA_MAG_MAX = knob("flat_alpha_mag_max", 0.5, "s_max of the α' search (relative to |w_i|)")

_MAX_KNOB = {"sigma": SIGMA_MAX, "sigma_mag": SIGMA_MAG_MAX,
             "alpha": ALPHA_MAX, "alpha_mag": ALPHA_MAG_MAX}


@dataclass(frozen=True)
class Search:
    """Outcome of one searched scale."""
    scale: float      # lo: the criterion held here (the returned scale)
    hi: float         # the criterion failed here (hi − lo ≤ rtol·hi unless depth ran out)
    stat: float       # mean (MC) or max (worst case) perturbed error at `scale`
    err0: float       # err(w)
    evaluations: int  # criterion evaluations spent


# -- shared pieces -------------------------------------------------------------

def search_set(ctx: MeasureContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples the searches use: the measure set, or its seeded subset of
    ``flat_subset`` examples (generator ``flatness.subset``)."""
    def compute():
        idx = ctx.subset(int(ctx.knob(SUBSET)), "flatness.subset")
        return ctx.x[idx], ctx.y[idx]
    return ctx.cached("flatness.set", compute)


def measure_batches(ctx: MeasureContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`search_set` in batches of ``eval_batch`` examples."""
    x, y = search_set(ctx)
    b = int(ctx.knob("eval_batch"))
    return [(x[i:i + b], y[i:i + b]) for i in range(0, len(x), b)]


def err0(ctx: MeasureContext) -> tuple[int, int]:
    """(wrong, n) of the unperturbed network on the examples the searches use."""
    def compute():
        with torch.no_grad():
            n_wrong = sum(int(core.wrong(ctx.forward(ctx.params, xb), yb))
                          for xb, yb in measure_batches(ctx))
        return n_wrong, len(search_set(ctx)[1])
    return ctx.cached("flatness.err0", compute)


def _weights(params: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([params[n].reshape(-1) for n in names]).double()


def _chunk_size(ctx: MeasureContext, total: int) -> int:
    """Draws per vmapped chunk: 1 on the CPU (a loop is as fast there and lets the
    mean stop early), else as many as the memory budget holds."""
    if ctx.device.type == "cpu":
        return 1
    bsz = max(len(yb) for _, yb in measure_batches(ctx))
    return min(total, core.networks_per_chunk(ctx, bsz))


def _bisect(crit: Callable[[float], tuple[bool, float]], s_max: float, depth: int,
            rtol: float, expand: int, what: str) -> tuple[float, float, float, int]:
    """Largest scale seen to meet ``crit``: (lo, hi, stat at lo, evaluations)."""
    hi = float(s_max)
    ok, stat = crit(hi)
    n = 1
    lo, stat_lo = 0.0, math.nan
    while ok:
        if n > expand:
            raise Undefined(f"{what}: criterion still met at scale {hi:.4g} after "
                            f"{expand} doublings of s_max; raise flat_{what}_max")
        lo, stat_lo = hi, stat
        hi *= 2
        ok, stat = crit(hi)
        n += 1
    for _ in range(depth):
        if hi - lo <= rtol * hi:
            break
        mid = 0.5 * (lo + hi)
        ok, stat = crit(mid)
        n += 1
        if ok:
            lo, stat_lo = mid, stat
        else:
            hi = mid
    if lo <= 0:
        raise Undefined(f"{what}: no scale in (0, {hi:.4g}] meets the criterion "
                        f"(err rises by more than δ={DELTA} everywhere tried); "
                        f"lower flat_{what}_max or raise flat_depth")
    return lo, hi, stat_lo, n


def _check_room(what: str, wrong0: int, n: int) -> None:
    if wrong0 / n + DELTA >= 1.0:
        raise Undefined(f"{what}: training error err(w) = {wrong0 / n:.3f} leaves no room "
                        f"for a rise of δ = {DELTA} (any perturbation meets the criterion)")


# -- Monte-Carlo scales σ, σ' ---------------------------------------------------

def _mc_wrong(ctx: MeasureContext, noise: Callable[[torch.Tensor], torch.Tensor],
              gen_name: str, samples: int, budget: float) -> list[int]:
    """Wrong predictions of each of the ``samples`` draws ``w + noise(z_k)``, in draw order.

    Stops early, returning the draws counted so far, once their total exceeds ``budget``.
    """
    gen = ctx.generator(gen_name)
    w = core.flat(ctx)
    chunk = _chunk_size(ctx, samples)
    per_draw: list[int] = []
    while len(per_draw) < samples:
        k = min(chunk, samples - len(per_draw))
        z = torch.stack([torch.randn(w.numel(), generator=gen) for _ in range(k)])
        pert = w + noise(z.to(ctx.device, w.dtype))          # k × P
        counts = torch.zeros(k, dtype=torch.long, device=ctx.device)
        with torch.no_grad():
            for xb, yb in measure_batches(ctx):
                if k == 1:  # a plain forward pass: vmap over one network rounds differently
                    counts += core.at(ctx, pert[0], xb, yb, core.wrong)
                else:
                    counts += core.over_networks(ctx, pert, xb, yb, core.wrong)
        per_draw.extend(int(c) for c in counts.tolist())
        if sum(per_draw) > budget:
            break
    return per_draw


def _mc_criterion(ctx: MeasureContext, what: str, wrong0: int, n: int
                  ) -> Callable[[float], tuple[bool, float]]:
    """The Monte-Carlo criterion at scale s, with its sampling error: held when the
    upper confidence bound of the mean rise, ``mean + z·sd/√M`` (sd of the M per-draw
    error rates, z = ``flat_confidence``), is ≤ δ. Mean and bound are of the same M
    common-random-number draws at every scale; the early stop stays exact because the
    bound is never below the mean."""
    samples = int(ctx.knob(SAMPLES))
    if samples < 1:
        raise ValueError("flat_samples must be ≥ 1")
    z_conf = float(ctx.knob(CONFIDENCE))
    w = core.flat(ctx)
    total = samples * n
    limit = (DELTA + TOL) * total + samples * wrong0      # Σ wrong > limit ⇒ mean violates

    def crit(s: float) -> tuple[bool, float]:
        if what == "sigma":
            noise = lambda z: s * z                                   # noqa: E731
        else:
            std = torch.sqrt(s * s * w * w + EPS * EPS)
            noise = lambda z: z * std                                 # noqa: E731
        per_draw = _mc_wrong(ctx, noise, f"flatness.{what}", samples, limit)
        wrong = sum(per_draw)
        if wrong > limit or len(per_draw) < samples:
            return False, wrong / total
        sd = statistics.stdev(per_draw) / n if samples > 1 and z_conf > 0 else 0.0
        ucb = (wrong / total - wrong0 / n) + z_conf * sd / math.sqrt(samples)
        return ucb <= DELTA + TOL, wrong / total
    return crit


# -- worst-case scales α, α' ----------------------------------------------------

def _worst_wrong(ctx: MeasureContext, b: torch.Tensor, gen_name: str, steps: int,
                 restarts: int, budget: int) -> int:
    """Most wrong predictions at any point of the projected ascent in ``|v| ≤ b``.

    Stops early once a point exceeds ``budget``.
    """
    gen = ctx.generator(gen_name)
    w = core.flat(ctx)
    x, y = search_set(ctx)
    step = 2.5 / max(steps, 1)
    worst = 0
    for _ in range(restarts):
        t = (2 * torch.rand(w.numel(), generator=gen) - 1).to(ctx.device, b.dtype)
        for it in range(steps + 1):
            v = w + b * t
            if it < steps:
                _, g, n_wrong = core.loss_and_grad(ctx, v, x, y)
            else:
                with torch.no_grad():
                    n_wrong = sum(core.at(ctx, v, xb, yb, core.wrong)
                                  for xb, yb in measure_batches(ctx))
            worst = max(worst, int(n_wrong))
            if worst > budget:
                return worst
            if it < steps:
                t = (t + step * torch.sign(g)).clamp_(-1.0, 1.0)
    return worst


def _worst_criterion(ctx: MeasureContext, what: str, wrong0: int, n: int
                     ) -> Callable[[float], tuple[bool, float]]:
    steps, restarts = int(ctx.knob(STEPS)), int(ctx.knob(RESTARTS))
    if steps < 0 or restarts < 1:
        raise ValueError("flat_steps must be ≥ 0 and flat_restarts ≥ 1")
    w = core.flat(ctx)
    limit = (DELTA + TOL) * n + wrong0

    def crit(s: float) -> tuple[bool, float]:
        b = torch.full_like(w, s) if what == "alpha" else s * (w.abs() + EPS)
        wrong = _worst_wrong(ctx, b, f"flatness.{what}", steps, restarts, limit)
        return wrong <= limit, wrong / n
    return crit


def _search(ctx: MeasureContext, what: str) -> Search:
    wrong0, n = err0(ctx)
    _check_room(what, wrong0, n)
    crit = (_mc_criterion if what.startswith("sigma") else _worst_criterion)(ctx, what, wrong0, n)
    lo, hi, stat, evals = _bisect(crit, ctx.knob(_MAX_KNOB[what]), int(ctx.knob(DEPTH)),
                                  float(ctx.knob(RTOL)), int(ctx.knob(EXPAND)), what)
    return Search(lo, hi, stat, wrong0 / n, evals)


def search(ctx: MeasureContext, what: str) -> Search:
    """The searched scale ``what`` ∈ {sigma, sigma_mag, alpha, alpha_mag}, memoised."""
    if what not in _MAX_KNOB:
        raise ValueError(f"unknown searched scale {what!r}; one of {', '.join(_MAX_KNOB)}")
    return ctx.cached(f"flatness.{what}", lambda: _search(ctx, what))


# -- the bound-shaped measures ----------------------------------------------------

def _sq_norm(ctx: MeasureContext, init: bool) -> float:
    """‖w − w0‖² (init) or ‖w‖² over all trainable parameters, in float64."""
    d = core.flat(ctx).double()
    if init:
        d = d - core.flat(ctx, ctx.init_params).double()
    return float(d.pow(2).sum())


def _mag_term(ctx: MeasureContext, s: float, init: bool) -> float:
    """¼ Σ_i log((ε² + (s²+1)‖d‖²/ω) / (ε² + s²d_i²)) + log(m/s) + 10, d = w − w0 or w,
    i over the weight scalars."""
    core.omega(ctx)  # Undefined without weight tensors
    names = core.weight_names(ctx)
    d = _weights(ctx.params, names)
    if init:
        d = d - _weights(ctx.init_params, names)
    num = EPS**2 + (s * s + 1) * float(d.pow(2).sum()) / d.numel()
    terms = torch.log(num / (EPS**2 + s * s * d.pow(2)))
    return 0.25 * float(terms.sum()) + math.log(ctx.m / s) + 10


def _pac(ctx: MeasureContext, s: float, init: bool) -> float:
    return _sq_norm(ctx, init) / (4 * s * s) + math.log(ctx.m / s) + 10


def _sharp(ctx: MeasureContext, a: float, init: bool) -> float:
    return _sq_norm(ctx, init) * math.log(2 * core.omega(ctx)) / (4 * a * a) + math.log(ctx.m / a) + 10


_MC = (SAMPLES, CONFIDENCE, DEPTH, RTOL, EXPAND, SUBSET, core.MEMORY_MB)
_WC = (STEPS, RESTARTS, DEPTH, RTOL, EXPAND, SUBSET)


@register("pacbayes_init", "flatness", CITE, knobs=_MC + (SIGMA_MAX,), needs=("init",), version=2, stochastic=True)
def pacbayes_init(ctx: MeasureContext) -> float:
    """‖w − w0‖²/(4σ²) + log(m/σ) + 10, σ the searched PAC-Bayes scale."""
    return _pac(ctx, search(ctx, "sigma").scale, init=True)


@register("pacbayes_orig", "flatness", CITE, knobs=_MC + (SIGMA_MAX,), version=2, stochastic=True)
def pacbayes_orig(ctx: MeasureContext) -> float:
    """‖w‖²/(4σ²) + log(m/σ) + 10, σ the searched PAC-Bayes scale."""
    return _pac(ctx, search(ctx, "sigma").scale, init=False)


@register("pacbayes_flatness", "flatness", CITE, knobs=_MC + (SIGMA_MAX,), version=2, stochastic=True)
def pacbayes_flatness(ctx: MeasureContext) -> float:
    """1/σ², σ the searched PAC-Bayes scale."""
    return 1.0 / search(ctx, "sigma").scale ** 2


@register("pacbayes_mag_init", "flatness", CITE, knobs=_MC + (SIGMA_MAG_MAX,), needs=("init",), version=2, stochastic=True)
def pacbayes_mag_init(ctx: MeasureContext) -> float:
    """¼ Σ_i log((ε² + (σ'²+1)‖w−w0‖²/ω)/(ε² + σ'²(w_i−w0_i)²)) + log(m/σ') + 10."""
    return _mag_term(ctx, search(ctx, "sigma_mag").scale, init=True)


@register("pacbayes_mag_orig", "flatness", CITE, knobs=_MC + (SIGMA_MAG_MAX,), version=2, stochastic=True)
def pacbayes_mag_orig(ctx: MeasureContext) -> float:
    """¼ Σ_i log((ε² + (σ'²+1)‖w‖²/ω)/(ε² + σ'²w_i²)) + log(m/σ') + 10."""
    return _mag_term(ctx, search(ctx, "sigma_mag").scale, init=False)


@register("pacbayes_mag_flatness", "flatness", CITE, knobs=_MC + (SIGMA_MAG_MAX,), version=2, stochastic=True)
def pacbayes_mag_flatness(ctx: MeasureContext) -> float:
    """1/σ'², σ' the searched magnitude-aware PAC-Bayes scale."""
    return 1.0 / search(ctx, "sigma_mag").scale ** 2


@register("sharpness_init", "flatness", CITE, knobs=_WC + (ALPHA_MAX,), needs=("init",), stochastic=True)
def sharpness_init(ctx: MeasureContext) -> float:
    """‖w − w0‖² log(2ω)/(4α²) + log(m/α) + 10, α the searched worst-case scale."""
    return _sharp(ctx, search(ctx, "alpha").scale, init=True)


@register("sharpness_orig", "flatness", CITE, knobs=_WC + (ALPHA_MAX,), stochastic=True)
def sharpness_orig(ctx: MeasureContext) -> float:
    """‖w‖² log(2ω)/(4α²) + log(m/α) + 10, α the searched worst-case scale."""
    return _sharp(ctx, search(ctx, "alpha").scale, init=False)


@register("sharpness_flatness", "flatness", CITE, knobs=_WC + (ALPHA_MAX,), stochastic=True)
def sharpness_flatness(ctx: MeasureContext) -> float:
    """1/α², α the searched worst-case scale."""
    return 1.0 / search(ctx, "alpha").scale ** 2


@register("sharpness_mag_init", "flatness", CITE, knobs=_WC + (ALPHA_MAG_MAX,), needs=("init",),
          version=2, stochastic=True)
def sharpness_mag_init(ctx: MeasureContext) -> float:
    """pacbayes_mag_init's formula with the magnitude-aware worst-case scale α' for σ'."""
    return _mag_term(ctx, search(ctx, "alpha_mag").scale, init=True)


@register("sharpness_mag_orig", "flatness", CITE, knobs=_WC + (ALPHA_MAG_MAX,), version=2, stochastic=True)
def sharpness_mag_orig(ctx: MeasureContext) -> float:
    """pacbayes_mag_orig's formula with the magnitude-aware worst-case scale α' for σ'."""
    return _mag_term(ctx, search(ctx, "alpha_mag").scale, init=False)


@register("sharpness_mag_flatness", "flatness", CITE, knobs=_WC + (ALPHA_MAG_MAX,), version=2, stochastic=True)
def sharpness_mag_flatness(ctx: MeasureContext) -> float:
    """1/α'², α' the searched magnitude-aware worst-case scale."""
    return 1.0 / search(ctx, "alpha_mag").scale ** 2


@register("pacbayes_bound", "flatness",
          "Dziugaite & Roy 2017 (PAC-Bayes bound); Jiang et al. 2020 (searched σ)",
          knobs=_MC + (SIGMA_MAX,), needs=("init",), version=2, stochastic=True)
def pacbayes_bound(ctx: MeasureContext) -> float:
    """ê + sqrt((‖w−w0‖²/(2σ²) + log(2√m/0.05)) / (2m)): posterior N(w, σ²I), prior
    N(w0, σ²I), ê the Monte-Carlo training error of the posterior at the searched σ."""
    s = search(ctx, "sigma")
    m = ctx.m
    kl = _sq_norm(ctx, init=True) / (2 * s.scale ** 2)
    return s.stat + math.sqrt((kl + math.log(2 * math.sqrt(m) / 0.05)) / (2 * m))
