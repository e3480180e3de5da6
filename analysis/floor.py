"""What a study can resolve: the noise floor of its outcome and the reasons it is too small.

The noise floor (CLAIMS.md, "Noise floor of the outcome"; :mod:`analysis.stats.noise`) of the
analysed runs of one dataset:

- ``n_test``: the test-set size (the median of the ``n_test`` column), ``test_acc`` the median
  test accuracy and ``test_acc_se`` = √(a(1 − a)/n) at that median;
- a *configuration* is a set of runs with equal values of every ``hp.*`` column (a null is a value
  of its own), its runs are its seeds (``seeds``: the median count); over the configurations with two or more runs with a finite
  gap: ``gap_sd`` (the gap's standard deviation), ``gap_within_sd`` (the pooled
  within-configuration standard deviation), ``icc`` = 1 − within variance / variance, and
  ``seeds_needed``, the seeds per configuration whose mean gap would reach reliability 0.8
  (Spearman–Brown, 4(1 − ICC)/ICC).

A study with ``icc < MIN_ICC`` has an outcome that is mostly seed and test noise
(:func:`noise_reasons`); :func:`small_study` lists why the analysed runs are too few to rank
the measures with confidence (the report's warning, and ``analysis rank`` / ``score``'s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from study.schema import is_hp, name_of

from .output import num
from .stats._ranks import row_codes
from .stats.noise import binomial_se, icc, seeds_for_reliability, within_configuration
from .table import codes

MIN_NETWORKS = 20  # below this many analysed networks (or 2 seeds, or an axis without ψ groups) a study is small
MIN_SEEDS = 2
MIN_ICC = 0.5  # below: the gap is mostly seed and test noise
TARGET_RELIABILITY = 0.8


@dataclass
class NoiseFloor:
    """The noise floor of one study's (dataset's) analysed runs (module docstring)."""

    n_runs: int
    seeds: float
    n_test: float
    test_acc: float
    test_acc_se: float
    configs: int
    gap_sd: float
    gap_within_sd: float
    icc: float
    seeds_needed: float

    @property
    def noisy(self) -> bool:
        """The outcome is mostly noise: ICC below `MIN_ICC`."""
        return bool(np.isfinite(self.icc) and self.icc < MIN_ICC)

    def seeds_text(self) -> str:
        """The seeds per configuration for reliability 0.8, as words."""
        k = self.seeds_needed
        if not np.isfinite(k):
            return ("no number of seeds (the seeds disagree as much as the configurations)" if k == math.inf
                    else "unknown (no configuration has two seeds)")
        n = max(1, math.ceil(k - 1e-9))
        return f"{n} seed{'s' if n != 1 else ''} per configuration"

    def text(self) -> str:
        """One line: test size and SE, the gap's spread within and across configurations, ICC."""
        n = f"{self.n_test:,.0f}" if np.isfinite(self.n_test) else "unknown"
        se = (f", binomial SE of test accuracy {self.test_acc_se:.4f} at the median {self.test_acc:.3f}"
              if np.isfinite(self.test_acc_se) else "")
        if not self.configs:
            return f"test set {n}{se}; no configuration has two seeds, so the gap's seed noise is unknown"
        return (f"test set {n}{se}; gap SD {num(self.gap_sd, '.4f')}, within a configuration (across seeds) "
                f"{num(self.gap_within_sd, '.4f')}, ICC {num(self.icc, '.2f')} over {self.configs} configurations "
                f"(reliability {TARGET_RELIABILITY:g} of a configuration's mean gap needs {self.seeds_text()})")


def _column(pop: pl.DataFrame, name: str) -> np.ndarray:
    if name not in pop.columns:
        return np.full(pop.height, np.nan)
    return pop[name].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()


def configurations(pop: pl.DataFrame) -> np.ndarray:
    """Each run's configuration label: its row of ``hp.*`` values (all runs alike without axes)."""
    axes = [c for c in pop.columns if is_hp(c)]
    if not axes:
        return np.zeros(pop.height, dtype=np.int64)
    return row_codes(np.column_stack([codes(pop[c]) for c in axes]))


def noise_floor(pop: pl.DataFrame) -> NoiseFloor:
    """The noise floor of the analysed runs ``pop`` of one dataset (module docstring)."""
    g = _column(pop, "gap")
    acc = _column(pop, "test_acc")
    nt = _column(pop, "n_test")
    a = float(np.median(acc[np.isfinite(acc)])) if np.isfinite(acc).any() else math.nan
    n = float(np.median(nt[np.isfinite(nt)])) if np.isfinite(nt).any() else math.nan
    conf = configurations(pop)
    within, total, used = within_configuration(g, conf)
    r = icc(within, total)
    seeds = float(np.median(np.unique(conf, return_counts=True)[1])) if pop.height else math.nan
    return NoiseFloor(pop.height, seeds, n, a, binomial_se(a, n), used, math.sqrt(total) if used else math.nan,
                      math.sqrt(within) if used else math.nan, r, seeds_for_reliability(r, TARGET_RELIABILITY))


def noise_reasons(floor: NoiseFloor) -> list[str]:
    """Why the outcome cannot separate the networks (empty: it can, as far as ICC says)."""
    if not floor.noisy:
        return []
    return [f"the gap is mostly seed and test noise: ICC {floor.icc:.2f} < {MIN_ICC:g} (SD within a "
            f"configuration {floor.gap_within_sd:.4f} against {floor.gap_sd:.4f} in all"
            + (f"; binomial SE of test accuracy {floor.test_acc_se:.4f} on {floor.n_test:,.0f} test examples"
               if np.isfinite(floor.test_acc_se) else "") + ")"]


def warnings_of(pop: pl.DataFrame) -> list[str]:
    """The command line's warnings for the analysed runs of one dataset: too small, too noisy."""
    out = []
    small = small_study(pop)
    if small:
        out.append("too small to rank the measures with confidence: " + "; ".join(small))
    floor = noise_floor(pop)
    if floor.noisy:
        out.append("; ".join(noise_reasons(floor)) + f"; a configuration's mean gap reaches reliability "
                   f"{TARGET_RELIABILITY:g} with {floor.seeds_text()}")
    return out


def small_study(pop: pl.DataFrame) -> list[str]:
    """Why the analysed runs are too few to read a ranking with confidence (empty: enough)."""
    why = []
    if pop.height < MIN_NETWORKS:
        why.append(f"{pop.height} networks are analysed (fewer than {MIN_NETWORKS})")
    seeds = pop["seed"].n_unique() if "seed" in pop.columns else 0
    if seeds < MIN_SEEDS:
        why.append(f"{seeds} seed{'s' if seeds != 1 else ''} (fewer than {MIN_SEEDS})")
    axes = [c for c in pop.columns if is_hp(c)]
    extra = [c for c in ("seed", "dataset") if c in pop.columns]
    for a in axes:
        if pop[a].n_unique() < 2:
            why.append(f"axis {name_of(a)} takes fewer than 2 values")
            continue
        keys = [c for c in axes if c != a] + extra
        groups = pop.group_by(keys).agg(pl.col(a).n_unique().alias("n")) if keys else \
            pl.DataFrame({"n": [pop[a].n_unique()]})
        if not (groups["n"] >= 2).any():
            why.append(f"axis {name_of(a)} has no group of runs that differ only in it (ψ undefined)")
    return why


SMALL_RULE = (f"fewer than {MIN_NETWORKS} analysed networks, fewer than {MIN_SEEDS} seeds, or an axis with "
              "fewer than 2 values among the analysed runs or no group of runs (same other axes, seed and "
              "dataset) that differ only in it")
