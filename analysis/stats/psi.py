"""Granulated Kendall τ: ψ_k per axis and Ψ (Jiang et al. 2020, §4 "granulated Kendall's coefficient").

For axis ``k``: group the runs that agree on every other axis and on the
extra keys (seed, dataset); in every group with two or more runs, take τ-a
over the group; ``ψ_k`` is the unweighted mean over those groups. ``Ψ`` is
the mean of ``ψ_k`` over the axes that take two or more values.

Choices: a group counts for a measure when at least two of its runs have a
finite value of that measure. ``ψ_k`` is NaN for an axis with fewer than two
values, or when no group qualifies (an incomplete grid); ``Ψ`` averages the
defined ``ψ_k`` of the axes with two or more values (NaN if there is none).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._parallel import run_ranges
from ._ranks import Ranked, axis_codes, dense_rank, rank_inputs, row_codes
from .tau import tau_unsorted


@nb.njit(cache=True, nogil=True)
def _psi_range(order, starts, gr, mr, q_lo, q_hi, sums, counts):
    """Add the τ-a of groups ``q_lo..q_hi`` with two or more kept runs to ``sums``, count them in ``counts``."""
    M = mr.shape[1]
    biggest = 0
    for q in range(q_lo, q_hi):
        biggest = max(biggest, starts[q + 1] - starts[q])
    bx = np.empty(biggest, dtype=np.int64)
    by = np.empty(biggest, dtype=np.int64)
    for q in range(q_lo, q_hi):
        lo = starts[q]
        hi = starts[q + 1]
        if hi - lo < 2:
            continue
        for m in range(M):
            k = 0
            for t in range(lo, hi):
                i = order[t]
                r = mr[i, m]
                if r >= 0:
                    bx[k] = gr[i]
                    by[k] = r
                    k += 1
            if k >= 2:
                sums[m] += tau_unsorted(bx[:k], by[:k])
                counts[m] += 1


def _psi_sums(order: np.ndarray, starts: np.ndarray, gr: np.ndarray, mr: np.ndarray):
    M = mr.shape[1]

    def part(lo: int, hi: int):
        sums, counts = np.zeros(M), np.zeros(M, dtype=np.int64)
        _psi_range(order, starts, gr, mr, lo, hi, sums, counts)
        return sums, counts

    parts = run_ranges(part, len(starts) - 1)
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def group_bounds(ax: np.ndarray, free, extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The groups of ψ over the axis columns ``free``: runs equal on every other column of ``ax``
    and on every column of ``extra``. Returns ``(order, starts)``: group ``q`` is
    ``order[starts[q]:starts[q + 1]]`` (groups in the lexicographic order of their values)."""
    ax = np.asarray(ax)
    n = ax.shape[0]
    extra = np.zeros((n, 0), dtype=np.int64) if extra is None else np.asarray(extra).reshape(n, -1)
    others = np.concatenate([np.delete(ax, list(free), axis=1).astype(np.int64), extra.astype(np.int64)], axis=1)
    gid = row_codes(others)
    order = np.argsort(gid, kind="stable")
    starts = np.flatnonzero(np.r_[True, gid[order][1:] != gid[order][:-1], True]) if n else np.zeros(1, np.int64)
    return order.astype(np.int64), starts.astype(np.int64)


def group_taus(g: np.ndarray, mu: np.ndarray, ax: np.ndarray, free, extra: np.ndarray | None = None
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """τ-a of one measure ``mu`` against ``g`` in every group of ψ over ``free``
    (:func:`group_bounds`) with two or more runs where both are finite; and those groups' run
    indices. ``ψ_free`` is the mean of the returned τ (NaN if none)."""
    g, mu = np.asarray(g, np.float64), np.asarray(mu, np.float64)
    keep = np.isfinite(g) & np.isfinite(mu)
    idx = np.flatnonzero(keep)
    if not len(idx):
        return np.zeros(0), []
    ax = np.asarray(ax).reshape(len(g), -1)[idx]
    extra = None if extra is None else np.asarray(extra).reshape(len(g), -1)[idx]
    order, starts = group_bounds(ax, free, extra)
    gr = dense_rank(g[idx])[0]
    mr = dense_rank(mu[idx])[0]
    taus, groups = [], []
    for lo, hi in zip(starts[:-1], starts[1:]):
        if hi - lo >= 2:
            members = order[lo:hi]
            taus.append(tau_unsorted(gr[members], mr[members]))
            groups.append(idx[members])
    return np.asarray(taus, dtype=np.float64), groups


def granulated_tau(g: np.ndarray, mu: np.ndarray, axes: np.ndarray,
                   keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ψ and ψ_k of each measure.

    ``axes``: ``(n, K)`` axis values (any integer codes); ``keys``: ``(n, E)``
    further values a group must agree on (seed, dataset), or None.
    Returns ``(psi, psi_k)`` with shapes ``(M,)`` and ``(M, K)``; for 1-D
    ``mu``, a float and a ``(K,)`` array.
    """
    rk = rank_inputs(g, mu)
    n_all = len(np.asarray(g).reshape(-1))
    ax = axis_codes(axes, n_all)[rk.keep]
    extra = np.zeros((rk.n, 0), dtype=np.int64)
    if keys is not None:
        extra = axis_codes(keys, n_all)[rk.keep]
    psi, psi_k = granulated_ranked(rk, ax, extra)
    if rk.squeeze:
        return float(psi[0]), psi_k[0]
    return psi, psi_k


def granulated_ranked(rk: Ranked, ax: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`granulated_tau` on prepared ranks and codes (runs with a finite gap only)."""
    K = ax.shape[1]
    M = rk.n_measures
    psi_k = np.full((M, K), np.nan)
    multi = np.zeros(K, dtype=bool)
    for k in range(K):
        multi[k] = rk.n > 0 and len(np.unique(ax[:, k])) >= 2
        if not multi[k]:
            continue
        order, starts = group_bounds(ax, [k], extra)
        sums, counts = _psi_sums(order, starts, rk.gr, rk.mr)
        psi_k[:, k] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    psi = np.full(M, np.nan)
    if multi.any():
        sel = psi_k[:, multi]
        ok = np.isfinite(sel)
        cnt = ok.sum(axis=1)
        psi = np.where(cnt > 0, np.where(ok, sel, 0.0).sum(axis=1) / np.maximum(cnt, 1), np.nan)
    return psi, psi_k
