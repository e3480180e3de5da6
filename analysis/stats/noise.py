"""The noise floor of a study's outcome (CLAIMS.md, "Noise floor of the outcome").

- :func:`binomial_se`: the standard error of a test accuracy ``a`` on ``n`` test examples,
  ``√(a(1 − a)/n)``.
- :func:`within_configuration`: over the configurations with two or more finite values, the
  pooled within-configuration variance ``Σ_c Σ_i (g_ci − ḡ_c)² / Σ_c (n_c − 1)``, the variance of
  those values (``ddof = 1``) and the number of such configurations.
- :func:`icc`: ``ICC = 1 − pooled within variance / variance``, the share of the outcome's
  variance that the configuration explains (a one-way intra-class correlation; below 0 when the
  seeds disagree more than the configurations do).
- :func:`seeds_for_reliability`: Spearman–Brown: the mean of ``k`` seeds has reliability
  ``k·ICC / (1 + (k − 1)·ICC)``; it reaches ``R`` at ``k = R(1 − ICC) / ((1 − R)·ICC)``, i.e.
  ``k = 4(1 − ICC)/ICC`` for ``R = 0.8``. ``ICC ≤ 0``: no number of seeds does (inf).
"""

from __future__ import annotations

import math

import numpy as np


def binomial_se(acc: float, n: float) -> float:
    """``√(acc(1 − acc)/n)``; NaN unless ``0 ≤ acc ≤ 1`` and ``n > 0``."""
    if not (np.isfinite(acc) and np.isfinite(n) and 0 <= acc <= 1 and n > 0):
        return math.nan
    return math.sqrt(acc * (1.0 - acc) / n)


def within_configuration(values, config) -> tuple[float, float, int]:
    """(pooled within-configuration variance, variance, configurations used) over the
    configurations (integer labels ``config``) with two or more finite ``values``."""
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(config)
    keep = np.isfinite(v)
    v, c = v[keep], c[keep]
    labels, inv, counts = np.unique(c, return_inverse=True, return_counts=True)
    multi = counts[inv] >= 2
    v, inv = v[multi], inv[multi]
    used = int((counts >= 2).sum())
    if used == 0:
        return math.nan, math.nan, 0
    means = np.bincount(inv, weights=v, minlength=len(labels)) / np.maximum(np.bincount(inv, minlength=len(labels)), 1)
    within = float(np.sum((v - means[inv]) ** 2) / (len(v) - used))
    return within, float(np.var(v, ddof=1)), used


def icc(within: float, total: float) -> float:
    """``1 − within / total``; NaN where ``total`` is not positive."""
    if not (np.isfinite(within) and np.isfinite(total)) or total <= 0:
        return math.nan
    return 1.0 - within / total


def seeds_for_reliability(icc_value: float, target: float = 0.8) -> float:
    """Seeds per configuration whose mean reaches reliability ``target`` (Spearman–Brown)."""
    if not np.isfinite(icc_value):
        return math.nan
    if icc_value <= 0:
        return math.inf
    return target * (1.0 - icc_value) / ((1.0 - target) * icc_value)
