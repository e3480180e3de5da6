"""The ranking table: every statistic of ANALYSIS.md for every measure (and dataset).

One row per measure and dataset, columns (in this order)::

    dataset, measure, n_models, tau, tau_lo, tau_hi,
    reliability, reliability_mean, tau_ceiling, psi, psi_<axis>…,
    cmi, cmi_lo, cmi_hi, cmi_set, cmi_k0, cmi_k1, cmi_k2 (cmi_k3… if max_cond > 2),
    robust_max, robust_mean, robust_p90, robust_envs,
    robust_max_<axis>…, robust_mean_<axis>…, robust_p90_<axis>…, robust_envs_<axis>…

``measure`` is the name without the ``measure.`` prefix, ``<axis>`` the axis
name without ``hp.``. ``n_models`` counts the runs kept for the measure
(finite value and finite gap). ``tau_lo/tau_hi`` and ``cmi_lo/cmi_hi`` are
bootstrap percentile intervals (level ``ci``); with ``n_boot = 0`` they are
null. ``reliability`` is the test–retest reliability of ONE draw of the measure,
``reliability_mean`` that of the stored values (each the mean of R draws, so higher), and ``tau_ceiling`` = (2/π)·arcsin(√reliability_mean), the largest
|τ| those stored values can reach under a bivariate-normal model
(:mod:`analysis.stats.reliability` for the formulas and references), all over the runs
kept for τ. They need ``[measures] repeats`` > 1 (the ``measure_sd.<name>`` columns; the
counts from ``measure_repeats``) and are NaN otherwise; a deterministic measure has an sd of
0, hence reliability 1 by construction. ``cmi_k<j>`` is null for ``j > max_cond``. Statistics that are not
defined (fewer than two runs, no environment kept) are NaN.

A measure column whose rows mix settings hashes (``measure_cfg.<name>``) is
refused (:func:`analysis.load.check_settings`) unless ``allow_mixed``.

Runs are taken in ``run_id`` order, so the table (bootstrap included) does
not depend on the order in which files were listed.

Sorted by dataset, then as ``study.schema.ranking_order`` says: ``cmi``
descending, ``|tau|`` descending (NaN last), name.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl

from study.schema import REPEATS, name_of, sd_col

from .load import (
    RunsError,
    axis_columns,
    check_settings,
    checked,
    measure_columns,
    population,
    sort_ranking,
    split_datasets,
)
from .stats._ranks import rank_inputs
from .stats.bootstrap import bootstrap_plans
from .stats.cmi import CMIPlan
from .stats.psi import granulated_ranked
from .stats.reliability import reliability
from .stats.robust import robust_ranked
from .stats.tau import TauPlan


def codes(s: pl.Series) -> np.ndarray:
    """Integer codes of a column's values (sorted order; null is a value of its own)."""
    r = s.rank("dense")
    top = int(r.max() or 0)
    return (r.fill_null(top + 1) - 1).to_numpy().astype(np.int64)


def table_columns(axes: list[str], max_cond: int = 2) -> list[str]:
    """The column names of the ranking table for the given axis names (no ``hp.``)."""
    cols = ["dataset", "measure", "n_models", "tau", "tau_lo", "tau_hi",
            "reliability", "reliability_mean", "tau_ceiling", "psi"]
    cols += [f"psi_{a}" for a in axes]
    cols += ["cmi", "cmi_lo", "cmi_hi", "cmi_set"] + [f"cmi_k{j}" for j in range(max(2, max_cond) + 1)]
    cols += ["robust_max", "robust_mean", "robust_p90", "robust_envs"]
    for stat in ("max", "mean", "p90", "envs"):
        cols += [f"robust_{stat}_{a}" for a in axes]
    return cols


def _n_test(part: pl.DataFrame, robust_n: float | None, name: str) -> np.ndarray | None:
    if robust_n is not None:
        if not robust_n > 0:
            raise RunsError(f"robust_n must be a positive test-set size, got {robust_n}")
        return np.full(part.height, float(robust_n))
    if "n_test" not in part.columns:
        warnings.warn(f"dataset {name}: no n_test column, so the robust sign-error is left out; "
                      "give the test-set size (robust_n, --robust-n)", stacklevel=3)
        return None
    nt = part["n_test"].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
    if not np.all(np.isfinite(nt) & (nt > 0)):
        warnings.warn(f"dataset {name}: n_test is missing or not positive for some runs, so the robust "
                      "sign-error is left out; give the test-set size (robust_n, --robust-n)", stacklevel=3)
        return None
    return nt


def reliability_of(part: pl.DataFrame, measures: list[str], g: np.ndarray):
    """`analysis.stats.reliability.reliability` of each measure column over the runs of
    ``part`` with a finite gap: sds from ``measure_sd.<name>`` (NaN where absent), repeat
    counts from the ``measure_repeats`` JSON (a measure not named there: 1)."""
    keep = np.isfinite(g)
    sub = part.filter(pl.Series(keep))
    names = [name_of(c) for c in measures]
    mu = np.column_stack([sub[c].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
                          for c in measures])
    sd = np.column_stack([sub[sd_col(n)].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
                          if sd_col(n) in sub.columns else np.full(sub.height, np.nan) for n in names])
    counts = [json.loads(v or "{}") for v in sub[REPEATS].to_list()] if REPEATS in sub.columns \
        else [{}] * sub.height
    rep = np.array([[float(c.get(n, 1)) for n in names] for c in counts]).reshape(sub.height, len(names))
    return reliability(mu, sd, rep)


def _rank_dataset(part: pl.DataFrame, name: str, measures: list[str], *, max_cond: int, robust_n,
                  min_ess: float, n_boot: int, boot_seed: int, ci: float) -> pl.DataFrame:
    axes = [c for c in axis_columns(part) if part[c].null_count() < part.height]
    names = [name_of(c) for c in axes]
    g = part["gap"].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
    mu = np.column_stack([part[c].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
                          for c in measures])
    ax = np.column_stack([codes(part[c]) for c in axes]) if axes else np.zeros((part.height, 0), np.int64)
    extra = [codes(part[c]) for c in ("seed", "dataset") if c in part.columns]
    keys = np.column_stack(extra) if extra else np.zeros((part.height, 0), np.int64)
    M, K = len(measures), len(axes)

    rk = rank_inputs(g, mu)
    ax, keys = ax[rk.keep], keys[rk.keep]
    tau_plan = TauPlan(rk)
    tau = tau_plan.run()
    psi, psi_k = granulated_ranked(rk, ax, keys)
    cmi_plan = CMIPlan(rk, ax, max_cond, axis_names=names)
    cmi_res = cmi_plan.run()
    cmi, cmi_sets = cmi_res.best()
    nt = _n_test(part, robust_n, name)
    rob = robust_ranked(rk, ax, nt[rk.keep], min_ess) if nt is not None else None
    boot = bootstrap_plans(tau_plan, cmi_plan, rk.n, n_boot, boot_seed, ci, M) if n_boot > 0 else None
    rel = reliability_of(part, measures, g)

    cols: dict[str, object] = {
        "dataset": [name] * M,
        "measure": [name_of(c) for c in measures],
        "n_models": rk.nkept.astype(np.int64),
        "tau": tau,
        "tau_lo": boot.tau_lo if boot else [None] * M,
        "tau_hi": boot.tau_hi if boot else [None] * M,
        "reliability": rel.one_draw,
        "reliability_mean": rel.of_mean,
        "tau_ceiling": rel.tau_ceiling,
        "psi": psi,
    }
    for k, a in enumerate(names):
        cols[f"psi_{a}"] = psi_k[:, k]
    cols["cmi"] = cmi
    cols["cmi_lo"] = boot.cmi_lo if boot else [None] * M
    cols["cmi_hi"] = boot.cmi_hi if boot else [None] * M
    cols["cmi_set"] = ["+".join(names[k] for k in s) if s is not None else None for s in cmi_sets]
    for j in range(max(2, max_cond) + 1):
        cols[f"cmi_k{j}"] = cmi_res.min_over_size(j) if j <= max_cond else [None] * M
    # robust summaries: (mean, p90, max, kept) overall and per axis; NaN/0 when not computed
    overall = np.full((M, 4), np.nan)
    per = np.full((M, K, 4), np.nan)
    overall[:, 3], per[:, :, 3] = 0, 0
    if rob is not None:
        overall[:] = np.array(rob.overall, dtype=np.float64).reshape(M, 4)
        per[:] = np.array(rob.per_axis, dtype=np.float64).reshape(M, K, 4)
    summary = ((2, "max"), (0, "mean"), (1, "p90"), (3, "envs"))
    for idx, stat in summary:
        cols[f"robust_{stat}"] = overall[:, idx]
    for idx, stat in summary:
        for k, a in enumerate(names):
            cols[f"robust_{stat}_{a}"] = per[:, k, idx]
    ints = {"n_models"} | {c for c in cols if c.startswith("robust_envs")}
    strings = {"dataset", "measure", "cmi_set"}
    series = []
    for c, v in cols.items():
        if c in ints:
            series.append(pl.Series(c, np.asarray(v).astype(np.int64)))
        else:
            series.append(pl.Series(c, v, dtype=pl.String if c in strings else pl.Float64))
    return pl.DataFrame(series)


def rank_table(df: pl.DataFrame, *, include_unconverged: bool = False, include_failed: bool = False,
               max_cond: int = 2, robust_n: float | None = None, min_ess: float = 12.0, n_boot: int = 200,
               boot_seed: int = 0, ci: float = 0.95, dataset_axis: bool = False,
               allow_mixed: bool = False) -> pl.DataFrame:
    """The ranking table of a runs table (module docstring for the columns and the order).

    ``include_unconverged`` / ``include_failed`` admit those runs;
    ``max_cond``: the largest conditioning set of CMI; ``robust_n``: the
    test-set size of the robust weight (default: each run's ``n_test``);
    ``min_ess``: the robust environments' minimum effective sample size;
    ``n_boot``/``boot_seed``/``ci``: the bootstrap; ``dataset_axis``: analyse
    all datasets together with the dataset as an axis; ``allow_mixed``: rank
    a measure column whose rows mix settings. Raises
    :class:`~analysis.load.RunsError` on input that cannot be ranked
    (:class:`~analysis.load.MixedSettingsError` on mixed settings).
    """
    if max_cond < 0:
        raise RunsError(f"max_cond must be 0 or more, got {max_cond}")
    pop = population(checked(df, n_boot), include_unconverged, include_failed)
    if pop.height == 0:
        raise RunsError(f"none of the {df.height} runs is ok and converged "
                        "(admit unconverged runs with include_unconverged / --include-unconverged)")
    if not axis_columns(pop) and not dataset_axis:
        raise RunsError("the runs table has no hp.* columns: there are no hyperparameter axes to analyse")
    measures = measure_columns(pop)
    if not measures:
        raise RunsError("the runs table has no measure.* columns")
    finite = pop["gap"].cast(pl.Float64, strict=False).fill_null(np.nan).is_finite()
    if not finite.all():
        warnings.warn(f"{int((~finite).sum())} run(s) with a missing or non-finite gap are left out", stacklevel=2)
        pop = pop.filter(finite)
        if pop.height == 0:
            raise RunsError("no run in the population has a finite gap")
    check_settings(pop, measures, allow_mixed=allow_mixed, dataset_axis=dataset_axis)
    parts = [_rank_dataset(part, name, measures, max_cond=max_cond, robust_n=robust_n, min_ess=min_ess,
                           n_boot=n_boot, boot_seed=boot_seed, ci=ci)
             for name, part in split_datasets(pop, dataset_axis)]
    out = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
    axes: list[str] = []
    for part in parts:
        axes += [c[len("psi_"):] for c in part.columns if c.startswith("psi_") and c[len("psi_"):] not in axes]
    return sort_ranking(out.select(table_columns(axes, max_cond)), per_dataset=True)
