"""The claims of CLAIMS.md: the statistics, p-values, Holm, exact bounds, the noise floor and the
single-draw Ψ bootstrap against plain loops; the verdicts on rows built to give each one; bad
input, the command line and the HTML page in headless Chromium."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import polars as pl
import pytest
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.claims import CLAIM_COLUMNS, CLAIMS, evaluate_claims, noise_floors, setting
from analysis.claims.engine import Row, adjust_and_decide
from analysis.cli import main
from analysis.stats import claims_stats as cs
from analysis.stats.bootstrap import resample_blocks, resample_counts
from analysis.stats.inference import binomial_p, bootstrap_p, clopper_pearson, holm
from analysis.stats.noise import icc, seeds_for_reliability, within_configuration
from analysis.synthetic import synthetic_runs
from tests.test_report import Page, chromium, needs_chromium, probe

SETTINGS = dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- plain references


def sign(x: float) -> int:
    return int(x > 0) - int(x < 0)


def ref_tau(a, b) -> float:
    n = len(a)
    if n < 2:
        return math.nan
    s = sum(sign(a[i] - a[j]) * sign(b[i] - b[j]) for i in range(n) for j in range(i + 1, n))
    return 2 * s / (n * (n - 1))


def ref_groups(ax, keys, free, keep):
    groups: dict[tuple, list[int]] = {}
    for i in range(len(keep)):
        if keep[i]:
            key = tuple(ax[i, k] for k in range(ax.shape[1]) if k not in free) + tuple(keys[i])
            groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len(g) >= 2]


def ref_psi(a, b, ax, keys, free) -> tuple[float, int]:
    keep = [math.isfinite(a[i]) and math.isfinite(b[i]) for i in range(len(a))]
    taus = [ref_tau([a[i] for i in g], [b[i] for i in g]) for g in ref_groups(ax, keys, free, keep)]
    return (sum(taus) / len(taus) if taus else math.nan), len(taus)


def ref_Psi(a, b, ax, keys) -> float:
    keep = [i for i in range(len(a)) if math.isfinite(a[i]) and math.isfinite(b[i])]
    vals = []
    for k in range(ax.shape[1]):
        if len({ax[i, k] for i in keep}) >= 2:
            p, _ = ref_psi(a, b, ax, keys, [k])
            if not math.isnan(p):
                vals.append(p)
    return sum(vals) / len(vals) if vals else math.nan


def ref_pair(x, ax, keys, axis, p, q) -> list[float]:
    groups: dict[tuple, dict[int, list[float]]] = {}
    for i in range(len(x)):
        if math.isfinite(x[i]) and ax[i, axis] in (p, q):
            key = tuple(ax[i, k] for k in range(ax.shape[1]) if k != axis) + tuple(keys[i])
            groups.setdefault(key, {p: [], q: []})[ax[i, axis]].append(x[i])
    return [sum(g[q]) / len(g[q]) - sum(g[p]) / len(g[p]) for g in groups.values() if g[p] and g[q]]


@st.composite
def tables(draw, max_n: int = 30):
    n = draw(st.integers(2, max_n))
    K = draw(st.integers(1, 3))
    ax = np.array(draw(st.lists(st.lists(st.integers(0, 2), min_size=K, max_size=K), min_size=n, max_size=n)))
    keys = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))[:, None]
    val = st.one_of(st.integers(-3, 3).map(float), st.just(math.nan), st.just(math.inf))
    a = np.array(draw(st.lists(val, min_size=n, max_size=n)))
    b = np.array(draw(st.lists(val, min_size=n, max_size=n)))
    free = sorted(draw(st.sets(st.integers(0, K - 1), min_size=1)))
    return a, b, ax, keys, free


# ---------------------------------------------------------------- the statistics


@given(tables())
@settings(**SETTINGS)
def test_psi_over_any_axis_set_is_the_plain_loop(t):
    a, b, ax, keys, free = t
    e = cs.psi(a, b, ax, free, keys, n_boot=3)
    want, groups = ref_psi(a, b, ax, keys, free)
    assert e.n_groups == groups
    assert (math.isnan(e.estimate) and math.isnan(want)) or e.estimate == pytest.approx(want, abs=1e-12)


@given(tables())
@settings(**SETTINGS)
def test_Psi_is_the_mean_of_single_axis_psi(t):
    a, b, ax, keys, _ = t
    e = cs.Psi(a, b, ax, keys, n_boot=3)
    want = ref_Psi(a, b, ax, keys)
    assert (math.isnan(e.estimate) and math.isnan(want)) or e.estimate == pytest.approx(want, abs=1e-12)
    keep = np.isfinite(a) & np.isfinite(b)
    for part in e.parts:  # every ψ_k part is the single-axis ψ over the runs where both are finite
        got = ref_psi(np.where(keep, a, np.nan), np.where(keep, b, np.nan), ax, keys, [part.axis])[0]
        assert (math.isnan(part.estimate) and math.isnan(got)) or part.estimate == pytest.approx(got, abs=1e-12)


def ref_group_labels(ax, keys, axis) -> np.ndarray:
    labels: dict[tuple, int] = {}
    return np.array([labels.setdefault(tuple(ax[i, k] for k in range(ax.shape[1]) if k != axis) + tuple(keys[i]),
                                       len(labels)) for i in range(len(ax))])


@given(tables(), st.integers(0, 2), st.integers(0, 2))
@settings(**SETTINGS)
def test_pair_is_the_median_of_the_plain_loop(t, p, q):
    x, _, ax, keys, free = t
    if p == q:
        return
    axis = free[0]
    e = cs.pair(x, ax[:, axis] == p, ax[:, axis] == q, ref_group_labels(ax, keys, axis), n_boot=3)
    d = ref_pair(x, ax, keys, axis, p, q)
    assert e.n_groups == len(d)
    assert (not d and math.isnan(e.estimate)) or e.estimate == pytest.approx(float(np.median(d)), abs=1e-12)


@given(tables())
@settings(**SETTINGS)
def test_tau_of_two_columns_is_the_plain_loop(t):
    a, b, *_ = t
    keep = np.isfinite(a) & np.isfinite(b)
    got, want = cs.tau(a, b, n_boot=2).estimate, ref_tau(a[keep].tolist(), b[keep].tolist())
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)


def _grid(n_groups: int, size: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ax = np.array([[j, g] for g in range(n_groups) for j in range(size)])
    a = ax[:, 0].astype(float)
    b = np.array([rng.permutation(size)[j] for g in range(n_groups) for j in range(size)], dtype=float)
    return a, b, ax, np.zeros((len(ax), 0), dtype=np.int64)


def test_bootstrap_is_reproducible_and_resamples_whole_groups():
    rng = np.random.default_rng(3)
    a, b, ax, keys = _grid(9, 4, rng)
    e1 = cs.psi(a, b, ax, [0], keys, n_boot=200, seed=5)
    e2 = cs.psi(a, b, ax, [0], keys, n_boot=200, seed=5)
    e3 = cs.psi(a, b, ax, [0], keys, n_boot=200, seed=6)
    assert np.array_equal(e1.reps, e2.reps) and not np.array_equal(e1.reps, e3.reps)
    # each replicate is the mean of the groups' τ, a group drawn c times counting c times
    taus = np.array([ref_tau(a[ax[:, 1] == g].tolist(), b[ax[:, 1] == g].tolist()) for g in range(9)])
    want = [float(np.sum(taus * c) / np.sum(c)) for c in resample_counts(9, 200, 5)]
    assert np.allclose(e1.reps, want)
    assert (e1.lo, e1.hi) == tuple(np.quantile(e1.reps, [0.025, 0.975]))
    # a group's runs move together: every group orders perfectly, so does every replicate
    # (resampling runs would tie copies of a run and pull τ-a below 1)
    perfect = cs.psi(a, a * 2, ax, [0], keys, n_boot=100, seed=1)
    assert perfect.estimate == 1 and set(perfect.reps) == {1.0}
    # pair: the median of the resampled groups' differences
    x = rng.normal(size=len(a))
    pe = cs.pair(x, ax[:, 0] == 0, ax[:, 0] == 3, ax[:, 1], n_boot=100, seed=2)
    d = np.array([x[(ax[:, 1] == g) & (ax[:, 0] == 3)][0] - x[(ax[:, 1] == g) & (ax[:, 0] == 0)][0] for g in range(9)])
    assert np.allclose(pe.reps, [np.median(np.repeat(d, c)) for c in resample_counts(9, 100, 2)])
    # τ resamples runs: its replicates are τ with multiplicities
    te = cs.tau(a, b, n_boot=50, seed=4)
    assert np.array_equal(te.reps, cs.tau(a, b, n_boot=50, seed=4).reps)
    for c, rep in zip(resample_counts(len(a), 50, 4), te.reps):
        assert rep == pytest.approx(ref_tau(np.repeat(a, c).tolist(), np.repeat(b, c).tolist()), abs=1e-12)
    # the median resamples runs
    me = cs.median(x, n_boot=60, seed=7)
    assert np.allclose(me.reps, [np.median(np.repeat(x, c)) for c in resample_counts(len(x), 60, 7)])


def test_resample_blocks_are_the_sequence_of_resample_counts():
    for n, B, cells in ((1, 3, 1), (7, 50, 70), (46, 333, 1 << 21)):
        blocks = list(resample_blocks(n, B, 11, max_cells=cells))
        assert all(b.size <= max(cells, n) for b in blocks)
        assert np.array_equal(np.concatenate(blocks), np.array(list(resample_counts(n, B, 11))))


def ref_Psi_replicates(a_list, b, ax, keys, conf, n_boot, seed) -> np.ndarray:
    """Ψ of each replicate by the definition: one draw of configurations, every axis regroups it;
    a pair of runs of distinct configurations weighs c_i·c_j; ψ_k the mean over groups with a pair."""
    keep = [i for i in range(len(b)) if math.isfinite(b[i]) and all(math.isfinite(a[i]) for a in a_list)]
    labels = sorted({conf[i] for i in keep})
    index = {c: j for j, c in enumerate(labels)}
    axes = [k for k in range(ax.shape[1]) if len({ax[i, k] for i in keep}) >= 2]
    out = np.full((n_boot, len(a_list)), np.nan)
    for r, counts in enumerate(resample_counts(len(labels), n_boot, seed)):
        for m, a in enumerate(a_list):
            psis = []
            for k in axes:
                groups: dict[tuple, list[int]] = {}
                for i in keep:
                    key = tuple(ax[i, q] for q in range(ax.shape[1]) if q != k) + tuple(keys[i])
                    groups.setdefault(key, []).append(i)
                taus = []
                for g in groups.values():
                    num = den = 0.0
                    for x in range(len(g)):
                        for y in range(x + 1, len(g)):
                            i, j = g[x], g[y]
                            w = counts[index[conf[i]]] * counts[index[conf[j]]]
                            num += w * sign(a[i] - a[j]) * sign(b[i] - b[j])
                            den += w
                    if den > 0:
                        taus.append(num / den)
                if taus:
                    psis.append(sum(taus) / len(taus))
            out[r, m] = sum(psis) / len(psis) if psis else math.nan
    return out


@given(tables(max_n=24), st.integers(0, 5))
@settings(**SETTINGS)
def test_Psi_bootstrap_is_one_draw_of_configurations_that_every_axis_regroups(t, seed):
    a, b, ax, keys, _ = t
    conf = ref_group_labels(np.c_[ax, np.full(len(ax), -1)], np.zeros((len(ax), 0), dtype=int), ax.shape[1])
    ests, diff = cs.psi_all([a, -b], b, ax, keys, conf, n_boot=15, seed=seed)
    want = ref_Psi_replicates([a, -b], b, ax, keys, conf, 15, seed)
    for m in range(2):
        assert np.allclose(ests[m].reps, want[:, m], equal_nan=True, atol=1e-12)
    assert np.allclose(diff.reps, want[:, 0] - want[:, 1], equal_nan=True, atol=1e-12)


def test_Psi_draws_configurations_with_their_seeds_not_axes_apart():
    # two axes, 3 × 3 grid, 2 seeds: a configuration drawn 0 times leaves every axis's groups
    ax = np.array([[i, j] for i in range(3) for j in range(3) for _ in range(2)])
    keys = np.array([s for _ in range(9) for s in range(2)])[:, None]
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=18), rng.normal(size=18)
    e = cs.Psi(a, b, ax, keys, n_boot=40, seed=3)
    conf = ax[:, 0] * 3 + ax[:, 1]
    want = ref_Psi_replicates([a], b, ax, keys, conf, 40, 3)[:, 0]
    assert np.allclose(e.reps, want, atol=1e-12)
    # the parts come from the same draws: Ψ of a replicate is the mean of its parts
    assert np.allclose(e.reps, np.nanmean(np.c_[e.parts[0].reps, e.parts[1].reps], axis=1))
    # drawing each axis's groups independently would give other replicates
    indep = np.mean([cs.psi(a, b, ax, [k], keys, n_boot=40, seed=3).reps for k in (0, 1)], axis=0)
    assert not np.allclose(e.reps, indep)


def test_Psi_difference_is_paired():
    rng = np.random.default_rng(0)
    a, b, ax, keys = _grid(6, 3, rng)
    ests, diff = cs.psi_all([b, b], a, ax, keys, n_boot=100, seed=0)
    assert diff.estimate == 0 and set(diff.reps) == {0.0}  # the same draws for both
    assert ests[0].estimate == pytest.approx(ref_Psi(b, a, ax, keys))


def test_constant_columns_are_flagged():
    ax = np.array([[j, g] for g in range(4) for j in range(3)])
    keys = np.zeros((12, 0), dtype=int)
    within = ax[:, 1].astype(float)  # constant within every group of axis 0, varies across groups
    b = np.arange(12.0)
    assert cs.psi(within, b, ax, [0], keys, n_boot=5).constant == "a"
    assert cs.psi(b, within, ax, [0], keys, n_boot=5).constant == "b"
    assert cs.psi(b, b, ax, [0], keys, n_boot=5).constant == ""
    assert cs.tau(np.ones(12), b, n_boot=5).constant == "a"
    e = cs.Psi(within, b, ax, keys, n_boot=5)  # varies within the groups of axis 1: a part only
    assert [p.constant for p in e.parts] == [True, False] and e.constant == ""
    assert cs.Psi(np.ones(12), b, ax, keys, n_boot=5).constant == "a"


# ---------------------------------------------------------------- p-values, Holm, exact bounds, noise floor


@given(st.lists(st.one_of(st.integers(-3, 3).map(float), st.just(math.nan)), max_size=40),
       st.integers(-3, 3).map(float), st.integers(-2, 2).map(float))
@settings(**SETTINGS)
def test_bootstrap_p_is_the_plain_rule(reps, estimate, t):
    finite = [r for r in reps if math.isfinite(r)]
    if not finite:
        assert math.isnan(bootstrap_p(np.array(reps), estimate, t))
        return
    if estimate == t:
        want = 1.0
    else:
        far = sum(1.0 if (r < t if estimate > t else r > t) else 0.5 if r == t else 0.0 for r in finite)
        want = min(1.0, 2 * (1 + far) / (len(finite) + 1))
    assert bootstrap_p(np.array(reps), estimate, t) == pytest.approx(want, abs=1e-15)


def ref_holm(p: list[float]) -> list[float]:
    """Holm's adjusted p by its definition: max over j ≤ rank of min(1, (m − j + 1)·p_(j))."""
    idx = [i for i in range(len(p)) if math.isfinite(p[i])]
    m = len(idx)
    ranked = sorted(idx, key=lambda i: (p[i], i))
    out = [math.nan] * len(p)
    for r, i in enumerate(ranked):
        out[i] = max(min(1.0, (m - j) * p[ranked[j]]) for j in range(r + 1))
    return out


def step_down(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure: reject the smallest p while p_(i) ≤ α/(m − i + 1)."""
    idx = sorted((i for i in range(len(p)) if math.isfinite(p[i])), key=lambda i: (p[i], i))
    rejected = set()
    for r, i in enumerate(idx):
        if p[i] > alpha / (len(idx) - r):
            break
        rejected.add(i)
    return rejected


@given(st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.001, 0.01, 0.0125, 0.025, 0.05]),
                          st.just(math.nan)), max_size=30))
@settings(**SETTINGS)
def test_holm_against_a_direct_implementation(p):
    got = holm(p)
    assert np.allclose(got, ref_holm(p), equal_nan=True, atol=1e-15)
    for alpha in (0.01, 0.05, 0.2):
        assert {i for i in range(len(p)) if got[i] <= alpha} == step_down(p, alpha)


def test_clopper_pearson_against_beta_quantiles():
    for n in range(1, 61):
        for k in range(n + 1):
            lo, hi = clopper_pearson(k, n, 0.95)
            want_lo = 0.0 if k == 0 else scipy.stats.beta.ppf(0.05, k, n - k + 1)
            want_hi = 1.0 if k == n else scipy.stats.beta.ppf(0.95, k + 1, n - k)
            assert lo == pytest.approx(want_lo, abs=1e-9) and hi == pytest.approx(want_hi, abs=1e-9), (k, n)
    assert clopper_pearson(4, 4)[0] == pytest.approx(0.05 ** 0.25)  # 0.47: four of four shows little
    assert clopper_pearson(29, 29)[0] >= 0.9 > clopper_pearson(28, 28)[0]  # 29 of 29: the fewest for ≥ 0.9
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


@pytest.mark.parametrize("k, n, t", [(0, 5, 0.5), (4, 4, 0.9), (12, 20, 0.9), (29, 29, 0.9), (7, 30, 0.25)])
def test_binomial_p_is_the_plain_sum(k, n, t):
    pmf = [math.comb(n, j) * t ** j * (1 - t) ** (n - j) for j in range(n + 1)]
    want = min(1.0, 2 * min(sum(pmf[k:]), sum(pmf[: k + 1])))
    assert binomial_p(k, n, t) == pytest.approx(want, rel=1e-12)


@given(st.lists(st.tuples(st.integers(0, 5), st.one_of(st.floats(-1, 1), st.just(math.nan))), max_size=40))
@settings(**SETTINGS)
def test_icc_and_spearman_brown_against_plain_loops(data):
    groups: dict[int, list[float]] = {}
    for c, v in data:
        if math.isfinite(v):
            groups.setdefault(c, []).append(v)
    multi = [g for g in groups.values() if len(g) >= 2]
    within, total, used = within_configuration([v for _, v in data], [c for c, _ in data])
    assert used == len(multi)
    if not multi:
        assert math.isnan(within) and math.isnan(total)
        return
    ss = sum(sum((v - sum(g) / len(g)) ** 2 for v in g) for g in multi)
    vals = [v for g in multi for v in g]
    mean = sum(vals) / len(vals)
    assert within == pytest.approx(ss / (len(vals) - len(multi)), abs=1e-12)
    assert total == pytest.approx(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1), abs=1e-12)
    r = icc(within, total)
    if total <= 0:
        assert math.isnan(r)
        return
    assert r == pytest.approx(1 - within / total)
    k = seeds_for_reliability(r, 0.8)
    if r <= 0:
        assert k == math.inf
    elif r < 1:
        assert k == pytest.approx(4 * (1 - r) / r)
        assert k * r / (1 + (k - 1) * r) == pytest.approx(0.8)  # Spearman–Brown at k seeds


def test_noise_floor_of_a_built_study():
    df = grid_rows({"width": [16, 32, 64]}, seeds=4, gap=lambda p: 0.01 * p["width"] / 16 + 0.001 * (p["seed"] % 2),
                   test_acc=lambda p: 0.9, n_test=lambda p: 400)
    f = noise_floors(df).row(0, named=True)
    assert f["n_test"] == 400 and f["test_acc_se"] == pytest.approx(math.sqrt(0.9 * 0.1 / 400))
    g = df["gap"].to_numpy()
    within = np.mean([np.var(g[df["hp.width"].to_numpy() == w], ddof=1) for w in (16, 32, 64)])
    assert f["gap_within_sd"] == pytest.approx(math.sqrt(within))
    assert f["icc"] == pytest.approx(1 - within / np.var(g, ddof=1))
    assert f["seeds_needed"] == pytest.approx(4 * (1 - f["icc"]) / f["icc"]) and f["low_icc"] is False


# ---------------------------------------------------------------- rows built for each verdict


def grid_rows(axes: dict[str, list], seeds: int = 3, **extra) -> pl.DataFrame:
    """A full grid (× seeds) of ok, converged runs with a gap; ``extra``: column → f(row dict)."""
    rows = []
    for values in itertools.product(*axes.values()):
        for s in range(seeds):
            r = {f"hp.{k}": v for k, v in zip(axes, values)}
            r.update(seed=s, study="built", dataset="digits", model="mlp", status="ok", converged=True)
            r["run_id"] = f"r{len(rows):04d}"
            rows.append(r)
    for r in rows:
        p = {k[3:]: v for k, v in r.items() if k.startswith("hp.")} | {"seed": r["seed"], "i": int(r["run_id"][1:])}
        r["gap"] = 0.1
        for col, f in extra.items():
            r[col] = f(p)
    return pl.DataFrame(rows)


def one(table: pl.DataFrame, claim: str, statistic_prefix: str = "") -> dict:
    rows = [r for r in table.iter_rows(named=True) if r["claim"] == claim and r["statistic"].startswith(statistic_prefix)]
    assert len(rows) == 1, rows
    return rows[0]


BATCH = {"batch_size": [32, 64, 128, 256], "width": [16, 32]}
BOOTS = 2000  # p ≥ 2/(B + 1): enough for a small Holm family


@pytest.mark.parametrize("slope, verdict", [(1, "supported"), (-1, "contradicted"), (0, "undecided")])
def test_each_verdict_on_built_rows(slope, verdict):
    def sharp(p):
        s = slope if slope else (1 if (p["seed"] + p["width"] // 16) % 2 else -1)  # half the groups each way
        return s * p["batch_size"] + 0.001 * p["seed"]

    df = grid_rows(BATCH, **{"measure.keskar_sharpness_1e-3": sharp})
    t = evaluate_claims(df, ["keskar_batch_sharpness"], n_boot=BOOTS)
    assert t.height == 1  # hessian_max_eig is an "also" quantity, never a verdict of its own
    r = one(t, "keskar_batch_sharpness", "ψ_batch_size(batch_size, keskar")
    assert r["verdict"] == verdict, r
    assert r["n_runs"] == df.height and r["n_groups"] == 6
    assert r["estimate"] == pytest.approx(float(slope))
    assert r["p_holm"] == pytest.approx(r["p"])  # a family of one
    assert r["also"] == "ψ_batch_size(batch_size, hessian_max_eig): not computed (needs measure hessian_max_eig)"


MIXED = {"batch_size": [32, 64, 128], "lr": [0.1, 0.2], "width": [16, 32]}


def test_mixed_names_the_axis_that_goes_the_other_way():
    # the measure orders every batch_size and lr group with the gap, every width group against it:
    # Ψ = (1 + 1 − 1)/3 > 0 in every replicate, but ψ_width's interval lies entirely below 0
    df = grid_rows(MIXED, gap=lambda p: p["batch_size"] / 32 + 10 * p["lr"] + p["width"] / 16 + 0.01 * p["seed"],
                   **{"measure.keskar_sharpness_1e-3": lambda p: p["batch_size"] / 32 + 10 * p["lr"] - p["width"] / 16})
    t = evaluate_claims(df, ["keskar_sharpness_predicts"], n_boot=BOOTS)
    r = one(t, "keskar_sharpness_predicts", "Ψ(")
    assert r["estimate"] == pytest.approx(1 / 3) and r["p_holm"] < 0.05
    assert r["verdict"] == "mixed" and "ψ_width" in r["reason"] and "ψ_lr" not in r["reason"], r
    assert "width -1 [-1, -1]" in r["per_axis"] and "batch_size +1 [+1, +1]" in r["per_axis"]
    # the same without the width axis is supported
    alone = df.filter(pl.col("hp.width") == 16).drop("hp.width")
    r2 = one(evaluate_claims(alone, ["keskar_sharpness_predicts"], n_boot=BOOTS), "keskar_sharpness_predicts", "Ψ(")
    assert r2["verdict"] == "supported" and "no ψ_k interval" in r2["reason"]


def test_holm_over_the_primary_statistics_of_the_whole_table():
    df = grid_rows(MIXED, gap=lambda p: p["batch_size"] / 32 + 0.01 * p["seed"] * p["lr"],
                   **{"measure.keskar_sharpness_1e-3": lambda p: p["batch_size"] + p["seed"],
                      "measure.path_norm": lambda p: -p["batch_size"] * p["seed"],
                      "measure.params": lambda p: float(p["width"]), "measure.vc_wl_log_w": lambda p: p["width"] * 2.0})
    t = evaluate_claims(df, n_boot=BOOTS)
    fam = t.filter(pl.col("p_holm").is_not_null())
    assert np.allclose(fam["p_holm"].to_numpy(), holm(fam["p"].to_numpy()))
    # every primary row with a p is in the family; "also" text and combined rows are not
    primary = t.filter(pl.col("p").is_not_null() & (pl.col("statistic") != "all of the above"))
    assert primary.height == fam.height
    assert t.filter(pl.col("statistic") == "all of the above")["p_holm"].null_count() == \
        t.filter(pl.col("statistic") == "all of the above").height


def test_decide_on_built_rows_of_every_kind():
    def row(**kw) -> Row:
        base = dict(claim="c", study="s", dataset="d", statistic="x", side=">", threshold=0.0)
        return Row(**(base | kw))

    part = lambda lo, hi: ("width", cs.Part(0, (lo + hi) / 2, lo, hi, 3, np.zeros(0)))  # noqa: E731
    rows = [row(estimate=0.5, p=0.001), row(estimate=-0.5, p=0.001), row(estimate=0.5, p=0.2),
            row(estimate=0.3, p=0.001, parts=[part(-1.0, -0.5)]), row(estimate=0.3, p=0.001, parts=[part(-0.2, 0.4)]),
            row(estimate=1.0, ci_low=0.47, ci_high=1.0, p=1.0, share=(4, 4), side=">=", threshold=0.9),
            row(estimate=0.6, ci_low=0.41, ci_high=0.77, p=0.001, share=(12, 20), side=">=", threshold=0.9),
            row(estimate=-0.004, p=0.001, min_effect=0.01, side="<"), row(estimate=0.2, p=0.001, role="listed"),
            row(reason="not testable: needs axis lr"), row(estimate=0.4, p=0.02)]
    combined = Row(claim="c", study="s", dataset="d", statistic="all of the above", role="combined",
                   members=[rows[0], rows[3]])
    adjust_and_decide(rows + [combined])
    assert [r.verdict for r in rows] == ["supported", "contradicted", "undecided", "mixed", "supported", "undecided",
                                         "contradicted", "undecided", "", "not testable", "undecided"]
    assert rows[0].p_holm == pytest.approx(0.001 * 9)  # nine with a p, shares included; six tie at 0.001
    assert rows[10].p_holm == pytest.approx(0.02 * 3) and "adjusted p 0.06" in rows[10].reason  # raw 0.02 < 0.05 and rows[8].p_holm is None and rows[9].p_holm is None
    assert combined.verdict == "mixed"
    assert "2 binomial SE" in rows[7].reason and "29 of 29" in rows[5].reason


def test_a_missing_axis_is_not_testable_not_a_crash():
    df = grid_rows(BATCH, gap=lambda p: 0.1 + 0.001 * p["i"], **{"measure.hessian_max_eig": lambda p: 1.0 + p["i"]})
    t = evaluate_claims(df, n_boot=20)
    assert t.columns == CLAIM_COLUMNS
    assert set(t["claim"]) == {c.id for c in CLAIMS}
    r = one(t, "seong_schedules")
    assert r["verdict"] == "not testable" and r["reason"] == "not testable: needs axis lr_schedule"
    assert one(t, "wen_xor_bias")["reason"] == "not testable: needs runs with dataset = xor (the runs have digits)"
    assert one(t, "neyshabur_width")["verdict"] != "not testable"
    assert one(grid_rows(BATCH).pipe(evaluate_claims, ["neyshabur_width"], n_boot=20), "neyshabur_width")["reason"] \
        == "not testable: needs gap to vary within a group (it is constant within every group of runs that differ " \
           "only in width)"  # every run's gap is 0.1
    assert one(t, "zhang_random_labels", "all")["verdict"] == "not testable"
    assert one(t, "zhang_measures_see_labels")["reason"] == "not testable: needs axis label_noise"


def test_a_constant_column_is_not_testable_not_a_zero():
    # a study at one width: params and the VC bound are the same on every run, and a τ of 0
    # against the gap (interval [0, 0]) would otherwise read as "contradicted"
    df = grid_rows({"batch_size": [32, 64, 128], "width": [16, 32]},
                   gap=lambda p: p["width"] / 100 + 0.001 * p["seed"],
                   **{"measure.params": lambda p: 1000.0, "measure.vc_wl_log_w": lambda p: 5.0,
                      "measure.path_norm": lambda p: float(p["width"])})
    t = evaluate_claims(df, ["jiang_vc_inverse", "keskar_batch_gap", "jiang_endorsed"], n_boot=50)
    for prefix in ("τ(vc_wl_log_w", "τ(params"):
        r = one(t, "jiang_vc_inverse", prefix)
        assert r["verdict"] == "not testable" and "to vary" in r["reason"], r
    # ψ of a column constant within every group: the gap does not move with batch_size here
    r = one(t, "keskar_batch_gap")
    assert r["verdict"] == "not testable" and r["reason"].startswith("not testable: needs gap to vary within a group")
    # Ψ: path_norm moves with width only, so every batch_size group is constant; the width groups are not
    r = one(t, "jiang_endorsed", "Ψ(path_norm")
    assert r["verdict"] != "not testable" and "batch_size +0 [+0, +0] (constant)" in r["per_axis"]


def test_a_setting_fixed_in_one_study_is_read_from_its_config_when_stacked_with_an_axis():
    # two studies analysed together: label_noise is an axis of one (hp.label_noise) and a fixed
    # [data] setting of the other, whose rows hold hp.label_noise = null after stacking
    big = {"n_train": lambda p: 20_000, "measure.params": lambda p: 50_000.0}
    noisy = grid_rows({"label_noise": [0.0, 1.0], "width": [16, 32]}, **big,
                      **{"measure.pacbayes_optimized_bound": lambda p: 0.2 + 0.7 * p["label_noise"],
                         "config": lambda p: json.dumps({"data": {"binary": True}})})
    fixed = grid_rows({"width": [16, 32]}, **big, **{"measure.pacbayes_optimized_bound": lambda p: 0.3,
                                                      "config": lambda p: json.dumps({"data": {"label_noise": 0.0,
                                                                                               "binary": True}})})
    fixed = fixed.with_columns(pl.lit("other").alias("study"), ("o" + pl.col("run_id")).alias("run_id"))
    t = evaluate_claims(pl.concat([noisy, fixed], how="diagonal_relaxed"), ["dziugaite_nonvacuous"], n_boot=BOOTS)
    r = [x for x in t.iter_rows(named=True) if x["study"] == "other" and x["statistic"].startswith("median")]
    assert len(r) == 2 and r[0]["estimate"] == 0.3 and r[0]["verdict"] == "supported", r
    assert r[1]["reason"].startswith("not testable: needs runs with label_noise = 1")
    both = one(t.filter(pl.col("study") == "built"), "dziugaite_nonvacuous", "all")
    assert both["verdict"] == "supported"


def test_dziugaite_outside_the_regime_or_without_the_optimised_bound_is_not_testable():
    df = grid_rows({"label_noise": [0.0, 1.0]}, n_train=lambda p: 2000,
                   **{"measure.pacbayes_bound": lambda p: 0.3, "measure.params": lambda p: 5000.0})
    t = evaluate_claims(df, ["dziugaite_nonvacuous"], n_boot=20)
    r = one(t, "dziugaite_nonvacuous", "median pacbayes_optimized_bound, true")
    assert r["verdict"] == "not testable"
    assert "no run has ≥ 10,000 training examples, a binary task" in r["reason"]
    assert "needs measure pacbayes_optimized_bound (Jiang's unoptimised pacbayes_bound" in r["reason"]


def test_schedules_pair_each_non_monotonic_schedule_at_three_times_the_constant_rate():
    axes = {"lr_schedule": ["constant", "step", "cosine_restarts", "triangular"], "lr": [0.1, 0.3]}
    eig = {"constant": 10.0, "step": 12.0, "cosine_restarts": 5.0, "triangular": 20.0}
    df = grid_rows(axes, seeds=12, **{
        "measure.hessian_max_eig": lambda p: eig[p["lr_schedule"]] * p["lr"] * (1 + 0.01 * p["seed"]),
        "gap": lambda p: 0.1 if p["lr_schedule"] == "constant" else 0.05,
        "final_lr": lambda p: p["lr"] if p["lr_schedule"] == "constant" else p["lr"] / 10})
    t = evaluate_claims(df, ["seong_schedules"], n_boot=BOOTS)
    assert t.height == 2
    cos = one(t, "seong_schedules", "pair_lr_schedule(log hessian_max_eig), cosine")
    tri = one(t, "seong_schedules", "pair_lr_schedule(log hessian_max_eig), triangular")
    # only constant at 0.1 pairs with a schedule at 0.3: one pair per seed
    assert cos["estimate"] == pytest.approx(math.log(5 * 0.3 / (10 * 0.1))) and cos["n_groups"] == 12
    assert cos["n_runs"] == 24 and cos["verdict"] == "contradicted"  # 3× the rate, 1.5× the sharpness
    assert tri["estimate"] == pytest.approx(math.log(6.0)) and "at 3× the lr of constant" in tri["statistic"]
    assert "pair_lr_schedule(gap), cosine_restarts vs constant = -0.05" in cos["also"]
    assert "final_lr): constant median 0.1 (12 runs), cosine_restarts median 0.03 (12 runs)" in cos["also"]
    old = evaluate_claims(df.drop("final_lr"), ["seong_schedules"], n_boot=20)
    assert "learning rate at the stopping step (final_lr): not recorded" in old["also"][0]
    none = evaluate_claims(df.filter(pl.col("hp.lr") == 0.1), ["seong_schedules"], n_boot=20)
    assert none["reason"][0].startswith("not testable: needs runs at lr_schedule = cosine_restarts whose lr is 3 ×")


XOR = {"bias": [False, True], "width": [8, 16]}


def xor_rows(drop: float, **kw) -> pl.DataFrame:
    cfg = {"train": {"optimizer": "sam"}, "model_options": {"depth": 1}, "data": {"dim": 4}}
    df = grid_rows(XOR, seeds=6, test_acc=lambda p: 0.9 - drop * p["bias"] + 0.001 * p["seed"],
                   n_test=lambda p: 1000, config=lambda p: json.dumps(cfg),
                   **{"measure.hessian_trace": lambda p: 1.0 + p["bias"]}, **kw)
    return df.with_columns(dataset=pl.lit("xor"))


def test_wen_xor_bias_on_two_layer_sam_mlps_beyond_two_binomial_se():
    r = one(evaluate_claims(xor_rows(0.2), ["wen_xor_bias"], n_boot=BOOTS), "wen_xor_bias")
    assert r["verdict"] == "supported" and r["estimate"] == pytest.approx(-0.2)
    assert "pair_bias(hessian_trace) = +1" in r["also"] and "dim: 4" in r["also"]
    # 2 SE at the median accuracy (about 0.89) on 1,000 examples: 0.0198; a drop of 0.015 is within it
    small = one(evaluate_claims(xor_rows(0.015), ["wen_xor_bias"], n_boot=BOOTS), "wen_xor_bias")
    assert small["p_holm"] < 0.05 and small["verdict"] == "undecided" and "2 binomial SE" in small["reason"]
    sgd = xor_rows(0.2).with_columns(config=pl.lit(json.dumps({"train": {"optimizer": "sgd"},
                                                               "model_options": {"depth": 1}})))
    r = one(evaluate_claims(sgd, ["wen_xor_bias"], n_boot=20), "wen_xor_bias")
    assert r["reason"] == "not testable: needs runs with optimizer = sam (the runs have sgd)"
    nodim = xor_rows(0.2).with_columns(config=pl.lit(json.dumps({"train": {"optimizer": "sam"},
                                                                 "model_options": {"depth": 1}})))
    assert "dim: 2" in one(evaluate_claims(nodim, ["wen_xor_bias"], n_boot=20), "wen_xor_bias")["also"]


def test_plain_sgd_runs_only_and_settings_from_the_config():
    # SGD runs: the Hessian shrinks as η/B grows; Adam runs: the reverse. Only SGD may count.
    axes = {"lr": [0.1, 0.2], "batch_size": [32, 64], "optimizer": ["sgd", "adam"]}
    eig = lambda p: (1 if p["optimizer"] == "adam" else -1) * p["lr"] / p["batch_size"] + 5  # noqa: E731
    df = grid_rows(axes, seeds=6, **{"measure.lr_over_batch": lambda p: p["lr"] / p["batch_size"],
                                     "measure.hessian_max_eig": eig})
    r = one(evaluate_claims(df, ["jastrzebski_noise_width"], n_boot=BOOTS), "jastrzebski_noise_width")
    assert r["verdict"] == "supported" and r["n_runs"] == df.height // 2
    assert r["estimate"] == pytest.approx(-5 / 6)  # τ-a: 0.1/32 and 0.2/64 tie, one pair of six
    # the optimizer from the config when it is not an axis
    cfg = [json.dumps({"train": {"optimizer": o, "lr": 0.1}, "data": {"label_noise": 0.0}})
           for o in df["hp.optimizer"]]
    moved = df.drop("hp.optimizer").with_columns(config=pl.Series(cfg))
    assert setting(moved, "optimizer") == df["hp.optimizer"].to_list()
    assert setting(moved, "label_noise") == [0.0] * df.height and setting(moved, "bias") == [None] * df.height


@pytest.mark.parametrize("seeds, unfit, verdict", [(10, 4, "contradicted"), (2, 0, "undecided"),
                                                    (15, 0, "supported")])
def test_zhang_random_labels_share_by_its_exact_bound(seeds, unfit, verdict):
    axes = {"label_noise": [0.0, 1.0], "width": [16, 32]}
    df = grid_rows(axes, seeds=seeds, gap=lambda p: 0.1 + 0.8 * p["label_noise"] + 0.001 * p["seed"],
                   train_acc=lambda p: 0.5 if (p["label_noise"] == 1 and p["seed"] < unfit) else 1.0)
    df = df.with_columns(converged=pl.col("train_acc") > 0.99)  # the ones that did not fit stopped early
    t = evaluate_claims(df, ["zhang_random_labels"], n_boot=BOOTS)
    share = one(t, "zhang_random_labels", "share")
    n = 2 * seeds  # every label_noise = 1 run, converged or not
    assert share["n_runs"] == n and share["estimate"] == pytest.approx((n - 2 * unfit) / n)
    lo, hi = clopper_pearson(n - 2 * unfit, n)
    assert (share["ci_low"], share["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert share["verdict"] == verdict, share
    assert one(t, "zhang_random_labels", "ψ_label_noise")["verdict"] == "supported"
    assert one(t, "zhang_random_labels", "all")["verdict"] == verdict


def test_zhang_measures_see_labels_lists_without_verdicts_and_checks_the_instrument():
    axes = {"label_noise": [0.0, 0.5, 1.0], "width": [16, 32]}
    cols = {"gap": lambda p: 0.1 + 0.5 * p["label_noise"] + 0.001 * p["seed"],
            "measure.params": lambda p: float(p["width"] * 10),
            "measure.vc_wu": lambda p: float(p["width"]),
            "measure.sees": lambda p: p["label_noise"] + 0.01 * p["seed"],
            "measure.backwards": lambda p: -p["label_noise"]}
    t = evaluate_claims(grid_rows(axes, **cols), ["zhang_measures_see_labels"], n_boot=50)
    assert t["statistic"][0].startswith("instrument check") and t["verdict"][0] == "ok"
    assert t["p_holm"].null_count() == t.height  # outside the family
    assert [s.split("(")[1].split(",")[0] for s in t["statistic"][1:]] == ["sees", "backwards", "params", "vc_wu"]
    assert t["verdict"].to_list()[1:] == ["", "", "", ""] and t["estimate"][1] == 1 and t["estimate"][2] == -1
    assert "needs params to vary within a group" in t["reason"][3]
    # a data-independent measure that moves with the labels is a broken instrument
    cols["measure.params"] = lambda p: p["label_noise"] * 3
    bad = evaluate_claims(grid_rows(axes, **cols), ["zhang_measures_see_labels"], n_boot=50)
    assert bad["verdict"][0] == "broken" and "params" in bad["reason"][0]


def test_every_row_carries_its_study_icc():
    noisy = grid_rows(BATCH, gap=lambda p: 0.1 + 0.01 * ((p["seed"] * 7 + p["i"]) % 5),
                      **{"measure.keskar_sharpness_1e-3": lambda p: float(p["batch_size"])})
    t = evaluate_claims(noisy, ["keskar_batch_sharpness", "neyshabur_width"], n_boot=50)
    f = noise_floors(noisy).row(0, named=True)
    assert t["icc"].to_list() == [pytest.approx(f["icc"])] * t.height and f["icc"] < 0.5
    assert set(t["low_icc"]) == {True}


def test_reliability_shown_only_with_measure_sd():
    df = grid_rows(BATCH, **{"measure.keskar_sharpness_1e-3": lambda p: p["batch_size"] + p["seed"],
                             "measure_sd.keskar_sharpness_1e-3": lambda p: 30.0,
                             "measure_repeats": lambda p: json.dumps({"keskar_sharpness_1e-3": 4})})
    r = one(evaluate_claims(df, ["keskar_batch_sharpness"], n_boot=20), "keskar_batch_sharpness", "ψ_batch_size(batch_size, k")
    assert r["reliability"].startswith("keskar_sharpness_1e-3 0.9")
    r = one(evaluate_claims(df.drop("measure_sd.keskar_sharpness_1e-3"), ["keskar_batch_sharpness"], n_boot=20),
            "keskar_batch_sharpness", "ψ_batch_size(batch_size, k")
    assert r["reliability"] == ""


# ---------------------------------------------------------------- the command line


def synthetic_study(tmp_path):
    df = synthetic_runs(54, 4, n_axes=3, n_values=3, seed=2, failed_frac=0.05, study="tiny")
    df = df.rename({"measure.m00": "measure.keskar_sharpness_1e-3", "measure.m01": "measure.params"})
    path = tmp_path / "tiny"
    path.mkdir()
    df.write_parquet(path / "runs.parquet")
    return path, df


def test_unknown_claim_id_exits_2(tmp_path, capsys):
    path, _ = synthetic_study(tmp_path)
    code = main(["claims", str(path), "--claims", "keskar_batch_gap,nope"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: unknown claim id 'nope'; known: keskar_batch_sharpness, ") and err.count("\n") == 1
    assert main(["claims", str(path), "--out", str(tmp_path / "c.txt")]) == 2
    assert "error: --out" in capsys.readouterr().err


def test_mixed_settings_refused_unless_allowed(tmp_path, capsys):
    path, df = synthetic_study(tmp_path)
    mixed = df.with_columns(pl.Series("measure_cfg.keskar_sharpness_1e-3", ["a", "b"] * (df.height // 2)))
    mixed.write_parquet(path / "runs.parquet")
    assert main(["claims", str(path), "--claims", "keskar_sharpness_predicts", "--boots", "5"]) == 2
    assert "mixes settings" in capsys.readouterr().err
    assert main(["claims", str(path), "--claims", "keskar_sharpness_predicts", "--boots", "5", "--allow-mixed"]) == 0


def test_settings_must_agree_within_a_study_not_across_studies(tmp_path, capsys):
    """Each study is its own unit: two studies of one dataset measured under different settings
    (the claim studies: repeats = 2 in one, 1 in the other) are fine; one study mixing is not."""
    path, df = synthetic_study(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    cfg = "measure_cfg.keskar_sharpness_1e-3"
    df.with_columns(pl.lit("a").alias(cfg)).write_parquet(path / "runs.parquet")
    df.with_columns(pl.lit("b").alias(cfg), pl.lit("other").alias("study"),
                    ("o" + pl.col("run_id")).alias("run_id")).write_parquet(other / "runs.parquet")
    args = ["claims", str(path), str(other), "--claims", "keskar_sharpness_predicts", "--boots", "5"]
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    df.with_columns(pl.Series(cfg, ["a", "b"] * (df.height // 2)), pl.lit("other").alias("study"),
                    ("o" + pl.col("run_id")).alias("run_id")).write_parquet(other / "runs.parquet")
    assert main(args) == 2
    assert "error: study other: " in capsys.readouterr().err


def test_claims_smoke_on_a_tiny_study(tmp_path, capsys):
    path, df = synthetic_study(tmp_path)
    outs = [tmp_path / f"claims.{e}" for e in ("csv", "md", "html")]
    code = main(["claims", str(path), "--boots", "3000", *[a for o in outs for a in ("--out", str(o))]])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert stdout.startswith("noise floor of the outcome (gap):\n  tiny/synthetic: test set 10,000")
    assert "keskar_sharpness_predicts" in stdout and "supported" in stdout and f"wrote {outs[2]}" in stdout
    assert "Holm over" in stdout
    table = pl.read_csv(outs[0])
    assert table.columns == CLAIM_COLUMNS and set(table["study"]) == {"tiny"}
    assert set(table["verdict"].drop_nulls()) <= {"supported", "mixed", "contradicted", "undecided", "not testable",
                                                  "ok", "broken"}
    r = one(table, "keskar_sharpness_predicts", "τ")
    assert r["verdict"] == "supported" and r["n_runs"] == df.filter(pl.col("status") == "ok").height
    assert r["p"] < 0.001 and r["p_holm"] < 0.05
    md = outs[1].read_text(encoding="utf-8")
    assert md.startswith("| claim | study |") and md.count("\n") == table.height + 2 + 3 + 3
    assert "## Noise floor of the outcome" in md
    text = outs[2].read_text(encoding="utf-8")
    page = Page(text)
    assert "script" not in page.tags and "link" not in page.tags and not page.urls
    assert text.count('<td class="v supported">supported</td>') == (table["verdict"] == "supported").sum()
    assert 'class="v not-testable"' in text and ".supported{background" in text and ".mixed{background" in text
    assert '<h2 id="noise">Noise floor of the outcome</h2>' in text


@needs_chromium
def test_claims_page_in_chromium(tmp_path, capsys):
    path, _ = synthetic_study(tmp_path)
    out, csv = tmp_path / "claims.html", tmp_path / "claims.csv"
    assert main(["claims", str(path), "--boots", "20", "--out", str(out), "--out", str(csv)]) == 0
    capsys.readouterr()
    result, console = probe(out, tmp_path)
    assert result["errors"] == [] and console == []
    dom = chromium("--dump-dom", out.as_uri(), tmp=tmp_path).stdout  # the page as Chromium built it
    assert '<table class="claims">' in dom and '<table class="noise">' in dom
    n = pl.read_csv(csv).height
    kinds = "supported|mixed|contradicted|undecided|not-testable|ok|broken|listed"
    assert len(re.findall(rf'<td class="v ({kinds})">', dom)) == n


def test_analysis_claims_imports_neither_torch_nor_ray():
    import subprocess
    import sys
    code = "import sys, analysis.claims, analysis.cli; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
