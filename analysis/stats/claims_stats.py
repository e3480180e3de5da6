"""The statistics of CLAIMS.md: τ between any two columns, ψ_A over any axis set, Ψ, pair_A,
and their cluster bootstrap. Pure functions over numpy arrays.

- ``tau(a, b)``: Kendall τ-a (:func:`analysis.stats.tau.kendall_tau_a`) over the runs where
  both are finite.
- ``psi_A(a, b)``: the runs with finite ``a`` and ``b`` are grouped by equal values of every
  axis *not* in ``A`` and of the keys (seed, dataset); τ-a within each group of two or more
  runs; the unweighted mean over those groups (ANALYSIS.md, "Granulated τ").
- ``Ψ(a, b)``: the mean of ``ψ_{k}`` over the single axes ``k`` that take two or more values
  among those runs (undefined ψ_k left out).
- ``pair_A(x)``: for an axis with values ``p`` and ``q``: the runs at ``p`` or ``q`` with a
  finite ``x`` are grouped by every other axis and the keys; a group with runs at both values
  gives ``mean x(q) − mean x(p)`` (one run each in a full grid); the median over groups.

Bootstrap (95 % percentile interval, NaN replicates ignored, ``numpy.random.default_rng(seed)``):

- τ, run-level statistics (a median, a share): resample runs
  (:func:`analysis.stats.bootstrap.resample_counts`), τ recomputed exactly with multiplicities.
- ψ_A and pair: resample whole groups (the groups that contribute, with replacement, as many
  as there are); the statistic of a replicate is the mean (ψ) or median (pair) over the
  drawn groups, a group drawn ``c`` times counting ``c`` times.
- Ψ: in each replicate every axis resamples its own groups (axes in order, one shared
  generator); the replicate is the mean of the axes' replicates. A difference of two Ψ
  over the same runs uses the same draws for both (a paired interval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ._ranks import row_codes
from .bootstrap import resample_counts
from .tau import kendall_tau_a


@dataclass
class Estimate:
    """A statistic with its percentile interval and what it was computed on.

    ``n_groups`` is None for run-level statistics (τ, median, share)."""

    estimate: float
    lo: float
    hi: float
    n_runs: int
    n_groups: int | None
    reps: np.ndarray


def interval(reps: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the finite replicates (NaN, NaN if none)."""
    r = np.asarray(reps, dtype=np.float64)
    r = r[np.isfinite(r)]
    if not len(r):
        return np.nan, np.nan
    lo, hi = np.quantile(r, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


def _as2d(x, n: int) -> np.ndarray:
    x = np.zeros((n, 0), dtype=np.int64) if x is None else np.asarray(x)
    return x.reshape(n, -1) if x.ndim == 1 else x


def groups_of(axes: np.ndarray, free: Sequence[int], keys: np.ndarray | None, keep: np.ndarray
              ) -> list[np.ndarray]:
    """Index arrays (into the full arrays) of the groups of ≥ 2 kept runs that agree on every
    axis column not in ``free`` and on every key column; in order of the group's values."""
    n = len(keep)
    ax = _as2d(axes, n).astype(np.int64)
    fixed = np.concatenate([np.delete(ax, list(free), axis=1), _as2d(keys, n).astype(np.int64)], axis=1)
    idx = np.flatnonzero(keep)
    if not len(idx):
        return []
    gid = row_codes(fixed[idx] - fixed[idx].min(axis=0, initial=0) if fixed.shape[1] else fixed[idx])
    order = np.argsort(gid, kind="stable")
    bounds = np.flatnonzero(np.r_[True, gid[order][1:] != gid[order][:-1], True])
    out = [idx[order[s:e]] for s, e in zip(bounds[:-1], bounds[1:])]
    return [g for g in out if len(g) >= 2]


def _finite(*cols: np.ndarray) -> np.ndarray:
    keep = np.ones(len(cols[0]), dtype=bool)
    for c in cols:
        keep &= np.isfinite(np.asarray(c, dtype=np.float64))
    return keep


def _group_taus(groups: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([kendall_tau_a(b[g], a[g]) for g in groups], dtype=np.float64)


def tau(a, b, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> Estimate:
    """τ-a of ``a`` and ``b`` over the runs where both are finite; bootstrap over runs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = _finite(a, b)
    a, b = a[keep], b[keep]
    n = len(a)
    est = float(kendall_tau_a(b, a)) if n >= 2 else np.nan
    reps = np.full(n_boot, np.nan)
    if n >= 2:
        for r, counts in enumerate(resample_counts(n, n_boot, seed)):
            reps[r] = kendall_tau_a(b, a, weights=counts)
    return Estimate(est, *interval(reps, ci), n, None, reps)


def run_statistic(x, fn: Callable[[np.ndarray], float], *, n_boot: int = 1000, seed: int = 0,
                  ci: float = 0.95) -> Estimate:
    """``fn`` of the finite values of ``x`` (a median, a share …); bootstrap over those runs."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    est = float(fn(x)) if n else np.nan
    reps = np.full(n_boot, np.nan)
    if n:
        for r, counts in enumerate(resample_counts(n, n_boot, seed)):
            reps[r] = fn(np.repeat(x, counts))
    return Estimate(est, *interval(reps, ci), n, None, reps)


def _group_boot(values: np.ndarray, reduce: Callable[[np.ndarray, np.ndarray], float], n_boot: int,
                seed: int) -> np.ndarray:
    reps = np.full(n_boot, np.nan)
    if len(values):
        for r, counts in enumerate(resample_counts(len(values), n_boot, seed)):
            reps[r] = reduce(values, counts)
    return reps


def _wmean(v: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(v * w) / np.sum(w)) if np.sum(w) > 0 else np.nan


def psi(a, b, axes, free: Sequence[int], keys=None, *, n_boot: int = 1000, seed: int = 0,
        ci: float = 0.95) -> Estimate:
    """ψ_A(a, b) for the axis columns ``free`` (= A) of ``axes`` (``(n, K)`` integer codes),
    grouping also by ``keys`` (``(n, E)``); cluster bootstrap over groups."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    groups = groups_of(axes, free, keys, _finite(a, b))
    taus = _group_taus(groups, a, b)
    est = float(taus.mean()) if len(taus) else np.nan
    reps = _group_boot(taus, _wmean, n_boot, seed)
    return Estimate(est, *interval(reps, ci), int(sum(len(g) for g in groups)), len(groups), reps)


def _multi_axes(axes: np.ndarray, keep: np.ndarray) -> list[int]:
    ax = _as2d(axes, len(keep))
    return [k for k in range(ax.shape[1]) if len(np.unique(ax[keep, k])) >= 2]


def psi_all(a_list: Sequence[np.ndarray], b, axes, keys=None, *, n_boot: int = 1000, seed: int = 0,
            ci: float = 0.95) -> tuple[list[Estimate], Estimate | None]:
    """Ψ(a, b) for each ``a`` of ``a_list`` over the runs where every ``a`` and ``b`` are finite,
    and (for two) the paired difference Ψ(a₀, b) − Ψ(a₁, b); the same group draws serve all."""
    b = np.asarray(b, np.float64)
    a_list = [np.asarray(a, np.float64) for a in a_list]
    keep = _finite(b, *a_list)
    per_axis = [groups_of(axes, [k], keys, keep) for k in _multi_axes(axes, keep)]
    taus = [[_group_taus(g, a, b) for g in per_axis] for a in a_list]  # [measure][axis] → (G_k,)

    def stat(weights: list[np.ndarray] | None) -> np.ndarray:
        out = np.full(len(a_list), np.nan)
        for m, per in enumerate(taus):
            vals = [(_wmean(t, w) if weights is not None else (t.mean() if len(t) else np.nan))
                    for t, w in zip(per, weights if weights is not None else [None] * len(per))]
            vals = [v for v in vals if np.isfinite(v)]
            out[m] = float(np.mean(vals)) if vals else np.nan
        return out

    est = stat(None)
    reps = np.full((n_boot, len(a_list)), np.nan)
    if per_axis:
        rng = np.random.default_rng(seed)
        for r in range(n_boot):
            w = [np.bincount(rng.integers(0, len(g), len(g)), minlength=len(g)) if len(g) else np.zeros(0)
                 for g in per_axis]
            reps[r] = stat(w)
    n_runs = int(keep.sum())
    n_groups = sum(len(g) for g in per_axis)
    ests = [Estimate(float(est[m]), *interval(reps[:, m], ci), n_runs, n_groups, reps[:, m])
            for m in range(len(a_list))]
    diff = None
    if len(a_list) == 2:
        d = reps[:, 0] - reps[:, 1]
        diff = Estimate(float(est[0] - est[1]), *interval(d, ci), n_runs, n_groups, d)
    return ests, diff


def Psi(a, b, axes, keys=None, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> Estimate:
    """Ψ(a, b): the mean of ψ_k over single axes with two or more values; bootstrap as the
    module docstring says."""
    return psi_all([a], b, axes, keys, n_boot=n_boot, seed=seed, ci=ci)[0][0]


def pair_diffs(x, axis_values, p, q, axes, axis: int, keys=None) -> tuple[np.ndarray, int]:
    """Per group (equal other axes and keys) with runs at both ``p`` and ``q``: mean x at ``q``
    − mean x at ``p``; and the number of runs in those groups."""
    x = np.asarray(x, np.float64)
    v = np.asarray(axis_values, dtype=object)
    at_p = np.array([u == p for u in v], dtype=bool)
    at_q = np.array([u == q for u in v], dtype=bool)
    groups = groups_of(axes, [axis], keys, _finite(x) & (at_p | at_q))
    both = [g for g in groups if at_p[g].any() and at_q[g].any()]
    out = [x[g[at_q[g]]].mean() - x[g[at_p[g]]].mean() for g in both]
    return np.asarray(out, dtype=np.float64), int(sum(len(g) for g in both))


def pair(x, axis_values, p, q, axes, axis: int, keys=None, *, n_boot: int = 1000, seed: int = 0,
         ci: float = 0.95) -> Estimate:
    """pair_A(x): the median over groups of x(q) − x(p); cluster bootstrap over groups."""
    d, n_runs = pair_diffs(x, axis_values, p, q, axes, axis, keys)
    est = float(np.median(d)) if len(d) else np.nan
    reps = _group_boot(d, lambda v, c: float(np.median(np.repeat(v, c))), n_boot, seed)
    return Estimate(est, *interval(reps, ci), n_runs, len(d), reps)
