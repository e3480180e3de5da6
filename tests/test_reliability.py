"""Reliability from repeated draws (analysis.stats.reliability) against a direct numpy
computation on synthetic repeated rows, and through the ranking table."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.stats.reliability import reliability, tau_ceiling
from analysis.table import rank_table


def draws(n: int, R: int, between: float, within: float, seed: int = 0) -> np.ndarray:
    """(n, R) draws: a true value per network (sd ``between``) plus noise (sd ``within``)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, between, n)[:, None] + rng.normal(0, within, (n, R))


def direct(d: np.ndarray) -> tuple[float, float]:
    """(one draw, stored mean) reliability straight from the draws, by the definitions."""
    n, R = d.shape
    mean, var1 = d.mean(1), d.var(1, ddof=1)
    total = mean.var(ddof=1)                       # across networks, of the stored values
    true = total - var1.mean() / R                 # the networks' true values
    return 1 - var1.mean() / (true + var1.mean()), 1 - (var1.mean() / R) / total


def test_matches_direct_and_known_variances():
    d = draws(4000, 5, between=1.0, within=0.5)
    res = reliability(d.mean(1), d.std(1, ddof=1), 5)
    one, mean = direct(d)
    assert math.isclose(res.one_draw[0], one, rel_tol=1e-12)
    assert math.isclose(res.of_mean[0], mean, rel_tol=1e-12)
    # the population values: 1/(1 + 0.25) and 1/(1 + 0.25/5), within sampling error
    assert abs(res.one_draw[0] - 0.8) < 0.02 and abs(res.of_mean[0] - 1 / 1.05) < 0.01
    # Spearman–Brown links the two exactly for a common R
    rR = res.of_mean[0]
    assert math.isclose(res.one_draw[0], rR / (5 - 4 * rR), rel_tol=1e-12)
    assert math.isclose(res.tau_ceiling[0], 2 / math.pi * math.asin(math.sqrt(rR)), rel_tol=1e-12)


def test_conventions():
    x = np.array([1.0, 2.0, 4.0, np.nan])
    # deterministic: sd 0 → 1, ceiling 1
    r = reliability(x, np.zeros(4), 1)
    assert r.one_draw[0] == 1 and r.of_mean[0] == 1 and r.tau_ceiling[0] == 1 and r.n[0] == 3
    # no sd (repeats = 1): NaN; one network: NaN; constant values: NaN
    assert np.isnan(reliability(x, np.full(4, np.nan), 1).of_mean[0])
    assert np.isnan(reliability([1.0], [0.1], 3).of_mean[0])
    assert np.isnan(reliability([2.0, 2.0], [0.1, 0.1], 3).of_mean[0])
    # noise above the spread: negative reliability, ceiling 0
    r = reliability([0.0, 1.0], [5.0, 5.0], 2)
    assert r.of_mean[0] < 0 and r.tau_ceiling[0] == 0
    assert np.isnan(tau_ceiling(np.nan)) and tau_ceiling(1.0) == 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 40), st.lists(st.integers(2, 6), min_size=40, max_size=40),
       st.floats(0.01, 3), st.floats(0.0, 3), st.integers(0, 2**32 - 1))
def test_hypothesis_against_numpy(n, reps, between, within, seed):
    """Networks with different R_i: the statistic against a loop over the definitions."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0, between, n)
    rows = [true[i] + rng.normal(0, within, reps[i]) for i in range(n)]
    x = np.array([r.mean() for r in rows])
    s = np.array([r.std(ddof=1) for r in rows])
    R = np.array(reps[:n], dtype=float)
    res = reliability(np.column_stack([x, x]), np.column_stack([s, np.zeros(n)]), R)
    V = sum((xi - x.mean()) ** 2 for xi in x) / (n - 1)
    W = sum(si ** 2 for si in s) / n
    WR = sum(si ** 2 / Ri for si, Ri in zip(s, R)) / n
    assert math.isclose(res.of_mean[0], 1 - WR / V, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(res.one_draw[0], 1 - W / (V - WR + W), rel_tol=1e-9, abs_tol=1e-9)
    assert res.of_mean[1] == 1 and res.one_draw[1] == 1


def test_rank_table_columns():
    """Synthetic repeated rows through rank_table: reliability from measure_sd.* and
    measure_repeats, NaN for a measure without sds."""
    n, R = 40, 3
    d = draws(n, R, between=1.0, within=0.7, seed=1)
    rng = np.random.default_rng(2)
    df = pl.DataFrame({
        "run_id": [f"r{i:03d}" for i in range(n)], "dataset": ["toy"] * n, "seed": [0] * n,
        "status": ["ok"] * n, "converged": [True] * n, "n_test": [1000] * n,
        "hp.lr": [0.1 * (1 + i % 4) for i in range(n)],
        "gap": d.mean(1) + rng.normal(0, 1, n),
        "measure.noisy": d.mean(1), "measure_sd.noisy": d.std(1, ddof=1),
        "measure.fixed": np.arange(n, dtype=float), "measure_sd.fixed": np.zeros(n),
        "measure.plain": rng.normal(size=n),
        "measure_repeats": [json.dumps({"noisy": R})] * n,
    })
    t = {r["measure"]: r for r in rank_table(df, n_boot=0).to_dicts()}
    one, mean = direct(d)
    assert math.isclose(t["noisy"]["reliability"], one, rel_tol=1e-12)
    assert math.isclose(t["noisy"]["reliability_mean"], mean, rel_tol=1e-12)
    assert math.isclose(t["noisy"]["tau_ceiling"], 2 / math.pi * math.asin(math.sqrt(mean)), rel_tol=1e-12)
    assert t["fixed"]["reliability"] == 1 and t["fixed"]["tau_ceiling"] == 1
    assert math.isnan(t["plain"]["reliability"]) and math.isnan(t["plain"]["tau_ceiling"])
