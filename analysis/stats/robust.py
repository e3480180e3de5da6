"""Robust sign-error over environments (Dziugaite et al. 2020, "In search of robust measures of generalization").

An environment is an unordered pair of grid configurations (distinct rows
of axis values) that differ in exactly one axis; every pairing of a run of
one with a run of the other (all seeds against all seeds) is a sample.
Per sample ``(i, j)``: sign error ``e = (1 − sign(μ_i − μ_j)·sign(g_i − g_j))/2``
and weight ``w = max(0, v − ½)`` with
``v = max(0, 1 − 2·exp(−2n(|g_i − g_j|/2)²))²``, ``n`` the test-set size
(the smaller of the two runs' when they differ). An environment's loss is
the ``w``-weighted mean of ``e``; it is kept when its effective sample size
``(Σw)²/Σw²`` reaches ``min_ess`` (with a relative tolerance of 1e-12, so that
``k`` equal weights give ESS ``k`` exactly). Reported per axis and over all
axes: mean, 90th percentile (linear interpolation), maximum, number kept.
The robust figure is the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from ._parallel import run_ranges
from ._ranks import Ranked, axis_codes, rank_inputs, row_codes


@nb.njit(cache=True, nogil=True)
def _robust_range(env_a, env_b, cstart, corder, g, ntest, mr, e_lo, e_hi, SW, SW2, SWE):
    """Σw, Σw² and Σw·e of environments ``e_lo..e_hi`` for every measure."""
    M = mr.shape[1]
    for e in range(e_lo, e_hi):
        sw = np.zeros(M)
        sw2 = np.zeros(M)
        swe = np.zeros(M)
        A = env_a[e]
        B = env_b[e]
        for ia in range(cstart[A], cstart[A + 1]):
            i = corder[ia]
            for jb in range(cstart[B], cstart[B + 1]):
                j = corder[jb]
                dg = g[i] - g[j]
                n = min(ntest[i], ntest[j])
                h = abs(dg) / 2.0
                v = max(0.0, 1.0 - 2.0 * np.exp(-2.0 * n * h * h)) ** 2
                w = v - 0.5
                if w <= 0.0:
                    continue
                hsg = 0.5 if dg > 0 else -0.5
                ri = mr[i]
                rj = mr[j]
                for m in range(M):
                    a = ri[m]
                    b = rj[m]
                    wv = w * ((a >= 0) & (b >= 0))
                    sm = np.float64(a > b) - np.float64(a < b)
                    sw[m] += wv
                    sw2[m] += wv * w
                    swe[m] += wv * (0.5 - sm * hsg)
        SW[e] = sw
        SW2[e] = sw2
        SWE[e] = swe


def environments(ax: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Configurations and environments of an axis-code matrix ``(n, K)``.

    Returns ``(config_of_run, env_a, env_b, env_axis)``: the environments are
    the pairs of configurations (``env_a < env_b``) that differ in exactly
    axis ``env_axis``.
    """
    cid = row_codes(ax)
    n_conf = int(cid.max()) + 1 if len(cid) else 0
    cax = np.zeros((n_conf, ax.shape[1]), dtype=np.int64)
    cax[cid] = ax
    ea, eb, ek = [], [], []
    for k in range(ax.shape[1]):
        key = row_codes(np.delete(cax, k, axis=1))
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1], True])
        sizes = np.diff(bounds)
        for size in np.unique(sizes[sizes >= 2]):
            starts = bounds[:-1][sizes == size]
            iu, ju = np.triu_indices(size, k=1)
            a = order[starts[:, None] + iu[None, :]].reshape(-1)
            b = order[starts[:, None] + ju[None, :]].reshape(-1)
            ea.append(np.minimum(a, b))
            eb.append(np.maximum(a, b))
            ek.append(np.full(len(a), k))
    cat = (lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64))
    return cid, cat(ea), cat(eb), cat(ek)


def _summary(x: np.ndarray) -> tuple[float, float, float, int]:
    if len(x) == 0:
        return np.nan, np.nan, np.nan, 0
    return float(x.mean()), float(np.percentile(x, 90)), float(x.max()), len(x)


@dataclass
class RobustResult:
    """Environment losses of every measure and their summaries.

    ``env_axis[e]``: the axis environment ``e`` varies; ``loss[m, e]``: its
    loss for measure ``m`` (NaN where not kept); ``ess[m, e]``: its ESS.
    ``overall[m]`` and ``per_axis[m][k]`` are ``(mean, p90, max, n_kept)``.
    """

    env_axis: np.ndarray
    loss: np.ndarray
    ess: np.ndarray
    overall: list[tuple[float, float, float, int]]
    per_axis: list[list[tuple[float, float, float, int]]]


def robust_sign_error(g: np.ndarray, mu: np.ndarray, axes: np.ndarray, n_test, min_ess: float = 12.0
                      ) -> RobustResult:
    """Dziugaite et al.'s robust sign-error of each measure (module docstring).

    ``axes``: ``(n, K)`` axis values; ``n_test``: the test-set size, a number
    or one per run. NaN/inf measure values leave the run out for that measure.
    """
    g_all = np.asarray(g, dtype=np.float64).reshape(-1)
    rk = rank_inputs(g_all, mu)
    ax = axis_codes(axes, len(g_all))[rk.keep]
    nt = np.broadcast_to(np.asarray(n_test, dtype=np.float64), g_all.shape)[rk.keep]
    return robust_ranked(rk, ax, nt, min_ess)


def robust_ranked(rk: Ranked, ax: np.ndarray, n_test: np.ndarray, min_ess: float = 12.0) -> RobustResult:
    """:func:`robust_sign_error` on prepared ranks and codes (runs with a finite gap only)."""
    nt = np.ascontiguousarray(np.broadcast_to(np.asarray(n_test, dtype=np.float64), (rk.n,)))
    if not np.all(np.isfinite(nt) & (nt > 0)):
        raise ValueError("the test-set size must be a positive number for every run (n_test column or robust_n)")
    ax = np.asarray(ax, dtype=np.int64)
    K = ax.shape[1]
    M = rk.n_measures
    cid, ea, eb, ek = environments(ax)
    corder = np.argsort(cid, kind="stable").astype(np.int64)
    cstart = np.searchsorted(cid[corder], np.arange(int(cid.max()) + 2 if len(cid) else 1)).astype(np.int64)
    SW, SW2, SWE = (np.zeros((len(ea), M)) for _ in range(3))
    run_ranges(lambda lo, hi: _robust_range(ea, eb, cstart, corder, rk.g, nt, rk.mr, lo, hi, SW, SW2, SWE),
               len(ea))
    with np.errstate(invalid="ignore", divide="ignore"):
        ess = np.where(SW2 > 0, SW * SW / np.where(SW2 > 0, SW2, 1.0), 0.0).T
        loss = np.where(SW > 0, SWE / np.where(SW > 0, SW, 1.0), np.nan).T
    kept = ess >= min_ess * (1.0 - 1e-12)
    loss = np.where(kept, loss, np.nan)
    overall, per_axis = [], []
    for m in range(M):
        row = loss[m]
        overall.append(_summary(row[kept[m]]))
        per_axis.append([_summary(row[kept[m] & (ek == k)]) for k in range(K)])
    return RobustResult(ek, loss, ess, overall, per_axis)
