"""p-values, Holm's multiplicity adjustment and exact binomial bounds (CLAIMS.md, "Statistics used here").

- :func:`bootstrap_p`: the two-sided p of an estimate against a threshold ``t`` from its ``B``
  finite bootstrap replicates, ``p = min(1, 2·(1 + k) / (B + 1))`` with ``k`` the replicates on
  the far side of ``t`` from the estimate (strictly), plus ½ for each replicate equal to ``t``.
  An estimate equal to ``t`` has no far side: ``p = 1``. No finite replicate or estimate: NaN.
- :func:`holm`: Holm–Bonferroni (Holm 1979) adjusted p-values of one family: with the ``m``
  finite p sorted, ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))``; NaN entries stay NaN and
  are not counted in ``m``.
- :func:`clopper_pearson`: the exact one-sided bounds of a binomial proportion (Clopper & Pearson
  1934) from ``k`` successes in ``n``: the lower bound ``L`` solves ``P(X ≥ k | L) = α`` (0 for
  ``k = 0``), the upper ``U`` solves ``P(X ≤ k | U) = α`` (1 for ``k = n``); found by bisection on
  the binomial tails, summed exactly in log space (no beta quantile is used, so that the tests
  can check against ``scipy.stats.beta``).
- :func:`binomial_p`: the two-sided exact p of ``k`` of ``n`` against a proportion ``t``,
  ``min(1, 2·min(P(X ≥ k | t), P(X ≤ k | t)))``: ``L ≥ t`` exactly when ``P(X ≥ k | t) ≤ α``.
"""

from __future__ import annotations

import math

import numpy as np


def bootstrap_p(reps: np.ndarray, estimate: float, threshold: float) -> float:
    """The bootstrap p-value of ``estimate`` against ``threshold`` (module docstring)."""
    r = np.asarray(reps, dtype=np.float64)
    r = r[np.isfinite(r)]
    if not len(r) or not np.isfinite(estimate):
        return math.nan
    if estimate == threshold:
        return 1.0
    far = (r < threshold) if estimate > threshold else (r > threshold)
    k = float(far.sum()) + 0.5 * float((r == threshold).sum())
    return min(1.0, 2.0 * (1.0 + k) / (len(r) + 1.0))


def holm(p) -> np.ndarray:
    """Holm-adjusted p-values of the family ``p`` (module docstring), in the input order."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def _log_pmf(j: int, n: int, q: float) -> float:
    if q <= 0.0:
        return 0.0 if j == 0 else -math.inf
    if q >= 1.0:
        return 0.0 if j == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
            + j * math.log(q) + (n - j) * math.log1p(-q))


def binom_tail(k: int, n: int, q: float, upper: bool) -> float:
    """``P(X ≥ k)`` (``upper``) or ``P(X ≤ k)`` for ``X ~ Binomial(n, q)``, summed exactly."""
    js = range(k, n + 1) if upper else range(0, k + 1)
    logs = [_log_pmf(j, n, q) for j in js]
    top = max(logs, default=-math.inf)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def _solve(f, target: float) -> float:
    """The ``q`` in [0, 1] where the increasing function ``f`` crosses ``target`` (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact one-sided ``level`` lower and upper bounds of a proportion from ``k`` of ``n``."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 ≤ k ≤ n and n > 0, got k = {k}, n = {n}")
    a = 1.0 - level
    lower = 0.0 if k == 0 else _solve(lambda q: binom_tail(k, n, q, upper=True), a)
    upper = 1.0 if k == n else _solve(lambda q: -binom_tail(k, n, q, upper=False), -a)
    return lower, upper


def binomial_p(k: int, n: int, t: float) -> float:
    """The two-sided exact binomial p of ``k`` of ``n`` against the proportion ``t``."""
    if n <= 0:
        return math.nan
    return min(1.0, 2.0 * min(binom_tail(k, n, t, upper=True), binom_tail(k, n, t, upper=False)))
