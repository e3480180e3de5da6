"""Seeded bootstrap intervals for τ and CMI, resampling runs (ANALYSIS.md, "Uncertainty").

Replicate ``b`` draws ``n`` runs with replacement from the ``n`` runs with a
finite gap: ``counts = bincount(rng.integers(0, n, n), minlength=n)`` with
``rng = numpy.random.default_rng(seed)``, one draw per replicate in order.
The same resample serves every measure (paired intervals); a measure's
NaN/inf runs drawn into it are left out for that measure. Each statistic is
recomputed exactly on the resample (a run drawn ``c`` times counts as ``c``
tied copies; CMI takes the minimum over all conditioning sets again). The
interval is the percentile interval: the ``(1 − ci)/2`` and ``(1 + ci)/2``
quantiles (linear interpolation) of the replicates, NaN replicates ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._ranks import axis_codes, rank_inputs
from .cmi import CMIPlan
from .tau import TauPlan


@dataclass
class BootstrapResult:
    """Replicates ``(n_boot, M)`` and intervals ``(M,)`` of τ and of the CMI minimum."""

    tau_reps: np.ndarray
    cmi_reps: np.ndarray
    tau_lo: np.ndarray
    tau_hi: np.ndarray
    cmi_lo: np.ndarray
    cmi_hi: np.ndarray


def resample_counts(n: int, n_boot: int, seed: int):
    """The run multiplicities of each replicate, in order (the scheme of the module docstring)."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.bincount(rng.integers(0, n, n), minlength=n).astype(np.int64)


def resample_blocks(n: int, n_boot: int, seed: int, max_cells: int = 1 << 21):
    """The multiplicities of :func:`resample_counts` as consecutive ``(b, n)`` matrices of at most
    ``max_cells`` entries (row ``r`` of the stacked blocks is replicate ``r``: a block draw of the
    generator gives the same numbers as row-by-row draws)."""
    rng = np.random.default_rng(seed)
    step = max(1, max_cells // max(n, 1))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        if n == 0:
            yield np.zeros((b, 0), dtype=np.int64)
            continue
        draws = rng.integers(0, n, (b, n)) + n * np.arange(b)[:, None]
        yield np.bincount(draws.reshape(-1), minlength=b * n).reshape(b, n).astype(np.int64)


def percentile_interval(reps: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the finite replicates ``reps`` (1-D): their ``(1 − ci)/2`` and
    ``(1 + ci)/2`` quantiles, linear interpolation; (NaN, NaN) if none is finite."""
    r = np.asarray(reps, dtype=np.float64)
    r = r[np.isfinite(r)]
    if not len(r):
        return np.nan, np.nan
    lo, hi = np.quantile(r, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


def _interval(reps: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    M = reps.shape[1]
    lo, hi = np.full(M, np.nan), np.full(M, np.nan)
    for m in range(M):
        lo[m], hi[m] = percentile_interval(reps[:, m], ci)
    return lo, hi


def bootstrap_plans(tau_plan: TauPlan | None, cmi_plan: CMIPlan | None, n: int, n_boot: int,
                    seed: int = 0, ci: float = 0.95, n_measures: int = 0) -> BootstrapResult:
    """Bootstrap with prepared plans (either may be None to skip that statistic)."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    tau_reps = np.full((n_boot, n_measures), np.nan)
    cmi_reps = np.full((n_boot, n_measures), np.nan)
    for b, counts in enumerate(resample_counts(n, n_boot, seed)):
        if tau_plan is not None:
            tau_reps[b] = tau_plan.run(counts)
        if cmi_plan is not None:
            cmi_reps[b] = cmi_plan.run(counts).best()[0]
    tau_lo, tau_hi = _interval(tau_reps, ci)
    cmi_lo, cmi_hi = _interval(cmi_reps, ci)
    return BootstrapResult(tau_reps, cmi_reps, tau_lo, tau_hi, cmi_lo, cmi_hi)


def bootstrap_intervals(g: np.ndarray, mu: np.ndarray, axes: np.ndarray, *, n_boot: int = 200,
                        seed: int = 0, ci: float = 0.95, max_cond: int = 2) -> BootstrapResult:
    """Percentile bootstrap intervals of τ-a and of ``cmi`` (min over ``|S| ≤ max_cond``) per measure."""
    rk = rank_inputs(g, mu)
    ax = axis_codes(axes, len(np.asarray(g).reshape(-1)))[rk.keep]
    return bootstrap_plans(TauPlan(rk), CMIPlan(rk, ax, max_cond), rk.n, n_boot, seed, ci, rk.n_measures)
