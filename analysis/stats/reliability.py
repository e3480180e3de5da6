"""Test–retest reliability of a measure over a study, and the ceiling it puts on |τ|.

A stochastic measure computed with ``[measures] repeats = R`` stores, per network i, the
mean x_i of R independent draws and their sample standard deviation s_i (ddof = 1). Over
the n networks of a study (those with a finite value; ``R_i`` may differ between them):

    V   = Σ_i (x_i − x̄)² / (n − 1)     total variance: the variance across networks of
                                         the stored values (sample variance, ddof = 1)
    W   = (1/n) Σ_i s_i²                 mean within-network variance of ONE draw
    W_R = (1/n) Σ_i s_i² / R_i           mean within-network variance of the stored mean

    reliability of the stored value   r_R = 1 − W_R / V
    reliability of one draw           r_1 = 1 − W / (V − W_R + W)

``V − W_R`` estimates the variance of the networks' true values (each network's mean over
infinitely many draws), ``V − W_R + W`` the total variance of a single draw, so r_1 is the
reliability a study with ``repeats = 1`` would have. With one R for all networks,
r_1 = r_R / (R − (R − 1)·r_R), the Spearman–Brown formula stepped down from R draws to one
(Spearman 1910; Brown 1910). Both are intraclass-correlation (one-way random effects)
estimates and can be negative when the redraw noise exceeds the spread between networks.

τ ceiling. If the stored value is X = T + E with noise E independent of the true value T
and of the gap G, and (X, G) is bivariate normal, then corr(X, G) = corr(T, G)·√r_R ≤ √r_R
(Spearman 1904, the attenuation of a correlation by unreliability), and Kendall's τ of a
bivariate normal pair is (2/π)·arcsin ρ (Greiner's relation; Kruskal 1958, "Ordinal
measures of association", JASA 53). Hence

    τ_max = (2/π)·arcsin(√max(r_R, 0))

the largest |τ| the stored values can reach against the gap, from the reliability of the
values τ is computed on (r_R, not r_1). It is a model-based bound, not a guarantee for
non-normal data.

Conventions: a deterministic measure is stored with s_i = 0 (not repeated), so r_R = r_1 =
τ_max = 1 whenever V > 0. NaN where not defined: fewer than two networks with a finite
value, any such network without a finite sd (``repeats = 1``, no ``measure_sd`` column) or
without a repeat count ≥ 1, V = 0, or a non-positive denominator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReliabilityResult:
    """Per measure, shape ``(M,)``: ``one_draw`` (r_1), ``of_mean`` (r_R, the stored
    values'), ``tau_ceiling`` (τ_max from r_R) and ``n`` (networks used)."""

    one_draw: np.ndarray
    of_mean: np.ndarray
    tau_ceiling: np.ndarray
    n: np.ndarray


def tau_ceiling(rel) -> np.ndarray:
    """(2/π)·arcsin(√max(rel, 0)), capped at 1: the |τ| ceiling of a measure of reliability
    ``rel`` under the bivariate-normal model (module docstring). NaN stays NaN."""
    r = np.asarray(rel, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(r), np.nan, 2 / np.pi * np.arcsin(np.sqrt(np.clip(r, 0.0, 1.0))))


def reliability(mu, sd, repeats) -> ReliabilityResult:
    """Reliability of each measure over a study (module docstring for the formulas).

    ``mu``: the stored values, shape ``(n,)`` or ``(n, M)``; ``sd``: the sample standard
    deviations of one draw (``measure_sd.<name>``), the same shape; ``repeats``: the number
    of draws R_i averaged in each value: a number, shape ``(n,)`` (per network) or the
    shape of ``mu``. A 1-D ``mu`` is one measure: the results have shape ``(1,)``. Networks with a NaN or
    infinite value are left out, per measure.
    """
    mu = np.asarray(mu, dtype=np.float64)
    mu = mu.reshape(len(mu), -1)
    sd = np.asarray(sd, dtype=np.float64).reshape(mu.shape)
    rep = np.asarray(repeats, dtype=np.float64)
    rep = np.broadcast_to(rep[:, None] if rep.ndim == 1 else rep.reshape(rep.shape or (1, 1)), mu.shape)
    M = mu.shape[1]
    r1, rR, n = np.full(M, np.nan), np.full(M, np.nan), np.zeros(M, dtype=np.int64)
    for j in range(M):
        keep = np.isfinite(mu[:, j])
        x, s, R = mu[keep, j], sd[keep, j], rep[keep, j]
        n[j] = len(x)
        if len(x) < 2 or not (np.all(np.isfinite(s)) and np.all(s >= 0) and np.all(R >= 1)):
            continue
        V = float(np.var(x, ddof=1))
        W = float(np.mean(s * s))
        WR = float(np.mean(s * s / R))
        if not V > 0:
            continue
        rR[j] = 1.0 - WR / V
        denom = V - WR + W
        if denom > 0:
            r1[j] = 1.0 - W / denom
    return ReliabilityResult(r1, rR, tau_ceiling(rR), n)
