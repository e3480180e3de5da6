"""Every statistic of analysis.stats against a plain implementation of its definition (ANALYSIS.md).

The reference implementations below loop over pairs, groups and
environments exactly as the definitions read; they share no code with the
fast ones. Tables are random, small, and full of ties, NaN/inf values,
incomplete grids and one-valued axes.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import polars as pl
import pytest
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.stats import bootstrap_intervals, cmi_scores, granulated_tau, kendall_tau_a, robust_sign_error
from analysis.stats._ranks import axis_codes, rank_inputs
from analysis.stats.cmi import CMIPlan
from analysis.table import rank_table

# STATS_EXAMPLES raises the number of examples for a longer, deeper run
EXAMPLES = int(os.environ.get("STATS_EXAMPLES", "25"))
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- references

def sign(x: float) -> int:
    return int(x > 0) - int(x < 0)


def ref_tau(g, mu) -> float:
    """Jiang's τ over the runs where both are finite: 2/(n(n−1)) Σ_{i<j} sign·sign."""
    keep = [i for i in range(len(g)) if math.isfinite(g[i]) and math.isfinite(mu[i])]
    n = len(keep)
    if n < 2:
        return math.nan
    s = 0
    for a in range(n):
        for b in range(a + 1, n):
            i, j = keep[a], keep[b]
            s += sign(mu[i] - mu[j]) * sign(g[i] - g[j])
    return 2 * s / (n * (n - 1))


def ref_psi(g, mu, ax, keys):
    """ψ_k: mean τ over groups agreeing on all other axes and keys; Ψ over axes with ≥ 2 values."""
    n, K = ax.shape
    runs = [i for i in range(n) if math.isfinite(g[i])]
    psi_k = []
    multi = []
    for k in range(K):
        multi.append(len({ax[i, k] for i in runs}) >= 2)
        groups: dict[tuple, list[int]] = {}
        for i in runs:
            key = tuple(ax[i, q] for q in range(K) if q != k) + tuple(keys[i])
            groups.setdefault(key, []).append(i)
        taus = []
        for members in groups.values():
            kept = [i for i in members if math.isfinite(mu[i])]
            if len(kept) >= 2:
                taus.append(ref_tau([g[i] for i in kept], [mu[i] for i in kept]))
        psi_k.append(sum(taus) / len(taus) if (taus and multi[k]) else math.nan)
    vals = [p for p, mlt in zip(psi_k, multi) if mlt and not math.isnan(p)]
    return (sum(vals) / len(vals) if vals else math.nan), psi_k


def ref_cmi(g, mu, ax, S) -> float:
    """Î_S/Ĥ_S over ordered pairs i ≠ j of the runs where g and μ are finite."""
    keep = [i for i in range(len(g)) if math.isfinite(g[i]) and math.isfinite(mu[i])]
    if len(keep) < 2:
        return math.nan
    cells: dict[tuple, list[list[int]]] = {}
    total = 0
    for i in keep:
        for j in keep:
            if i == j:
                continue
            u = (tuple(ax[i, k] for k in S), tuple(ax[j, k] for k in S))
            vg, vm = int(g[i] > g[j]), int(mu[i] > mu[j])
            cells.setdefault(u, [[0, 0], [0, 0]])[vg][vm] += 1
            total += 1
    info = ent = 0.0
    for c in cells.values():
        nu = sum(map(sum, c))
        pu = nu / total
        pg = [(c[a][0] + c[a][1]) / nu for a in (0, 1)]
        pm = [(c[0][b] + c[1][b]) / nu for b in (0, 1)]
        for a in (0, 1):
            if pg[a] > 0:
                ent -= pu * pg[a] * math.log(pg[a])
            for b in (0, 1):
                p = c[a][b] / nu
                if p > 0:
                    info += pu * p * math.log(p / (pg[a] * pm[b]))
    return 0.0 if ent == 0 else info / ent


def ref_cmi_all(g, mu, ax, max_cond):
    sets = [s for k in range(max_cond + 1) for s in itertools.combinations(range(ax.shape[1]), k)]
    return sets, [ref_cmi(g, mu, ax, s) for s in sets]


def ref_robust(g, mu, ax, n_test, min_ess):
    """Environments = pairs of configurations differing in one axis; all run pairings are samples."""
    n, K = ax.shape
    runs = [i for i in range(n) if math.isfinite(g[i])]
    configs: dict[tuple, list[int]] = {}
    for i in runs:
        configs.setdefault(tuple(ax[i]), []).append(i)
    conf = list(configs)
    losses = {k: [] for k in range(K)}
    for a in range(len(conf)):
        for b in range(a + 1, len(conf)):
            diff = [k for k in range(K) if conf[a][k] != conf[b][k]]
            if len(diff) != 1:
                continue
            ws, es = [], []
            for i in configs[conf[a]]:
                for j in configs[conf[b]]:
                    if not (math.isfinite(mu[i]) and math.isfinite(mu[j])):
                        continue
                    nn = min(n_test[i], n_test[j])
                    v = max(0.0, 1 - 2 * math.exp(-2 * nn * (abs(g[i] - g[j]) / 2) ** 2)) ** 2
                    ws.append(max(0.0, v - 0.5))
                    es.append((1 - sign(mu[i] - mu[j]) * sign(g[i] - g[j])) / 2)
            sw, sw2 = sum(ws), sum(w * w for w in ws)
            if sw2 > 0 and sw * sw / sw2 >= min_ess:
                losses[diff[0]].append(sum(w * e for w, e in zip(ws, es)) / sw)

    def summary(x):
        if not x:
            return (math.nan, math.nan, math.nan, 0)
        xs = sorted(x)
        pos = 0.9 * (len(xs) - 1)  # linear interpolation between order statistics
        lo = int(math.floor(pos))
        hi = min(lo + 1, len(xs) - 1)
        p90 = xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
        return (sum(xs) / len(xs), p90, max(xs), len(xs))

    return summary([v for k in range(K) for v in losses[k]]), [summary(losses[k]) for k in range(K)]


# ---------------------------------------------------------------- random tables

@st.composite
def tables(draw, max_n=22, max_axes=3):
    """(g, mu (n×2), axes (n×K), seeds, n_test): ties, NaN/inf, incomplete grids, one-valued axes."""
    n = draw(st.integers(0, max_n))
    K = draw(st.integers(1, max_axes))
    levels = draw(st.lists(st.integers(1, 3), min_size=K, max_size=K))
    g_levels = draw(st.sampled_from([2, 4, 1000]))
    mu_levels = draw(st.sampled_from([1, 3, 1000]))
    nan_frac = draw(st.sampled_from([0.0, 0.15]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ax = np.column_stack([rng.integers(0, v, n) for v in levels]) if n else np.zeros((0, K), int)
    g = rng.integers(0, g_levels, n) / g_levels
    mu = rng.integers(0, mu_levels, (n, 2)).astype(float)
    if n and nan_frac:
        mu[rng.random((n, 2)) < nan_frac] = np.nan
        mu[rng.random((n, 2)) < nan_frac / 3] = np.inf
        g[rng.random(n) < nan_frac / 3] = np.nan
    seeds = rng.integers(0, 2, n)
    n_test = rng.choice([20, 50, 400], n).astype(float)
    return g, mu, ax, seeds, n_test


def close(a, b, tol=1e-9) -> bool:
    if (a is None or (isinstance(a, float) and math.isnan(a))) and (b is None or math.isnan(b)):
        return True
    return a is not None and not math.isnan(a) and abs(a - b) <= tol


# ---------------------------------------------------------------- τ

@settings(**SETTINGS)
@given(tables())
def test_tau_matches_definition(t):
    g, mu, *_ = t
    fast = kendall_tau_a(g, mu)
    for m in range(2):
        assert close(fast[m], ref_tau(g, mu[:, m]))


@settings(**SETTINGS)
@given(st.integers(2, 300), st.integers(0, 2**32 - 1))
def test_tau_equals_scipy_without_ties(n, seed):
    rng = np.random.default_rng(seed)
    g, mu = rng.normal(size=n), rng.normal(size=n)
    assert kendall_tau_a(g, mu) == pytest.approx(scipy.stats.kendalltau(mu, g).statistic, abs=1e-12)


def test_tau_with_ties_is_tau_a_not_scipy_tau_b():
    g = np.array([0.0, 0.0, 1.0, 2.0, 2.0, 3.0])
    mu = np.array([1.0, 2.0, 2.0, 3.0, 3.0, 5.0])
    assert kendall_tau_a(g, mu) == pytest.approx(ref_tau(g, mu))
    assert kendall_tau_a(g, mu) != pytest.approx(scipy.stats.kendalltau(mu, g).statistic)


@settings(**SETTINGS)
@given(tables(max_n=14), st.integers(0, 2**32 - 1))
def test_weighted_tau_equals_repeated_runs(t, seed):
    g, mu, *_ = t
    w = np.random.default_rng(seed).integers(0, 3, len(g))
    rep = np.repeat(np.arange(len(g)), w)
    fast = kendall_tau_a(g, mu, weights=w)
    for m in range(2):
        assert close(fast[m], ref_tau(g[rep], mu[rep, m]))


# ---------------------------------------------------------------- ψ

@settings(**SETTINGS)
@given(tables())
def test_granulated_tau_matches_definition(t):
    g, mu, ax, seeds, _ = t
    psi, psi_k = granulated_tau(g, mu, ax, seeds)
    for m in range(2):
        ref_all, ref_k = ref_psi(g, mu[:, m], ax, seeds[:, None])
        assert close(psi[m], ref_all)
        for k in range(ax.shape[1]):
            assert close(psi_k[m, k], ref_k[k])


def test_granulated_tau_on_a_full_grid_by_hand():
    # two axes × two values, one seed: ψ_a compares runs differing in a only
    ax = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    g = np.array([0.1, 0.2, 0.3, 0.4])
    mu = np.array([1.0, 2.0, 4.0, 3.0])  # right within b=0 and within a=0; wrong within b=1 and a=1
    psi, psi_k = granulated_tau(g, mu, ax)
    assert psi_k.tolist() == [0.0, 1.0]  # axis 0: groups b=0 (+1) and b=1 (−1); axis 1: (+1, +1)
    assert psi == 0.5


# ---------------------------------------------------------------- CMI

@settings(**SETTINGS)
@given(tables(), st.sampled_from(["auto", "direct", "keyed"]), st.integers(1, 5), st.booleans())
def test_cmi_matches_definition(t, mode, bucket, tiny_memory):
    g, mu, ax, *_ = t
    rk = rank_inputs(g, mu)
    budget = dict(tree_bytes=600, acc_bytes=3000) if tiny_memory else {}
    res = CMIPlan(rk, axis_codes(ax, len(g))[rk.keep], 2, bucket=bucket, mode=mode, **budget).run()
    for m in range(2):
        sets, ref = ref_cmi_all(g, mu[:, m], ax, 2)
        assert res.sets == sets
        for q in range(len(sets)):
            assert close(res.scores[m, q], ref[q])
        vals = [v for v in ref if not math.isnan(v)]
        best, which = res.best()
        if vals:
            assert close(best[m], min(vals))
            assert which[m] == sets[ref.index(min(vals))] or close(ref[sets.index(which[m])], min(vals))
            for size in range(3):
                sized = [v for s, v in zip(sets, ref) if len(s) == size]
                if sized:
                    assert close(res.min_over_size(size)[m], min(sized))
        else:
            assert math.isnan(best[m]) and which[m] is None


@settings(**SETTINGS)
@given(tables(max_n=12), st.integers(0, 2**32 - 1))
def test_weighted_cmi_equals_repeated_runs(t, seed):
    g, mu, ax, *_ = t
    w = np.random.default_rng(seed).integers(0, 3, len(g))
    rep = np.repeat(np.arange(len(g)), w)
    res = cmi_scores(g, mu, ax, max_cond=1, weights=w)
    for m in range(2):
        _, ref = ref_cmi_all(g[rep], mu[rep, m], ax[rep], 1)
        for q in range(len(ref)):
            assert close(res.scores[m, q], ref[q])


def test_cmi_of_a_perfect_and_a_useless_measure():
    rng = np.random.default_rng(0)
    g = rng.normal(size=40)
    ax = rng.integers(0, 2, (40, 2))
    res = cmi_scores(g, np.column_stack([g * 3 + 1, np.zeros(40)]), ax)
    assert np.allclose(res.scores[0], 1.0)  # μ determines V_g in every pair
    assert np.allclose(res.scores[1], 0.0)  # V_μ is always 0


# ---------------------------------------------------------------- robust sign-error

@settings(**SETTINGS)
@given(tables(max_n=24), st.sampled_from([0.5, 1.5, 2.5, 4.5]))
def test_robust_matches_definition(t, min_ess):
    g, mu, ax, _, n_test = t
    res = robust_sign_error(g, mu, ax, n_test, min_ess=min_ess)
    for m in range(2):
        overall, per_axis = ref_robust(g, mu[:, m], ax, n_test, min_ess)
        for a, b in zip(res.overall[m], overall):
            assert close(a, b)
        for k in range(ax.shape[1]):
            for a, b in zip(res.per_axis[m][k], per_axis[k]):
                assert close(a, b)


def test_robust_on_many_seeds_keeps_environments():
    # 2 configurations × 30 seeds: one environment with 900 samples
    ax = np.repeat([[0], [1]], 30, axis=0)
    rng = np.random.default_rng(1)
    g = np.where(ax[:, 0] == 1, 0.3, 0.1) + rng.normal(0, 0.01, 60)
    res = robust_sign_error(g, np.column_stack([g, -g]), ax, 10_000)
    assert res.overall[0][3] == 1 and res.overall[0][2] == pytest.approx(0.0)
    assert res.overall[1][2] == pytest.approx(1.0)


# ---------------------------------------------------------------- bootstrap

@settings(max_examples=max(8, EXAMPLES // 3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(max_n=12), st.integers(0, 1000))
def test_bootstrap_intervals_are_the_resampled_statistics(t, seed):
    g, mu, ax, *_ = t
    n_boot, ci = 6, 0.8
    res = bootstrap_intervals(g, mu, ax, n_boot=n_boot, seed=seed, ci=ci, max_cond=1)
    finite = np.flatnonzero(np.isfinite(g))
    rng = np.random.default_rng(seed)  # the documented resampling scheme
    taus, cmis = np.full((n_boot, 2), np.nan), np.full((n_boot, 2), np.nan)
    for b in range(n_boot):
        idx = finite[rng.integers(0, len(finite), len(finite))] if len(finite) else finite
        for m in range(2):
            taus[b, m] = ref_tau(g[idx], mu[idx, m])
            vals = [v for v in ref_cmi_all(g[idx], mu[idx, m], ax[idx], 1)[1] if not math.isnan(v)]
            cmis[b, m] = min(vals) if vals else np.nan
    assert np.allclose(res.tau_reps, taus, equal_nan=True, atol=1e-9)
    assert np.allclose(res.cmi_reps, cmis, equal_nan=True, atol=1e-9)
    for m in range(2):
        for reps, lo, hi in ((taus, res.tau_lo, res.tau_hi), (cmis, res.cmi_lo, res.cmi_hi)):
            r = reps[:, m][np.isfinite(reps[:, m])]
            if len(r):
                assert lo[m] == pytest.approx(np.quantile(r, 0.1)) and hi[m] == pytest.approx(np.quantile(r, 0.9))
            else:
                assert np.isnan(lo[m]) and np.isnan(hi[m])


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    g, mu, ax = rng.normal(size=30), rng.normal(size=(30, 2)), rng.integers(0, 2, (30, 2))
    a = bootstrap_intervals(g, mu, ax, n_boot=5, seed=7)
    b = bootstrap_intervals(g, mu, ax, n_boot=5, seed=7)
    c = bootstrap_intervals(g, mu, ax, n_boot=5, seed=8)
    assert np.array_equal(a.tau_reps, b.tau_reps) and np.array_equal(a.cmi_reps, b.cmi_reps)
    assert not np.array_equal(a.tau_reps, c.tau_reps)


# ---------------------------------------------------------------- the ranking table

def _runs_frame(g, mu, ax, seeds, n_test, status, converged) -> pl.DataFrame:
    cols = {"run_id": [f"r{i}" for i in range(len(g))], "dataset": ["d"] * len(g), "seed": seeds,
            "gap": g, "n_test": n_test, "status": status, "converged": converged}
    for k in range(ax.shape[1]):
        cols[f"hp.a{k}"] = ax[:, k] * 0.5  # float-typed axis values
    cols["measure.x"] = mu[:, 0]
    cols["measure.y"] = mu[:, 1]
    return pl.DataFrame(cols)


@settings(max_examples=max(12, EXAMPLES // 2), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(max_n=20), st.integers(0, 2**32 - 1), st.booleans())
def test_rank_table_matches_definitions_on_the_population(t, seed, admit):
    g, mu, ax, seeds, n_test = t
    rng = np.random.default_rng(seed)
    n = len(g)
    status = rng.choice(["ok", "ok", "ok", "failed"], n).tolist()
    converged = (rng.random(n) < 0.8).tolist()
    df = _runs_frame(g, mu, ax, seeds, n_test, status, converged)
    pop = np.array([s == "ok" and (c or admit) for s, c in zip(status, converged)], dtype=bool)
    pop_g = g[pop]
    if not pop.any():
        with pytest.raises(ValueError, match="no rows|ok and converged"):
            rank_table(df, include_unconverged=admit, n_boot=0, min_ess=1.5)
        return
    if not np.isfinite(pop_g).any():
        with pytest.raises(ValueError, match="finite gap"):
            rank_table(df, include_unconverged=admit, n_boot=0, min_ess=1.5)
        return
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = rank_table(df, include_unconverged=admit, n_boot=0, min_ess=1.5)
    assert out["measure"].sort().to_list() == ["x", "y"]
    pa, pm, ps, pn = ax[pop], mu[pop], seeds[pop], n_test[pop]
    for m, name in enumerate(["x", "y"]):
        row = out.filter(pl.col("measure") == name).row(0, named=True)
        keep = np.isfinite(pop_g) & np.isfinite(pm[:, m])
        assert row["n_models"] == int(keep.sum())
        assert close(row["tau"], ref_tau(pop_g, pm[:, m]))
        psi, psi_k = ref_psi(pop_g, pm[:, m], pa, np.column_stack([ps, np.zeros(len(ps))]))
        assert close(row["psi"], psi)
        for k in range(ax.shape[1]):
            assert close(row[f"psi_a{k}"], psi_k[k])
        sets, ref = ref_cmi_all(pop_g, pm[:, m], pa, 2)
        vals = [v for v in ref if not math.isnan(v)]
        assert close(row["cmi"], min(vals) if vals else math.nan)
        if vals:  # the reported set attains the minimum (ties may resolve either way)
            chosen = tuple(int(a[1:]) for a in row["cmi_set"].split("+")) if row["cmi_set"] else ()
            assert close(ref[sets.index(chosen)], min(vals))
        for size in range(3):
            sized = [v for s, v in zip(sets, ref) if len(s) == size and not math.isnan(v)]
            assert close(row[f"cmi_k{size}"], min(sized) if sized else math.nan)
        overall, per_axis = ref_robust(pop_g, pm[:, m], pa, pn, 1.5)
        assert [row["robust_mean"], row["robust_p90"], row["robust_max"]] == pytest.approx(
            list(overall[:3]), nan_ok=True)
        assert row["robust_envs"] == overall[3]
        for k in range(ax.shape[1]):
            assert close(row[f"robust_max_a{k}"], per_axis[k][2])
            assert row[f"robust_envs_a{k}"] == per_axis[k][3]
