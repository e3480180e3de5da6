"""Kendall's τ in Jiang et al.'s form (τ-a), in O(n log n).

``τ(μ) = 2/(n(n−1)) · Σ_{i<j} sign(μ_i − μ_j) · sign(g_i − g_j)`` with
``sign(0) = 0`` (Jiang et al. 2020, "Fantastic generalization measures and
where to find them", eq. 2). Ties count as neither concordant nor
discordant, so this is τ-a, not scipy's default τ-b.

Method (Knight 1966, adapted to τ-a): sort the runs by (g, μ); the
discordant pairs are then exactly the strict inversions of the μ sequence,
counted by a bottom-up merge sort. With ``T_g``, ``T_μ``, ``T_gμ`` the pairs
tied in g, in μ and in both, the concordant pairs are
``P − D − T_g − T_μ + T_gμ`` for ``P = n(n−1)/2`` pairs in all.

Integer run weights (bootstrap multiplicities) are supported: a run with
weight ``c`` stands for ``c`` copies of it, and the copies are tied with each
other in both g and μ.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._parallel import run_ranges
from ._ranks import Ranked, rank_inputs


@nb.njit(cache=True, nogil=True)
def _weighted_inversions(y: np.ndarray, w: np.ndarray) -> int:
    """Σ w_p·w_q over positions p < q with y[p] > y[q] (strict), by bottom-up merge sort."""
    n = y.shape[0]
    a = y.copy()
    aw = w.copy()
    b = np.empty_like(a)
    bw = np.empty_like(aw)
    inv = 0
    width = 1
    while width < n:
        lo = 0
        while lo < n:
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            left_w = 0
            for t in range(lo, mid):
                left_w += aw[t]
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                if a[i] <= a[j]:
                    b[k] = a[i]
                    bw[k] = aw[i]
                    left_w -= aw[i]
                    i += 1
                else:
                    b[k] = a[j]
                    bw[k] = aw[j]
                    inv += aw[j] * left_w
                    j += 1
                k += 1
            while i < mid:
                b[k] = a[i]
                bw[k] = aw[i]
                i += 1
                k += 1
            while j < hi:
                b[k] = a[j]
                bw[k] = aw[j]
                j += 1
                k += 1
            lo += 2 * width
        a, b = b, a
        aw, bw = bw, aw
        width *= 2
    return inv


@nb.njit(cache=True, nogil=True)
def tau_sorted(x: np.ndarray, y: np.ndarray, w: np.ndarray, ny: int) -> float:
    """τ-a of ranks ``x`` (gap) and ``y`` (measure, ``0 ≤ y < ny``) already sorted by (x, y), weights ``w``."""
    n_all = 0
    for t in range(w.shape[0]):
        n_all += w[t]
    if n_all < 2:
        return np.nan
    total = n_all * (n_all - 1) // 2
    tx = 0
    txy = 0
    n = x.shape[0]
    s = 0
    while s < n:
        e = s
        wx = 0
        while e < n and x[e] == x[s]:
            wx += w[e]
            e += 1
        tx += wx * (wx - 1) // 2
        u = s
        while u < e:
            v = u
            wxy = 0
            while v < e and y[v] == y[u]:
                wxy += w[v]
                v += 1
            txy += wxy * (wxy - 1) // 2
            u = v
        s = e
    cnt = np.zeros(ny, dtype=np.int64)
    for t in range(n):
        cnt[y[t]] += w[t]
    ty = 0
    for r in range(ny):
        ty += cnt[r] * (cnt[r] - 1) // 2
    disc = _weighted_inversions(y, w)
    return (total - tx - ty + txy - 2 * disc) / total


@nb.njit(cache=True, nogil=True)
def tau_small(x: np.ndarray, y: np.ndarray) -> float:
    """τ-a by the definition's double loop, for short unweighted arrays (granulated τ groups)."""
    n = x.shape[0]
    if n < 2:
        return np.nan
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = x[i] - x[j]
            dy = y[i] - y[j]
            s += ((dx > 0) - (dx < 0)) * ((dy > 0) - (dy < 0))
    return 2.0 * s / (n * (n - 1))


@nb.njit(cache=True, nogil=True)
def tau_unsorted(x: np.ndarray, y: np.ndarray) -> float:
    """τ-a of unweighted integer ranks ``x``, ``y`` (non-negative) in any order."""
    n = x.shape[0]
    if n <= 32:
        return tau_small(x, y)
    ny = 0
    for t in range(n):
        ny = max(ny, y[t] + 1)
    key = x * ny + y
    o = np.argsort(key, kind="mergesort")  # stable in numba
    return tau_sorted(x[o], y[o], np.ones(n, dtype=np.int64), ny)


@nb.njit(cache=True, nogil=True)
def _tau_range(xs, ys, runs, offs, nys, c, m_lo, m_hi, out):
    for m in range(m_lo, m_hi):
        lo = offs[m]
        hi = offs[m + 1]
        w = np.empty(hi - lo, dtype=np.int64)
        for t in range(lo, hi):
            w[t - lo] = c[runs[t]]
        out[m] = tau_sorted(xs[lo:hi], ys[lo:hi], w, nys[m])


@nb.njit(cache=True, nogil=True)
def _tau_reps(xs, ys, runs, offs, nys, counts, r_lo, r_hi, out):
    """τ-a of every measure under each weighting ``counts[r]`` for replicates ``r_lo..r_hi``."""
    M = len(nys)
    for r in range(r_lo, r_hi):
        c = counts[r]
        for m in range(M):
            lo = offs[m]
            hi = offs[m + 1]
            w = np.empty(hi - lo, dtype=np.int64)
            for t in range(lo, hi):
                w[t - lo] = c[runs[t]]
            out[r, m] = tau_sorted(xs[lo:hi], ys[lo:hi], w, nys[m])


class TauPlan:
    """Sorted (g, μ) sequences of every measure, reusable for many weightings."""

    def __init__(self, rk: Ranked):
        self.n = rk.n
        xs, ys, runs, offs = [], [], [], [0]
        for m in range(rk.n_measures):
            idx = np.flatnonzero(rk.mr[:, m] >= 0)
            key = rk.gr[idx] * max(int(rk.nrank[m]), 1) + rk.mr[idx, m]
            idx = idx[np.argsort(key, kind="stable")]
            xs.append(rk.gr[idx])
            ys.append(rk.mr[idx, m].astype(np.int64))
            runs.append(idx)
            offs.append(offs[-1] + len(idx))
        cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
        self.xs = cat(xs, np.int64)
        self.ys = cat(ys, np.int64)
        self.runs = cat(runs, np.int64)
        self.offs = np.asarray(offs, dtype=np.int64)
        self.nys = np.maximum(rk.nrank, 1).astype(np.int64)

    def run(self, weights: np.ndarray | None = None) -> np.ndarray:
        """τ-a of every measure; ``weights`` are integer run multiplicities (default 1)."""
        c = np.ones(self.n, dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
        out = np.full(len(self.nys), np.nan)
        run_ranges(lambda lo, hi: _tau_range(self.xs, self.ys, self.runs, self.offs, self.nys, c, lo, hi, out),
                   len(self.nys))
        return out

    def run_many(self, counts: np.ndarray) -> np.ndarray:
        """τ-a of every measure under each row of ``counts`` (``(B, n)`` run multiplicities): ``(B, M)``."""
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        out = np.full((counts.shape[0], len(self.nys)), np.nan)
        run_ranges(lambda lo, hi: _tau_reps(self.xs, self.ys, self.runs, self.offs, self.nys, counts, lo, hi, out),
                   counts.shape[0])
        return out


def kendall_tau_a(g: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None):
    """Kendall's τ-a between each measure and the gap (Jiang et al. 2020).

    ``mu`` is ``(n,)`` (returns a float) or ``(n, M)`` (returns ``(M,)``);
    NaN/inf values of a measure leave that run out for that measure, a
    non-finite gap leaves the run out everywhere. ``weights`` are integer run
    multiplicities (a bootstrap resample). Fewer than two runs → NaN.
    """
    rk = rank_inputs(g, mu)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.int64)[rk.keep]
    out = TauPlan(rk).run(weights)
    return float(out[0]) if rk.squeeze else out
