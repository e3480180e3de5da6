"""The claims of CLAIMS.md: the statistics against plain loops, the verdicts on rows built to
give each one, bad input, the command line and the HTML page in headless Chromium."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.claims import CLAIM_COLUMNS, CLAIMS, evaluate_claims, setting
from analysis.cli import main
from analysis.stats import claims_stats as cs
from analysis.stats.bootstrap import resample_counts
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
    got, want = cs.Psi(a, b, ax, keys, n_boot=3).estimate, ref_Psi(a, b, ax, keys)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)


@given(tables(), st.integers(0, 2), st.integers(0, 2))
@settings(**SETTINGS)
def test_pair_is_the_median_of_the_plain_loop(t, p, q):
    x, _, ax, keys, free = t
    axis = free[0]
    e = cs.pair(x, ax[:, axis].tolist(), p, q, ax, axis, keys, n_boot=3)
    d = ref_pair(x, ax, keys, axis, p, q) if p != q else []
    if p == q:
        return
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
    assert (e1.lo, e1.hi) == tuple(np.quantile(want, [0.025, 0.975]))
    # a group's runs move together: every group orders perfectly, so does every replicate
    # (resampling runs would tie copies of a run and pull τ-a below 1)
    perfect = cs.psi(a, a * 2, ax, [0], keys, n_boot=100, seed=1)
    assert perfect.estimate == 1 and set(perfect.reps) == {1.0}
    # pair: the median of the resampled groups' differences
    x = rng.normal(size=len(a))
    pe = cs.pair(x, ax[:, 0].tolist(), 0, 3, ax, 0, keys, n_boot=100, seed=2)
    d = np.array([x[(ax[:, 1] == g) & (ax[:, 0] == 3)][0] - x[(ax[:, 1] == g) & (ax[:, 0] == 0)][0] for g in range(9)])
    assert np.allclose(pe.reps, [np.median(np.repeat(d, c)) for c in resample_counts(9, 100, 2)])
    # τ resamples runs: its replicates are τ with multiplicities
    te = cs.tau(a, b, n_boot=50, seed=4)
    assert np.array_equal(te.reps, cs.tau(a, b, n_boot=50, seed=4).reps)
    c0 = next(iter(resample_counts(len(a), 1, 4)))
    ra, rb = np.repeat(a, c0), np.repeat(b, c0)
    assert te.reps[0] == pytest.approx(ref_tau(ra.tolist(), rb.tolist()))


def test_Psi_difference_is_paired():
    rng = np.random.default_rng(0)
    a, b, ax, keys = _grid(6, 3, rng)
    ests, diff = cs.psi_all([b, b], a, ax, keys, n_boot=100, seed=0)
    assert diff.estimate == 0 and set(diff.reps) == {0.0}  # the same draws for both
    assert ests[0].estimate == pytest.approx(ref_Psi(b, a, ax, keys))


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


@pytest.mark.parametrize("slope, verdict", [(1, "supported"), (-1, "contradicted"), (0, "undecided")])
def test_each_verdict_on_built_rows(slope, verdict):
    def sharp(p):
        s = slope if slope else (1 if (p["seed"] + p["width"] // 16) % 2 else -1)  # half the groups each way
        return s * p["batch_size"] + 0.001 * p["seed"]

    df = grid_rows(BATCH, **{"measure.keskar_sharpness_1e-3": sharp})
    t = evaluate_claims(df, ["keskar_batch_sharpness"], n_boot=200)
    r = one(t, "keskar_batch_sharpness", "ψ_batch_size(batch_size, keskar")
    assert r["verdict"] == verdict, r
    assert r["n_runs"] == df.height and r["n_groups"] == 6
    assert r["estimate"] == pytest.approx(float(slope))
    # the same statistic with hessian_max_eig is another row, not testable here
    h = one(t, "keskar_batch_sharpness", "ψ_batch_size(batch_size, hessian_max_eig)")
    assert h["verdict"] == "not testable" and h["reason"] == "not testable: needs measure hessian_max_eig"


def test_a_missing_axis_is_not_testable_not_a_crash():
    df = grid_rows(BATCH, **{"measure.hessian_max_eig": lambda p: 1.0 + p["i"]})
    t = evaluate_claims(df, n_boot=20)
    assert t.columns == CLAIM_COLUMNS
    assert set(t["claim"]) == {c.id for c in CLAIMS}
    r = one(t, "seong_schedules")
    assert r["verdict"] == "not testable" and r["reason"] == "not testable: needs axis lr_schedule"
    assert one(t, "wen_xor_bias")["reason"] == "not testable: needs runs with dataset = xor"
    assert one(t, "neyshabur_width")["verdict"] != "not testable"
    assert one(t, "zhang_random_labels", "all")["verdict"] == "not testable"


def test_a_constant_column_is_not_testable_not_a_zero_tau():
    # a study at one width: params and the VC bound are the same on every run, and a τ of 0
    # against the gap (interval [0, 0]) would otherwise read as "contradicted"
    df = grid_rows({"batch_size": [32, 64, 128]}, **{"measure.params": lambda p: 1000.0,
                                                     "measure.vc_wl_log_w": lambda p: 5.0})
    t = evaluate_claims(df, ["jiang_vc_inverse"], n_boot=50)
    for prefix in ("τ(vc_wl_log_w", "τ(params"):
        r = one(t, "jiang_vc_inverse", prefix)
        assert r["verdict"] == "not testable" and "to vary" in r["reason"], r


def test_a_setting_fixed_in_one_study_is_read_from_its_config_when_stacked_with_an_axis():
    # two studies analysed together: label_noise is an axis of one (hp.label_noise) and a fixed
    # [data] setting of the other, whose rows hold hp.label_noise = null after stacking
    noisy = grid_rows({"label_noise": [0.0, 1.0], "width": [16, 32]},
                      **{"measure.pacbayes_bound": lambda p: 0.5 + p["label_noise"]})
    fixed = grid_rows({"width": [16, 32]}, **{"measure.pacbayes_bound": lambda p: 2.0,
                                             "config": lambda p: json.dumps({"data": {"label_noise": 0.0}})})
    fixed = fixed.with_columns(pl.lit("other").alias("study"), ("o" + pl.col("run_id")).alias("run_id"))
    t = evaluate_claims(pl.concat([noisy, fixed], how="diagonal_relaxed"), ["dziugaite_nonvacuous"], n_boot=50)
    r = [x for x in t.iter_rows(named=True) if x["study"] == "other" and x["statistic"].startswith("median")]
    assert len(r) == 1 and r[0]["verdict"] == "contradicted" and r[0]["estimate"] == 2.0, r


def test_schedules_one_row_per_non_monotonic_schedule():
    axes = {"lr_schedule": ["constant", "step", "cosine_restarts", "triangular"], "lr": [0.1, 0.05]}
    eig = {"constant": 10.0, "step": 12.0, "cosine_restarts": 5.0, "triangular": 20.0}
    df = grid_rows(axes, **{"measure.hessian_max_eig": lambda p: eig[p["lr_schedule"]] * (1 + 0.01 * p["seed"]),
                            "gap": lambda p: 0.1 if p["lr_schedule"] == "constant" else 0.05})
    t = evaluate_claims(df, ["seong_schedules"], n_boot=100)
    assert t.height == 2
    cos, tri = one(t, "seong_schedules", "pair_lr_schedule(log hessian_max_eig), cosine"), \
        one(t, "seong_schedules", "pair_lr_schedule(log hessian_max_eig), triangular")
    assert cos["verdict"] == "supported" and cos["estimate"] == pytest.approx(math.log(5 / 10))
    assert tri["verdict"] == "contradicted" and cos["n_groups"] == 6 and cos["n_runs"] == 12
    assert "pair_lr_schedule(gap), cosine_restarts vs constant = -0.05" in cos["also"]


def test_wen_xor_bias_on_the_xor_mlp_runs():
    df = grid_rows({"bias": [False, True], "width": [8, 16]}, **{
        "test_acc": lambda p: 0.6 if p["bias"] else 0.99, "measure.hessian_max_eig": lambda p: 1.0 + p["bias"]})
    df = df.with_columns(dataset=pl.lit("xor"))
    r = one(evaluate_claims(df, ["wen_xor_bias"], n_boot=50), "wen_xor_bias")
    assert r["verdict"] == "supported" and r["estimate"] == pytest.approx(-0.39)
    assert "pair_bias(hessian_max_eig) = +1" in r["also"] and "depths: unknown" in r["also"]


def test_plain_sgd_runs_only_and_settings_from_the_config():
    # SGD runs: the Hessian shrinks as η/B grows; Adam runs: the reverse. Only SGD may count.
    axes = {"lr": [0.1, 0.2], "batch_size": [32, 64], "optimizer": ["sgd", "adam"]}
    eig = lambda p: (1 if p["optimizer"] == "adam" else -1) * p["lr"] / p["batch_size"] + 5  # noqa: E731
    df = grid_rows(axes, **{"measure.lr_over_batch": lambda p: p["lr"] / p["batch_size"],
                            "measure.hessian_max_eig": eig})
    r = one(evaluate_claims(df, ["jastrzebski_noise_width"], n_boot=50), "jastrzebski_noise_width")
    assert r["verdict"] == "supported" and r["n_runs"] == df.height // 2
    assert r["estimate"] == pytest.approx(-5 / 6)  # τ-a: 0.1/32 and 0.2/64 tie, one pair of six
    # the optimizer from the config when it is not an axis
    cfg = [json.dumps({"train": {"optimizer": o, "lr": 0.1}, "data": {"label_noise": 0.0}})
           for o in df["hp.optimizer"]]
    moved = df.drop("hp.optimizer").with_columns(config=pl.Series(cfg))
    assert setting(moved, "optimizer") == df["hp.optimizer"].to_list()
    assert setting(moved, "label_noise") == [0.0] * df.height and setting(moved, "bias") == [None] * df.height


def test_zhang_random_labels_counts_unconverged_runs_and_combines():
    axes = {"label_noise": [0.0, 1.0], "width": [16, 32]}
    df = grid_rows(axes, seeds=10, gap=lambda p: 0.1 + 0.8 * p["label_noise"],
                   train_acc=lambda p: 0.5 if (p["label_noise"] == 1 and p["seed"] < 4) else 1.0)
    df = df.with_columns(converged=pl.col("train_acc") > 0.99)  # the ones that did not fit stopped early
    t = evaluate_claims(df, ["zhang_random_labels"], n_boot=200)
    share = one(t, "zhang_random_labels", "share")
    assert share["estimate"] == pytest.approx(0.6) and share["n_runs"] == 20  # 12 of 20, not 12 of 12
    assert share["verdict"] == "contradicted"
    assert one(t, "zhang_random_labels", "ψ_label_noise")["verdict"] == "supported"
    assert one(t, "zhang_random_labels", "all")["verdict"] == "contradicted"


def test_zhang_measures_see_labels_checks_the_instrument():
    axes = {"label_noise": [0.0, 0.5, 1.0], "width": [16, 32]}
    cols = {"gap": lambda p: 0.1 + 0.5 * p["label_noise"] + 0.001 * p["seed"],
            "measure.params": lambda p: float(p["width"] * 10),
            "measure.vc_wu": lambda p: float(p["width"]),
            "measure.sees": lambda p: p["label_noise"] + 0.01 * p["seed"],
            "measure.backwards": lambda p: -p["label_noise"]}
    t = evaluate_claims(grid_rows(axes, **cols), ["zhang_measures_see_labels"], n_boot=50)
    assert t["statistic"][0].startswith("instrument check") and t["verdict"][0] == "supported"
    assert [s.split("(")[1].split(",")[0] for s in t["statistic"][1:]] == ["sees", "params", "vc_wu", "backwards"]
    assert t["verdict"].to_list()[1:] == ["supported", "contradicted", "contradicted", "contradicted"]
    # a data-independent measure that moves with the labels is a broken instrument
    cols["measure.params"] = lambda p: p["label_noise"] * 3
    bad = evaluate_claims(grid_rows(axes, **cols), ["zhang_measures_see_labels"], n_boot=50)
    assert bad["verdict"][0] == "contradicted" and "params" in bad["reason"][0]


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


def test_claims_smoke_on_a_tiny_study(tmp_path, capsys):
    path, df = synthetic_study(tmp_path)
    outs = [tmp_path / f"claims.{e}" for e in ("csv", "md", "html")]
    code = main(["claims", str(path), "--boots", "50", *[a for o in outs for a in ("--out", str(o))]])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "keskar_sharpness_predicts" in stdout and "supported" in stdout and f"wrote {outs[2]}" in stdout
    table = pl.read_csv(outs[0])
    assert table.columns == CLAIM_COLUMNS and set(table["study"]) == {"tiny"}
    assert set(table["verdict"]) <= {"supported", "contradicted", "undecided", "not testable"}
    r = one(table, "keskar_sharpness_predicts", "τ")
    assert r["verdict"] == "supported" and r["n_runs"] == df.filter(pl.col("status") == "ok").height
    md = outs[1].read_text(encoding="utf-8")
    assert md.startswith("| claim | study |") and md.count("\n") == table.height + 2
    text = outs[2].read_text(encoding="utf-8")
    page = Page(text)
    assert "script" not in page.tags and "link" not in page.tags and not page.urls
    assert text.count('<td class="v supported">supported</td>') == (table["verdict"] == "supported").sum()
    assert 'class="v not-testable"' in text and ".supported{background" in text


@needs_chromium
def test_claims_page_in_chromium(tmp_path, capsys):
    path, _ = synthetic_study(tmp_path)
    out, csv = tmp_path / "claims.html", tmp_path / "claims.csv"
    assert main(["claims", str(path), "--boots", "20", "--out", str(out), "--out", str(csv)]) == 0
    capsys.readouterr()
    result, console = probe(out, tmp_path)
    assert result["errors"] == [] and console == []
    dom = chromium("--dump-dom", out.as_uri(), tmp=tmp_path).stdout  # the page as Chromium built it
    assert '<table class="claims">' in dom
    n = pl.read_csv(csv).height
    assert len(re.findall(r'<td class="v (supported|contradicted|undecided|not-testable)">', dom)) == n


def test_analysis_claims_imports_neither_torch_nor_ray():
    import subprocess
    import sys
    code = "import sys, analysis.claims, analysis.cli; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
