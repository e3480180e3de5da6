"""The statistics of CLAIMS.md and their bootstrap replicates: τ between any two columns, ψ_A over
any axis set, Ψ, pair_A and a median. Pure functions over numpy arrays.

- ``tau(a, b)``: Kendall τ-a (:func:`analysis.stats.tau.kendall_tau_a`) over the runs where
  both are finite.
- ``psi(a, b)`` over axis columns ``A``: the groups and their τ of
  :func:`analysis.stats.psi.group_taus` (runs equal on every other axis and on the keys, seed
  and dataset; groups of ≥ 2 runs with finite ``a`` and ``b``); ψ is the unweighted mean.
- ``Psi``: the mean of the single-axis ψ_k over the axes that take two or more values among the
  runs where every column is finite (undefined ψ_k left out), each ψ_k reported as a part.
- ``pair``: per group (``group`` labels; the caller builds them) with runs at both ``p`` and
  ``q``: mean x at ``q`` − mean x at ``p``; the median over groups.
- ``median``: of the finite values.

A statistic is *constant* (``Estimate.constant`` names the column, ``"a"`` or ``"b"``) when that
column takes one value among the runs (τ) or within every group (ψ, and Ψ when every ψ_k is):
τ = 0 then says nothing, and the caller reports it as not testable.

Bootstrap (95 % percentile interval, :func:`analysis.stats.bootstrap.percentile_interval`; the
multiplicities of :func:`analysis.stats.bootstrap.resample_counts`, seeded, one row per replicate):

- τ and the median resample the runs; τ is recomputed exactly with multiplicities (copies of a
  run tie with each other).
- ψ and pair resample whole groups (a cluster bootstrap); a replicate is the mean (ψ) or median
  (pair) over the drawn groups, a group drawn ``c`` times counting ``c`` times.
- Ψ draws *configurations* once per replicate (the runs' ``config`` labels: equal values of every
  axis, all seeds of a configuration kept together) and every axis regroups that same draw: in a
  group of ψ_k, each pair of runs from distinct configurations ``i``, ``j`` weighs ``c_i·c_j`` (two
  copies of one configuration are no pair), the group's τ is the weighted mean of its pairs'
  ``sign(Δa)·sign(Δb)``, and ψ_k is the unweighted mean over the groups with a pair drawn, as at
  the estimate (all ``c = 1`` give the estimate exactly). Ψ of a replicate is the mean of its
  defined ψ_k. Several columns ``a`` (a difference of two Ψ) use the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._ranks import rank_inputs, row_codes
from .bootstrap import percentile_interval, resample_blocks
from .psi import group_taus
from .tau import TauPlan, kendall_tau_a


@dataclass
class Part:
    """ψ_k of one axis inside a Ψ: ``axis`` is its column in ``axes``."""

    axis: int
    estimate: float
    lo: float
    hi: float
    n_groups: int
    reps: np.ndarray
    constant: bool = False


@dataclass
class Estimate:
    """A statistic with its percentile interval, replicates and what it was computed on.

    ``n_groups`` is None for run-level statistics (τ, median); ``parts`` are the ψ_k of a Ψ."""

    estimate: float
    lo: float
    hi: float
    n_runs: int
    n_groups: int | None
    reps: np.ndarray
    parts: list[Part] = field(default_factory=list)
    constant: str = ""


def _exact(x):
    """ψ and Ψ are means of rational τ: float noise below 1e-12 (a mean of +⅓ and −⅓) is removed, so
    that an estimate or replicate equal to a threshold compares equal to it."""
    return np.round(x, 12) + 0.0


def _finite(*cols: np.ndarray) -> np.ndarray:
    keep = np.ones(len(cols[0]), dtype=bool)
    for c in cols:
        keep &= np.isfinite(np.asarray(c, dtype=np.float64))
    return keep


def _as2d(x, n: int) -> np.ndarray:
    x = np.zeros((n, 0), dtype=np.int64) if x is None else np.asarray(x)
    return x.reshape(n, -1)


def tau(a, b, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> Estimate:
    """τ-a of ``a`` and ``b`` over the runs where both are finite; bootstrap over runs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = _finite(a, b)
    a, b = a[keep], b[keep]
    n = len(a)
    est = float(kendall_tau_a(b, a)) if n >= 2 else np.nan
    reps = np.full(n_boot, np.nan)
    if n >= 2 and n_boot:
        plan = TauPlan(rank_inputs(b, a))
        reps = np.concatenate([plan.run_many(c)[:, 0] for c in resample_blocks(n, n_boot, seed)])
    constant = "a" if n and np.all(a == a[0]) else "b" if n and np.all(b == b[0]) else ""
    return Estimate(est, *percentile_interval(reps, ci), n, None, reps, constant=constant)


def weighted_medians(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The median of ``values`` repeated ``counts[r]`` times, for every row ``r`` of ``counts``
    (as :func:`numpy.median` of the repeated values; NaN for an all-zero row)."""
    v = np.asarray(values, np.float64)
    order = np.argsort(v, kind="stable")
    vs = v[order]
    cum = np.cumsum(np.asarray(counts)[:, order], axis=1)
    total = cum[:, -1] if cum.shape[1] else np.zeros(len(cum), dtype=np.int64)
    lo = np.argmax(cum > ((total - 1) // 2)[:, None], axis=1)
    hi = np.argmax(cum > (total // 2)[:, None], axis=1)
    out = 0.5 * (vs[lo] + vs[hi]) if len(vs) else np.full(len(cum), np.nan)
    return np.where(total > 0, out, np.nan)


def median(x, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> Estimate:
    """The median of the finite values of ``x``; bootstrap over those runs."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    est = float(np.median(x)) if n else np.nan
    reps = np.full(n_boot, np.nan)
    if n and n_boot:
        reps = np.concatenate([weighted_medians(x, c) for c in resample_blocks(n, n_boot, seed)])
    return Estimate(est, *percentile_interval(reps, ci), n, None, reps)


def _group_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Replicates of the mean of ``values`` over groups drawn with replacement."""
    if not len(values) or not n_boot:
        return np.full(n_boot, np.nan)
    return np.concatenate([(c @ values) / c.sum(axis=1) for c in resample_blocks(len(values), n_boot, seed)])


def _constant_in_all(x: np.ndarray, groups: list[np.ndarray]) -> bool:
    return bool(groups) and all(np.all(x[g] == x[g[0]]) for g in groups)


def psi(a, b, axes, free, keys=None, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> Estimate:
    """ψ_A(a, b) for the axis columns ``free`` (= A) of ``axes`` (``(n, K)`` integer codes),
    grouping also by ``keys`` (``(n, E)``); cluster bootstrap over groups."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    taus, groups = group_taus(b, a, _as2d(axes, len(a)), list(free), _as2d(keys, len(a)))
    est = float(_exact(taus.mean())) if len(taus) else np.nan
    reps = _exact(_group_means(taus, n_boot, seed))
    constant = "a" if _constant_in_all(a, groups) else "b" if _constant_in_all(b, groups) else ""
    return Estimate(est, *percentile_interval(reps, ci), int(sum(len(g) for g in groups)), len(groups), reps,
                    constant=constant)


@dataclass
class _AxisPairs:
    """The pairs of runs of every group of one axis: their configurations, their group, and the
    sign products of each column ``a`` (``(A, P)``)."""

    axis: int
    ci: np.ndarray
    cj: np.ndarray
    group: np.ndarray
    n_groups: int
    signs: np.ndarray


def _axis_pairs(k: int, a_list: list[np.ndarray], b: np.ndarray, ax: np.ndarray, keys: np.ndarray,
                conf: np.ndarray) -> _AxisPairs:
    ones = np.zeros(len(b))
    _, groups = group_taus(ones, ones, ax, [k], keys)  # the groups of ψ_k (every run is finite here)
    ci, cj, gid, si, sj = [], [], [], [], []
    for q, g in enumerate(groups):
        iu, ju = np.triu_indices(len(g), k=1)
        si.append(g[iu])
        sj.append(g[ju])
        gid.append(np.full(len(iu), q))
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))
    i, j, group = cat(si), cat(sj), cat(gid)
    ci, cj = conf[i], conf[j]
    sb = np.sign(b[i] - b[j])
    signs = np.array([np.sign(a[i] - a[j]) * sb for a in a_list]).reshape(len(a_list), len(i))
    return _AxisPairs(k, ci, cj, group, len(groups), signs)


def _axis_psi(p: _AxisPairs, counts: np.ndarray) -> np.ndarray:
    """ψ_k of every column under each configuration weighting ``counts`` (``(B, C)``): ``(B, A)``."""
    B = counts.shape[0]
    out = np.full((B, p.signs.shape[0]), np.nan)
    if not len(p.group):
        return out
    starts = np.flatnonzero(np.r_[True, p.group[1:] != p.group[:-1]])  # pairs come group by group
    w = (counts[:, p.ci] * counts[:, p.cj]).astype(np.float64)  # (B, P)
    den = np.add.reduceat(w, starts, axis=1)  # (B, G)
    present = den > 0
    n_present = present.sum(axis=1)
    for m in range(p.signs.shape[0]):
        num = np.add.reduceat(w * p.signs[m], starts, axis=1)
        tau_g = np.where(present, num / np.where(present, den, 1.0), 0.0)
        out[:, m] = np.where(n_present > 0, tau_g.sum(axis=1) / np.maximum(n_present, 1), np.nan)
    return out


def _mean_defined(x: np.ndarray) -> np.ndarray:
    """The mean over the last axis of the finite entries (NaN where none)."""
    ok = np.isfinite(x)
    cnt = ok.sum(axis=-1)
    return np.where(cnt > 0, np.where(ok, x, 0.0).sum(axis=-1) / np.maximum(cnt, 1), np.nan)


def psi_all(a_list, b, axes, keys=None, config=None, *, n_boot: int = 1000, seed: int = 0,
            ci: float = 0.95) -> tuple[list[Estimate], Estimate | None]:
    """Ψ(a, b) of each column of ``a_list`` over the runs where every column is finite, with its
    ψ_k parts; for two columns also the paired difference Ψ(a₀, b) − Ψ(a₁, b) (parts: the
    differences per axis). ``config``: each run's configuration label (default: its row of
    ``axes``). One configuration draw per replicate serves every axis and column (module
    docstring)."""
    b = np.asarray(b, np.float64)
    a_list = [np.asarray(a, np.float64) for a in a_list]
    n_all = len(b)
    keep = _finite(b, *a_list)
    ax = _as2d(axes, n_all)[keep]
    ks = _as2d(keys, n_all)[keep]
    conf_all = row_codes(_as2d(axes, n_all)) if config is None else np.asarray(config)
    conf = np.unique(conf_all[keep], return_inverse=True)[1].reshape(-1) if keep.any() else np.zeros(0, np.int64)
    b, a_list = b[keep], [a[keep] for a in a_list]
    A = len(a_list)
    multi = [k for k in range(ax.shape[1]) if len(np.unique(ax[:, k])) >= 2]
    # the estimate: ψ_k from the groups' τ (analysis.stats.psi), Ψ their mean
    est_k = np.full((A, len(multi)), np.nan)
    n_groups, const = [], np.zeros((A, len(multi)), dtype=bool)
    for j, k in enumerate(multi):
        for m, a in enumerate(a_list):
            taus, groups = group_taus(b, a, ax, [k], ks)
            est_k[m, j] = _exact(taus.mean()) if len(taus) else np.nan
            const[m, j] = _constant_in_all(a, groups) or _constant_in_all(b, groups)
        n_groups.append(len(groups))
    pairs = [_axis_pairs(k, a_list, b, ax, ks, conf) for k in multi]
    reps_k = np.full((n_boot, A, len(multi)), np.nan)
    n_conf = int(conf.max()) + 1 if len(conf) else 0
    if n_boot and multi and n_conf:
        rows = max(1, (1 << 21) // max(1, max(len(p.group) for p in pairs)))  # bounds the (rows, pairs) weights
        start = 0
        for counts in resample_blocks(n_conf, n_boot, seed, max_cells=n_conf * rows):
            for j, p in enumerate(pairs):
                reps_k[start:start + len(counts), :, j] = _exact(_axis_psi(p, counts))
            start += len(counts)
    n_runs = int(keep.sum())
    total_groups = int(sum(n_groups))

    def estimate(e_k: np.ndarray, r_k: np.ndarray, constant: np.ndarray) -> Estimate:
        parts = [Part(k, float(e_k[j]), *percentile_interval(r_k[:, j], ci), n_groups[j], r_k[:, j],
                      bool(constant[j])) for j, k in enumerate(multi)]
        reps = _exact(_mean_defined(r_k)) if len(multi) else np.full(n_boot, np.nan)
        value = float(_exact(_mean_defined(e_k[None, :])[0])) if len(multi) else np.nan
        return Estimate(value, *percentile_interval(reps, ci), n_runs, total_groups, reps, parts,
                        "a" if len(multi) and constant.all() else "")

    ests = [estimate(est_k[m], reps_k[:, m, :], const[m]) for m in range(A)]
    diff = None
    if A == 2:
        d_k = est_k[0] - est_k[1]
        r_k = reps_k[:, 0, :] - reps_k[:, 1, :]
        diff = estimate(d_k, r_k, const[0] & const[1])
        diff.estimate = ests[0].estimate - ests[1].estimate
        diff.reps = ests[0].reps - ests[1].reps
        diff.lo, diff.hi = percentile_interval(diff.reps, ci)
    return ests, diff


def Psi(a, b, axes, keys=None, config=None, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> Estimate:
    """Ψ(a, b) with its ψ_k parts (:func:`psi_all` for one column)."""
    return psi_all([a], b, axes, keys, config, n_boot=n_boot, seed=seed, ci=ci)[0][0]


def pair_diffs(x, at_p, at_q, group) -> tuple[np.ndarray, int]:
    """Per group (integer labels ``group``; negative: no group) with finite ``x`` at both ``p``
    (``at_p``) and ``q`` (``at_q``): mean x at q − mean x at p; and the runs in those groups."""
    x = np.asarray(x, np.float64)
    at_p, at_q = np.asarray(at_p, bool), np.asarray(at_q, bool)
    group = np.asarray(group)
    ok = np.isfinite(x) & (group >= 0)
    out, runs = [], 0
    for gl in np.unique(group[ok]):
        in_g = ok & (group == gl)
        p, q = in_g & at_p, in_g & at_q
        if p.any() and q.any():
            out.append(x[q].mean() - x[p].mean())
            runs += int((p | q).sum())
    return np.asarray(out, dtype=np.float64), runs


def pair(x, at_p, at_q, group, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> Estimate:
    """pair(x): the median over groups of x(q) − x(p); cluster bootstrap over groups."""
    d, n_runs = pair_diffs(x, at_p, at_q, group)
    est = float(np.median(d)) if len(d) else np.nan
    reps = np.full(n_boot, np.nan)
    if len(d) and n_boot:
        reps = np.concatenate([weighted_medians(d, c) for c in resample_blocks(len(d), n_boot, seed)])
    return Estimate(est, *percentile_interval(reps, ci), n_runs, len(d), reps)
