"""Shared preparation: dense ranks of the gaps and measures, integer axis codes.

Every statistic compares values only through ``<``, ``=`` and ``>``, so it is
computed on dense ranks (0, 1, 2, … with equal values sharing a rank); a
measure's non-finite values get rank ``-1`` ("left out").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def dense_rank(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Dense ranks of a finite 1-D array, its stable ascending order, and the number of distinct values."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.empty(len(x), dtype=bool)
    if len(x):
        new[0] = True
        np.not_equal(xs[1:], xs[:-1], out=new[1:])
    ranks = np.empty(len(x), dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    return ranks, order, int(new.sum())


def as_matrix(mu: np.ndarray) -> tuple[np.ndarray, bool]:
    """``mu`` as a float64 ``(n, M)`` matrix, and whether it was 1-D."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim == 1:
        return mu[:, None], True
    if mu.ndim != 2:
        raise ValueError(f"measure values must be 1-D or 2-D (runs × measures), got shape {mu.shape}")
    return mu, False


def axis_codes(axes: np.ndarray, n: int) -> np.ndarray:
    """Axis values relabelled 0..k-1 per column, int32, shape ``(n, K)``."""
    axes = np.asarray(axes)
    if axes.ndim == 1:
        axes = axes[:, None]
    if axes.shape[0] != n:
        raise ValueError(f"axes have {axes.shape[0]} rows but there are {n} runs")
    out = np.empty(axes.shape, dtype=np.int32)
    for k in range(axes.shape[1]):
        out[:, k] = np.unique(axes[:, k], return_inverse=True)[1].reshape(-1)
    return out


def row_codes(cols: np.ndarray) -> np.ndarray:
    """Dense ids 0..k-1 of the distinct rows of a non-negative integer matrix ``(n, E)`` (no columns → all 0).

    Rows are numbered in lexicographic order.
    """
    cols = np.asarray(cols)
    if cols.ndim == 1:
        cols = cols[:, None]
    n, E = cols.shape
    if E == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    radix = cols.max(axis=0).astype(np.float64) + 1
    if cols.min() >= 0 and np.prod(radix) < 2.0**62:
        mixed = np.zeros(n, dtype=np.int64)
        for k in range(E):
            mixed = mixed * int(radix[k]) + cols[:, k].astype(np.int64)
        return np.unique(mixed, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return np.unique(cols, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


@dataclass
class Ranked:
    """Gaps and measures of the runs with a finite gap, as dense ranks.

    ``keep`` selects those runs from the input; ``gr`` are their gap ranks,
    ``order_g`` sorts them by gap; ``mr[:, m]`` are measure ``m``'s ranks
    (``-1`` where not finite) and ``nrank[m]`` its number of distinct values;
    ``order_mu[:, m]`` sorts the runs by ``mr[:, m]``, left-out runs last, and
    ``nkept[m]`` counts the runs kept for measure ``m``.
    """

    keep: np.ndarray
    g: np.ndarray
    gr: np.ndarray
    order_g: np.ndarray
    mr: np.ndarray
    nrank: np.ndarray
    order_mu: np.ndarray
    nkept: np.ndarray
    squeeze: bool

    @property
    def n(self) -> int:
        return len(self.gr)

    @property
    def n_measures(self) -> int:
        return self.mr.shape[1]


def rank_inputs(g: np.ndarray, mu: np.ndarray) -> Ranked:
    """Rank the gaps and measures (runs with a non-finite gap are dropped)."""
    g = np.asarray(g, dtype=np.float64).reshape(-1)
    mu, squeeze = as_matrix(mu)
    if mu.shape[0] != len(g):
        raise ValueError(f"{len(g)} gaps but {mu.shape[0]} rows of measure values")
    keep = np.isfinite(g)
    g = g[keep]
    mu = mu[keep]
    n, M = mu.shape
    gr, order_g, _ = dense_rank(g)
    mr = np.full((n, M), -1, dtype=np.int32)
    order_mu = np.empty((n, M), dtype=np.int64)
    nrank = np.zeros(M, dtype=np.int64)
    nkept = np.zeros(M, dtype=np.int64)
    for m in range(M):
        fin = np.flatnonzero(np.isfinite(mu[:, m]))
        r, o, k = dense_rank(mu[fin, m])
        mr[fin, m] = r
        nrank[m] = k
        nkept[m] = len(fin)
        order_mu[: len(fin), m] = fin[o]
        order_mu[len(fin):, m] = np.flatnonzero(~np.isfinite(mu[:, m]))
    return Ranked(keep, g, gr, order_g.astype(np.int64), mr, nrank, order_mu, nkept, squeeze)
