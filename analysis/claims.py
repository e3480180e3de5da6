"""The seed's claims as tests (CLAIMS.md): a registry of the 18 claims and their evaluation.

`evaluate_claims` gives one row per (claim, study, dataset, statistic) with the columns of
`CLAIM_COLUMNS`:

- ``claim``, ``study``, ``dataset``, ``statistic`` (what was computed, as CLAIMS.md writes
  it), ``supported_when`` (the claimed side, e.g. ``> 0``);
- ``estimate``, ``ci_low``, ``ci_high``: the statistic and its 95 % percentile bootstrap
  interval (:mod:`analysis.stats.claims_stats`: runs resampled for τ, medians and shares,
  whole groups for ψ, Ψ and pair);
- ``verdict``: ``supported`` when the interval lies entirely on the claimed side,
  ``contradicted`` when it lies entirely on the other side (the complement: ``≤ 0`` for
  ``> 0``), ``undecided`` otherwise (and when there is no interval), ``not testable`` when the
  study lacks an axis, a measure or runs the claim needs (``reason`` says which);
- ``n_runs``, ``n_groups`` (null for run-level statistics), ``reliability`` (the test–retest
  reliability of the stored values of each measure used, :mod:`analysis.stats.reliability`,
  where the rows carry ``measure_sd.*``; empty otherwise), ``reason``, ``also`` (the
  "also print" figures of CLAIMS.md, as text).

Choices where CLAIMS.md leaves room (README, "Testing the claims"):

- A study is the ``study`` column (or the name given by the caller); a study with several
  datasets is tested per dataset (like ``rank``). The axes are the ``hp.*`` columns; a
  statistic's axes must take two or more values in its rows, else it is not testable.
  Groups also agree on the seed.
- A setting (``lr``, ``batch_size``, ``optimizer``, ``label_noise``, …) is the ``hp.<name>``
  column where there is one, else the plain column (``dataset``, ``model``), else the value
  in the row's ``config`` JSON (sections ``train``, ``data``, ``model_options``).
- Claims whose "supported when" is a conjunction (``zhang_random_labels``,
  ``dziugaite_nonvacuous``) get a row per part and a row ``all of the above``: contradicted
  when any part is, else not testable when a part is not testable, supported when every
  part is, undecided otherwise.
- Mixed settings: like ``rank``, a measure column whose rows mix settings hashes is refused
  (:func:`analysis.load.check_settings`) unless ``allow_mixed``, but only the measures the
  selected claims read are checked.
- ``zhang_random_labels``: the share is over every stored row of the study with
  ``label_noise = 1`` that did not fail (``status != failed``), converged or not: a run that
  could not fit the random labels is exactly what the share counts, and the population
  (converged runs only) would leave it out. A missing ``train_acc`` counts as not fitted.
- ``zhang_measures_see_labels``: a row ``instrument check`` (supported when ψ_label_noise of
  ``params``, ``vc_wl_log_w`` and ``vc_wu`` (those present) are exactly 0, with an interval of
  exactly [0, 0]; contradicted otherwise), then one row per measure sorted by ψ, highest
  first, each with the verdict of ``ψ > 0`` (the measure orders random-label networks as
  generalizing worse).
- ``seong_schedules``: one row per non-monotonic schedule present
  (`NON_MONOTONIC_SCHEDULES`) against ``constant``.
- ``wen_xor_bias``: the runs of ``model = mlp`` on ``dataset = xor``, whatever their depth
  (the depths are printed in ``also``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from study.schema import hp_col, is_hp, measure_col, name_of, sd_col

from .load import RunsError, check_settings, measure_columns, population
from .stats import claims_stats as cs
from .table import codes, reliability_of

NON_MONOTONIC_SCHEDULES = ("cosine_restarts", "triangular", "triangular2", "cyclic", "sgdr")
CONSTANT_SCHEDULE = "constant"
INSTRUMENT = ("params", "vc_wl_log_w", "vc_wu")
OUTCOME_COLS = ("gap", "test_acc", "train_acc")
SETTINGS = ("lr", "batch_size", "width", "depth", "label_noise", "train_size", "optimizer", "bias",
            "lr_schedule", "weight_decay", "dataset", "model")

CLAIM_COLUMNS = ["claim", "study", "dataset", "statistic", "supported_when", "estimate", "ci_low", "ci_high",
                 "verdict", "n_runs", "n_groups", "reliability", "reason", "also"]
VERDICTS = ("supported", "contradicted", "undecided", "not testable")


# ------------------------------------------------------------ the registry


@dataclass(frozen=True)
class Stat:
    """One statistic of a claim.

    ``kind``: ``tau`` (a, b), ``psi`` (a, b over axes), ``Psi`` (a, b), ``Psi_diff``
    (Ψ(a, b) − Ψ(a2, b)), ``pair`` (x = a over the two-valued axis ``axes[0]``, p → q),
    ``median`` (of a), ``share`` (of ``a ≥ threshold_value``), ``max`` (of a, no interval).
    Quantities: an outcome (``gap``…), a setting (``batch_size``…), a measure name, or a
    derived quantity of `DERIVED`. ``where``: row filters (setting, value). ``side``/``threshold``:
    the claimed side; None for a figure printed in ``also``.
    """

    label: str
    kind: str
    a: str
    b: str = ""
    a2: str = ""
    axes: tuple[str, ...] = ()
    p: object = None
    q: object = None
    where: tuple[tuple[str, object], ...] = ()
    side: str | None = ">"
    threshold: float = 0.0
    cut: float = 0.0  # share: the value a run must reach
    all_rows: bool = False  # share: every non-failed row, not only the population


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    statement: str
    stats: tuple[Stat, ...]
    also: tuple[Stat, ...] = ()
    where: tuple[tuple[str, object], ...] = ()
    needs_any_axis: tuple[str, ...] = ()
    conjunction: bool = False
    per_measure: bool = False  # zhang_measures_see_labels


SGD = (("optimizer", "sgd"),)


def _psi1(axis: str, a: str, b: str, side: str, **kw) -> Stat:
    return Stat(f"ψ_{axis}({a}, {b})", "psi", a, b, axes=(axis,), side=side, **kw)


CLAIMS: tuple[Claim, ...] = (
    Claim("keskar_batch_sharpness", "Keskar et al. 2017", "large batches converge to sharper minima",
          (_psi1("batch_size", "batch_size", "keskar_sharpness_1e-3", ">"),
           _psi1("batch_size", "batch_size", "hessian_max_eig", ">"))),
    Claim("keskar_batch_gap", "Keskar et al. 2017", "large batches generalize worse",
          (_psi1("batch_size", "batch_size", "gap", ">"),)),
    Claim("keskar_sharpness_predicts", "Keskar et al. 2017; Jiang et al. 2020",
          "ζ(w; ε) orders networks by their gap",
          (Stat("Ψ(keskar_sharpness_1e-3, gap)", "Psi", "keskar_sharpness_1e-3", "gap"),
           Stat("τ(keskar_sharpness_1e-3, gap)", "tau", "keskar_sharpness_1e-3", "gap"))),
    Claim("jiang_endorsed", "Jiang et al. 2020", "gradient variance, the magnitude-aware PAC-Bayes flatness "
          "and the path norm predict generalization",
          tuple(Stat(f"Ψ({m}, gap)", "Psi", m, "gap") for m in ("grad_variance", "pacbayes_mag_flatness",
                                                                "path_norm"))),
    Claim("jiang_vc_inverse", "Jiang et al. 2020", "the VC dimension is inversely correlated with generalization",
          (Stat("τ(vc_wl_log_w, gap)", "tau", "vc_wl_log_w", "gap", side="<"),
           Stat("τ(params, gap)", "tau", "params", "gap", side="<"))),
    Claim("chaudhari_flat_spectrum", "Chaudhari et al. 2019",
          "minima that generalize well have more Hessian eigenvalues near zero",
          (Stat("τ(hessian_near_zero_frac, gap)", "tau", "hessian_near_zero_frac", "gap", side="<"),)),
    Claim("jastrzebski_noise_width", "Jastrzebski et al. 2018",
          'a higher η/B ("stochastic noise") finds wider minima',
          (Stat("ψ_{lr,batch_size}(lr_over_batch, hessian_max_eig), plain SGD runs", "psi", "lr_over_batch",
                "hessian_max_eig", axes=("lr", "batch_size"), where=SGD, side="<"),)),
    Claim("wu_stability", "Wu et al. 2023",
          "SGD escapes minima whose Hessian Frobenius norm is large for its η and B",
          (Stat("ψ_{lr,batch_size}(lr/√batch_size, hessian_fro), plain SGD runs", "psi", "lr/√batch_size",
                "hessian_fro", axes=("lr", "batch_size"), where=SGD, side="<"),),
          also=(Stat("largest lr·hessian_fro/√batch_size (plain SGD runs)", "max", "lr·hessian_fro/√batch_size",
                     where=SGD, side=None),)),
    Claim("wu_fisher_tracks_hessian", "Wu et al. 2023; Kunstner et al. 2019",
          "at low loss the empirical Fisher approximates the Hessian",
          (Stat("τ(fisher_fro, hessian_fro)", "tau", "fisher_fro", "hessian_fro", threshold=0.5),),
          also=(Stat("median fisher_trace / hessian_trace", "median", "fisher_trace/hessian_trace", side=None),)),
    Claim("seong_schedules", "Seong et al. 2018",
          "non-monotonic, large learning-rate schedules reach flatter minima",
          (Stat("pair_lr_schedule(log hessian_max_eig)", "pair", "log hessian_max_eig", axes=("lr_schedule",),
                p=CONSTANT_SCHEDULE, q=NON_MONOTONIC_SCHEDULES, side="<"),),
          also=(Stat("pair_lr_schedule(gap)", "pair", "gap", axes=("lr_schedule",), p=CONSTANT_SCHEDULE,
                     q=NON_MONOTONIC_SCHEDULES, side=None),)),
    Claim("neyshabur_width", "Neyshabur et al. 2015", "more hidden units, same training error, smaller test error",
          (_psi1("width", "width", "gap", "<"),)),
    Claim("neyshabur_sharpness_norm", "Neyshabur et al. 2017",
          "sharpness alone does not capture generalization; combined with the norm (PAC-Bayes) it does",
          (Stat("Ψ(pacbayes_init, gap) − Ψ(expected_sharpness, gap)", "Psi_diff", "pacbayes_init", "gap",
                a2="expected_sharpness"),),
          needs_any_axis=("train_size", "label_noise")),
    Claim("li_filter_sharpness", "Li et al. 2018",
          "the sharpness of filter-normalised loss slices correlates with the generalization error",
          (Stat("τ(filter_sharpness, gap)", "tau", "filter_sharpness", "gap"),)),
    Claim("zhang_random_labels", "Zhang et al. 2017/2021",
          "the same architecture fits random labels to zero training error",
          (Stat("share with train_acc ≥ 0.99, label_noise = 1 (every run that did not fail)", "share", "train_acc",
                where=(("label_noise", 1.0),), side=">=", threshold=0.9, cut=0.99, all_rows=True),
           _psi1("label_noise", "label_noise", "gap", ">")),
          conjunction=True),
    Claim("zhang_measures_see_labels", "Zhang et al. 2017/2021",
          "a measure must see the labels: data-independent measures cannot order true- vs random-label networks",
          (), per_measure=True),
    Claim("wen_xor_bias", "Wen et al. 2023", "adding a bias to a 2-layer MLP makes generalization impossible on XOR",
          (Stat("pair_bias(test_acc), false → true", "pair", "test_acc", axes=("bias",), p=False, q=True,
                side="<"),),
          also=(Stat("pair_bias(hessian_max_eig)", "pair", "hessian_max_eig", axes=("bias",), p=False, q=True,
                     side=None),),
          where=(("dataset", "xor"), ("model", "mlp"))),
    Claim("hardt_train_faster", "Hardt et al. 2016", "training faster (smaller Σηₜ) generalizes better",
          (Stat("τ(step_size_sum, gap)", "tau", "step_size_sum", "gap"),)),
    Claim("dziugaite_nonvacuous", "Dziugaite & Roy 2017",
          "PAC-Bayes bounds can be non-vacuous for over-parameterised networks",
          (Stat("median pacbayes_bound, true-label runs", "median", "pacbayes_bound", where=(("label_noise", 0.0),),
                side="<", threshold=1.0),
           _psi1("label_noise", "label_noise", "pacbayes_bound", ">")),
          conjunction=True),
)

BY_ID = {c.id: c for c in CLAIMS}


def select_claims(ids: list[str] | None) -> list[Claim]:
    """The claims named (all when None); an unknown id raises RunsError naming the known ones."""
    if not ids:
        return list(CLAIMS)
    for i in ids:
        if i not in BY_ID:
            raise RunsError(f"unknown claim id {i!r}; known: {', '.join(BY_ID)}")
    return [BY_ID[i] for i in ids]


# ------------------------------------------------------------ quantities and settings


class NotTestable(Exception):
    """The statistic cannot be computed on these rows; the message says what it needs."""


def setting(df: pl.DataFrame, name: str) -> list:
    """Each row's value of the setting ``name`` (module docstring), None where unknown. The
    ``hp.<name>`` column first, then the row's config where that is null (studies stacked
    together: one study's axis is another's fixed setting)."""
    if name in df.columns and name in ("dataset", "model", "study"):
        return df[name].to_list()
    hp = df[hp_col(name)].to_list() if hp_col(name) in df.columns else [None] * df.height
    if "config" not in df.columns or all(v is not None for v in hp):
        return hp
    out = []
    for given, text in zip(hp, df["config"].to_list()):  # a JSON string, or a struct (load.decode)
        if given is not None:
            out.append(given)
            continue
        v = None
        try:
            cfg = text if isinstance(text, dict) else json.loads(text) if text else {}
        except (TypeError, ValueError):
            cfg = {}
        for sec in ("train", "data", "model_options", "hp"):
            # a struct holds every row's keys, null where this row lacks one
            if isinstance(cfg.get(sec), dict) and cfg[sec].get(name) is not None:
                v = cfg[sec][name]
                break
        out.append(v)
    return out


def _num(vals: list) -> np.ndarray:
    out = np.full(len(vals), np.nan)
    for i, v in enumerate(vals):
        if isinstance(v, (bool, int, float, np.integer, np.floating)) and v is not None:
            out[i] = float(v)
    return out


def _measure(df: pl.DataFrame, name: str) -> np.ndarray:
    col = measure_col(name)
    if col not in df.columns:
        raise NotTestable(f"needs measure {name}")
    x = df[col].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
    if not np.isfinite(x).any():
        raise NotTestable(f"needs measure {name} (no finite value)")
    return x


def _setting_num(df: pl.DataFrame, name: str) -> np.ndarray:
    x = _num(setting(df, name))
    if not np.isfinite(x).any():
        raise NotTestable(f"needs the setting {name} of the runs")
    return x


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


DERIVED = {
    "lr/√batch_size": lambda df: _setting_num(df, "lr") / np.sqrt(_setting_num(df, "batch_size")),
    "lr·hessian_fro/√batch_size": lambda df: (_setting_num(df, "lr") * _measure(df, "hessian_fro")
                                              / np.sqrt(_setting_num(df, "batch_size"))),
    "fisher_trace/hessian_trace": lambda df: _ratio(_measure(df, "fisher_trace"), _measure(df, "hessian_trace")),
    "log hessian_max_eig": lambda df: _log(_measure(df, "hessian_max_eig")),
}


def quantity(df: pl.DataFrame, name: str) -> np.ndarray:
    """The values of ``name`` on each row as float64 (NaN where undefined)."""
    if name in DERIVED:
        return DERIVED[name](df)
    if name in OUTCOME_COLS:
        if name not in df.columns:
            raise NotTestable(f"needs the outcome {name}")
        return df[name].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
    if name in SETTINGS:
        return _setting_num(df, name)
    return _measure(df, name)


def measures_of(name: str) -> list[str]:
    """The measure names a quantity reads."""
    if name in OUTCOME_COLS or name in SETTINGS:
        return []
    return {"lr/√batch_size": [], "lr·hessian_fro/√batch_size": ["hessian_fro"],
            "fisher_trace/hessian_trace": ["fisher_trace", "hessian_trace"],
            "log hessian_max_eig": ["hessian_max_eig"]}.get(name, [name])


def _same(v, want) -> bool:
    if v is None:
        return False
    if isinstance(want, str) or isinstance(v, str):
        return str(v).lower() == str(want).lower()
    try:
        return math.isclose(float(v), float(want), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def _filter(df: pl.DataFrame, where) -> pl.DataFrame:
    for name, want in where:
        vals = setting(df, name)
        if all(v is None for v in vals):
            raise NotTestable(f"needs the setting {name} of the runs")
        keep = pl.Series([_same(v, want) for v in vals], dtype=pl.Boolean)
        if not keep.any():
            raise NotTestable(f"needs runs with {name} = {str(want).lower() if isinstance(want, bool) else want}")
        df = df.filter(keep)
    return df


def _axis_cols(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if is_hp(c)]


def _codes(df: pl.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Axis codes ``(n, K)``, axis names, key codes ``(n, E)`` (seed)."""
    axes = _axis_cols(df)
    ax = np.column_stack([codes(df[c]) for c in axes]) if axes else np.zeros((df.height, 0), np.int64)
    keys = np.column_stack([codes(df["seed"])]) if "seed" in df.columns else np.zeros((df.height, 0), np.int64)
    return ax, [name_of(c) for c in axes], keys


def _varies(df: pl.DataFrame, axis: str) -> bool:
    return hp_col(axis) in df.columns and df[hp_col(axis)].n_unique() >= 2


def _need_axes(df: pl.DataFrame, axes) -> None:
    for a in axes:
        if not _varies(df, a):
            raise NotTestable(f"needs axis {a}")


# ------------------------------------------------------------ evaluation


@dataclass
class Row:
    claim: str
    study: str
    dataset: str
    statistic: str
    supported_when: str = ""
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: str = "not testable"
    n_runs: int | None = None
    n_groups: int | None = None
    reliability: str = ""
    reason: str = ""
    also: str = ""
    extra: dict = field(default_factory=dict)


def _side_text(s: Stat) -> str:
    return f"{'≥' if s.side == '>=' else s.side} {s.threshold:g}" if s.side else ""


def verdict_of(side: str, threshold: float, lo: float, hi: float) -> tuple[str, str]:
    """(verdict, reason) of an interval against the claimed side (module docstring)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undecided", "no bootstrap interval"
    t = threshold
    on = {">": lo > t, ">=": lo >= t, "<": hi < t, "<=": hi <= t}[side]
    off = {">": hi <= t, ">=": hi < t, "<": lo >= t, "<=": lo > t}[side]
    if on:
        return "supported", f"95 % CI entirely {_side_text(Stat('', '', '', side=side, threshold=t))}"
    if off:
        return "contradicted", "95 % CI entirely on the other side"
    return "undecided", f"95 % CI contains {t:g}"


def _fmt(v: float | None, sign: bool = True) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:+.3g}" if sign else f"{v:.3g}"


def _compute(stat: Stat, df: pl.DataFrame, rows_all: pl.DataFrame, opts: dict, q=None) -> cs.Estimate:
    """The statistic on the rows ``df`` of one study/dataset (``rows_all``: every stored row)."""
    src = rows_all if stat.all_rows else df
    src = _filter(src, stat.where)
    nb, seed = opts["n_boot"], opts["boot_seed"]
    if stat.kind == "tau":
        a, b = quantity(src, stat.a), quantity(src, stat.b)
        e = cs.tau(a, b, n_boot=nb, seed=seed)
        if e.n_runs < 2:
            raise NotTestable(f"needs at least 2 runs with finite {stat.a} and {stat.b}")
        for name, x in ((stat.a, a), (stat.b, b)):  # τ = 0 of a constant says nothing
            fin = x[np.isfinite(x)]
            if len(fin) and np.all(fin == fin[0]):
                raise NotTestable(f"needs {name} to vary (it is {fin[0]:.6g} on every run)")
        return e
    if stat.kind in ("median", "max"):
        x = quantity(src, stat.a)
        if stat.kind == "max":
            fin = x[np.isfinite(x)]
            if not len(fin):
                raise NotTestable(f"needs a finite {stat.a}")
            return cs.Estimate(float(fin.max()), np.nan, np.nan, len(fin), None, np.zeros(0))
        e = cs.run_statistic(x, np.median, n_boot=nb, seed=seed)
        if not e.n_runs:
            raise NotTestable(f"needs runs with a finite {stat.a}")
        return e
    if stat.kind == "share":
        src = src.filter(pl.col("status") != "failed") if "status" in src.columns else src
        x = quantity(src, stat.a)
        hit = np.where(np.isfinite(x), (x >= stat.cut).astype(np.float64), 0.0)
        return cs.run_statistic(hit, np.mean, n_boot=nb, seed=seed)
    _need_axes(src, stat.axes)
    ax, names, keys = _codes(src)
    if stat.kind == "psi":
        a, b = quantity(src, stat.a), quantity(src, stat.b)
        e = cs.psi(a, b, ax, [names.index(x) for x in stat.axes], keys, n_boot=nb, seed=seed)
        if not e.n_groups:
            raise NotTestable(f"needs groups of ≥ 2 runs that differ only in {'+'.join(stat.axes)}")
        return e
    if stat.kind in ("Psi", "Psi_diff"):
        a_list = [quantity(src, stat.a)] + ([quantity(src, stat.a2)] if stat.kind == "Psi_diff" else [])
        ests, diff = cs.psi_all(a_list, quantity(src, stat.b), ax, keys, n_boot=nb, seed=seed)
        e = diff if stat.kind == "Psi_diff" else ests[0]
        if not e.n_groups:
            raise NotTestable("needs groups of ≥ 2 runs that differ in one axis only")
        return e
    if stat.kind == "pair":
        axis = stat.axes[0]
        x = quantity(src, stat.a)
        vals = setting(src, axis)
        e = cs.pair(x, vals, stat.p, stat.q if q is None else q, ax, names.index(axis), keys, n_boot=nb, seed=seed)
        if not e.n_groups:
            raise NotTestable(f"needs runs at {axis} = {stat.p} and {axis} = {q if q is not None else stat.q} "
                              "that agree on every other axis and the seed")
        return e
    raise ValueError(f"unknown statistic kind {stat.kind!r}")


def _reliability_text(df: pl.DataFrame, stat: Stat) -> str:
    names = []
    for qn in (stat.a, stat.b, stat.a2):
        names += [m for m in (measures_of(qn) if qn else []) if m not in names]
    cols = [measure_col(m) for m in names if measure_col(m) in df.columns and sd_col(m) in df.columns]
    if not cols:
        return ""
    g = df["gap"].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy() if "gap" in df.columns \
        else np.zeros(df.height)
    rel = reliability_of(df, cols, np.where(np.isfinite(g), g, 0.0))
    return "; ".join(f"{name_of(c)} {_fmt(float(r), sign=False)}" for c, r in zip(cols, rel.of_mean))


def _schedules(df: pl.DataFrame, stat: Stat) -> list:
    """The non-monotonic schedules present in ``df`` (for a pair over lr_schedule)."""
    if not isinstance(stat.q, tuple):
        return [stat.q]
    present = {str(v) for v in setting(df, stat.axes[0]) if v is not None}
    return [s for s in stat.q if s in present]


def _evaluate_stat(claim: Claim, stat: Stat, df, rows_all, opts, base: dict) -> list[Row]:
    qs = [None]
    if isinstance(stat.q, tuple):
        try:
            _need_axes(df, stat.axes)
            qs = _schedules(df, stat)
        except NotTestable:
            qs = [None]
        if qs == []:
            return [Row(**base, statistic=stat.label, supported_when=_side_text(stat),
                        reason=f"not testable: needs a non-monotonic {stat.axes[0]} "
                               f"({', '.join(stat.q)}) besides {stat.p}")]
    out = []
    for q in qs:
        label = stat.label + (f", {q} vs {stat.p}" if q is not None else "")
        row = Row(**base, statistic=label, supported_when=_side_text(stat))
        try:
            e = _compute(stat, df, rows_all, opts, q)
        except NotTestable as err:
            row.reason = f"not testable: {err}"
            out.append(row)
            continue
        row.estimate, row.ci_low, row.ci_high = e.estimate, e.lo, e.hi
        row.n_runs, row.n_groups = e.n_runs, e.n_groups
        row.verdict, row.reason = verdict_of(stat.side, stat.threshold, e.lo, e.hi)
        if not np.isfinite(e.estimate):
            row.verdict, row.reason = "undecided", "the statistic is undefined on these runs"
        row.reliability = _reliability_text(df, stat)
        row.also = "; ".join(_also_text(a, df, rows_all, opts, q) for a in claim.also)
        out.append(row)
    return out


def _also_text(stat: Stat, df, rows_all, opts, q=None) -> str:
    label = stat.label + (f", {q} vs {stat.p}" if q is not None and isinstance(stat.q, tuple) else "")
    try:
        e = _compute(stat, df, rows_all, opts, q if isinstance(stat.q, tuple) else None)
    except NotTestable as err:
        return f"{label}: not computed ({err})"
    ci = f" [{_fmt(e.lo)}, {_fmt(e.hi)}]" if np.isfinite(e.lo) else ""
    groups = f", {e.n_groups} groups" if e.n_groups is not None else ""
    return f"{label} = {_fmt(e.estimate)}{ci} ({e.n_runs} runs{groups})"


def _combine(rows: list[Row], base: dict) -> Row:
    verdicts = [r.verdict for r in rows]
    if "contradicted" in verdicts:
        v, reason = "contradicted", "a part is contradicted"
    elif "not testable" in verdicts:
        v = "not testable"
        reason = "not testable: " + "; ".join(r.reason.removeprefix("not testable: ") for r in rows
                                             if r.verdict == "not testable")
    elif all(x == "supported" for x in verdicts):
        v, reason = "supported", "every part is supported"
    else:
        v, reason = "undecided", "a part is undecided"
    runs = [r.n_runs for r in rows if r.n_runs is not None]
    return Row(**base, statistic="all of the above", verdict=v, reason=reason, n_runs=max(runs) if runs else None)


def _per_measure(claim: Claim, df, rows_all, opts, base: dict) -> list[Row]:
    """zhang_measures_see_labels: the instrument check, then ψ_label_noise(m, gap) per measure, sorted."""
    measures = [name_of(c) for c in measure_columns(df)]
    rows = []
    for m in measures:
        for r in _evaluate_stat(claim, _psi1("label_noise", m, "gap", ">"), df, rows_all, opts, base):
            r.extra["measure"] = m
            rows.append(r)
    check = Row(**base, statistic="instrument check: ψ_label_noise(m, gap) = 0 for " + ", ".join(INSTRUMENT),
                supported_when="= 0 exactly")
    inst = [r for r in rows if r.extra["measure"] in INSTRUMENT]
    testable = [r for r in inst if r.verdict != "not testable"]
    if not _varies(df, "label_noise"):
        check.reason = "not testable: needs axis label_noise"
    elif not testable:
        check.reason = "not testable: needs measure " + " or ".join(INSTRUMENT)
    else:
        exact = all(r.estimate == 0 and r.ci_low == 0 and r.ci_high == 0 for r in testable)
        check.verdict = "supported" if exact else "contradicted"
        names = ", ".join(r.extra["measure"] for r in testable)
        check.reason = (f"exactly 0 for {names}" if exact else
                        "not exactly 0 for " + ", ".join(f"{r.extra['measure']} ({_fmt(r.estimate)})"
                                                         for r in testable if not (r.estimate == 0 and r.ci_low == 0
                                                                                   and r.ci_high == 0)))
        check.estimate = max(abs(r.estimate) for r in testable)
        check.n_runs = max(r.n_runs or 0 for r in testable)
        check.n_groups = max(r.n_groups or 0 for r in testable)
    rows.sort(key=lambda r: (r.verdict == "not testable", -(r.estimate if r.estimate is not None
                                                            and np.isfinite(r.estimate) else -np.inf)))
    return [check] + rows


def _units(runs: pl.DataFrame) -> list[tuple[str, str]]:
    study = runs["study"].cast(pl.String).fill_null("unknown").to_list()
    ds = runs["dataset"].cast(pl.String).fill_null("unknown").to_list()
    return sorted(set(zip(study, ds)))


def needed_measures(claims: list[Claim], df: pl.DataFrame) -> list[str]:
    """The measure columns of ``df`` the claims read (every measure for a per-measure claim)."""
    cols = []
    for c in claims:
        if c.per_measure:
            want = measure_columns(df)
        else:
            want = [measure_col(m) for s in c.stats + c.also for qn in (s.a, s.b, s.a2) if qn
                    for m in measures_of(qn)]
        cols += [w for w in want if w in df.columns and w not in cols]
    return cols


def evaluate_claims(runs: pl.DataFrame, claim_ids: list[str] | None = None, *, n_boot: int = 1000,
                    boot_seed: int = 0, include_unconverged: bool = False, allow_mixed: bool = False
                    ) -> pl.DataFrame:
    """The claims table (module docstring) of every stored row ``runs`` (failed ones included:
    the population is selected here).

    Raises :class:`~analysis.load.RunsError` on an unknown claim id, on rows without a
    ``gap``, and (:class:`~analysis.load.MixedSettingsError`) when a measure the claims read
    mixes settings hashes, unless ``allow_mixed``."""
    claims = select_claims(claim_ids)
    if runs.height == 0:
        raise RunsError("the runs table has no rows")
    if n_boot < 0:
        raise RunsError(f"the bootstrap count must be 0 or more, got {n_boot}")
    if "gap" not in runs.columns:
        raise RunsError("the runs table has no gap column (train_acc − test_acc)")
    for col, default in (("study", "unknown"), ("dataset", "unknown")):
        if col not in runs.columns:
            runs = runs.with_columns(pl.lit(default).alias(col))
    if "run_id" in runs.columns:  # a canonical order: the bootstrap resamples by position
        runs = runs.sort("run_id", nulls_last=True, maintain_order=True)
    pop = population(runs, include_unconverged)
    check_settings(pop, needed_measures(claims, pop), allow_mixed=allow_mixed)
    opts = {"n_boot": n_boot, "boot_seed": boot_seed}
    out: list[Row] = []
    for study, ds in _units(runs):
        sel = (pl.col("study").cast(pl.String).fill_null("unknown") == study) & \
              (pl.col("dataset").cast(pl.String).fill_null("unknown") == ds)
        rows_all, df = runs.filter(sel), pop.filter(sel)
        base = {"study": study, "dataset": ds}
        for claim in claims:
            b = {**base, "claim": claim.id}
            if df.height == 0:
                out.append(Row(**b, statistic=", ".join(s.label for s in claim.stats) or "ψ_label_noise(m, gap)",
                               reason="not testable: needs runs that are ok and converged "
                                      "(--include-unconverged admits unconverged ones)"))
                continue
            try:
                sub = _filter(df, claim.where)
                sub_all = _filter(rows_all, claim.where)
                missing = [a for a in claim.needs_any_axis if _varies(sub, a)]
                if claim.needs_any_axis and not missing:
                    raise NotTestable("needs axis " + " or ".join(claim.needs_any_axis))
            except NotTestable as err:
                out += [Row(**b, statistic=s.label, supported_when=_side_text(s), reason=f"not testable: {err}")
                        for s in claim.stats] or [Row(**b, statistic="ψ_label_noise(m, gap)",
                                                      reason=f"not testable: {err}")]
                continue
            if claim.per_measure:
                out += _per_measure(claim, sub, sub_all, opts, b)
                continue
            rows = []
            for s in claim.stats:
                rows += _evaluate_stat(claim, s, sub, sub_all, opts, b)
            if claim.id == "wen_xor_bias":
                depths = sorted({str(v) for v in setting(sub, "depth") if v is not None})
                for r in rows:
                    r.also = "; ".join(x for x in (r.also, f"depths: {', '.join(depths) or 'unknown'}") if x)
            out += rows
            if claim.conjunction:
                out.append(_combine(rows, b))
    return _frame(out)


def _frame(rows: list[Row]) -> pl.DataFrame:
    def f(v):
        return None if v is None or not np.isfinite(v) else float(v)

    data = {
        "claim": [r.claim for r in rows], "study": [r.study for r in rows], "dataset": [r.dataset for r in rows],
        "statistic": [r.statistic for r in rows], "supported_when": [r.supported_when for r in rows],
        "estimate": [f(r.estimate) for r in rows], "ci_low": [f(r.ci_low) for r in rows],
        "ci_high": [f(r.ci_high) for r in rows], "verdict": [r.verdict for r in rows],
        "n_runs": [r.n_runs for r in rows], "n_groups": [r.n_groups for r in rows],
        "reliability": [r.reliability for r in rows], "reason": [r.reason for r in rows],
        "also": [r.also for r in rows],
    }
    schema = {c: (pl.Float64 if c in ("estimate", "ci_low", "ci_high") else pl.Int64 if c in ("n_runs", "n_groups")
                  else pl.String) for c in CLAIM_COLUMNS}
    return pl.DataFrame(data, schema=schema)


# ------------------------------------------------------------ output


def format_claims(table: pl.DataFrame, top: int = 60) -> str:
    """A plain-text view of the first ``top`` rows of the claims table."""
    cols = [("claim", 26), ("study", 14), ("statistic", 44), ("estimate", 8), ("95 % CI", 19), ("verdict", 12),
            ("n_runs", 6), ("n_groups", 8)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in cols)]
    for r in table.head(top).iter_rows(named=True):
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None else "–"
        study = r["study"] + (f"/{r['dataset']}" if r["dataset"] not in ("unknown", r["study"]) else "")
        cells = [r["claim"], study, r["statistic"], _fmt(r["estimate"]), ci, r["verdict"],
                 "–" if r["n_runs"] is None else str(r["n_runs"]), "–" if r["n_groups"] is None else str(r["n_groups"])]
        lines.append("  ".join((s if len(s) <= w else s[: w - 1] + "…").ljust(w) for s, (_, w) in zip(cells, cols)))
        if r["verdict"] == "not testable":
            lines.append(" " * 4 + r["reason"])
    if table.height > top:
        lines.append(f"… {table.height - top} more rows")
    return "\n".join(lines)


def _md_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return _fmt(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def claims_markdown(table: pl.DataFrame) -> str:
    """The claims table as a Markdown pipe table (every column)."""
    head = "| " + " | ".join(table.columns) + " |\n|" + "---|" * table.width + "\n"
    return head + "".join("| " + " | ".join(_md_cell(v) for v in row) + " |\n" for row in table.iter_rows())


_VERDICT_CSS = """
td.v{font-weight:600;text-align:left}.supported{background:#d9f0d3;color:#1b5e20}
.contradicted{background:#f8d7d3;color:#8e1b10}.undecided{background:#fdf1c7;color:#6d5200}
.not-testable{background:#eee;color:#555}td.t{text-align:left;white-space:normal;max-width:420px}
"""


_LEFT = ("claim", "study", "statistic", "verdict", "reliability", "reason", "also")


def claims_html(table: pl.DataFrame, *, title: str = "The seed's claims", meta: str = "") -> str:
    """One self-contained HTML page of the claims table (the report's style, no script, no link)."""
    from .markup import esc
    from .report import CSS

    counts = table["verdict"].value_counts()
    n = dict(zip(counts["verdict"].to_list(), counts["count"].to_list())) if table.height else {}
    summary = " · ".join(f'<span class="{v.replace(" ", "-")}">{esc(v)}: {n.get(v, 0)}</span>' for v in VERDICTS)
    statements = {c.id: c for c in CLAIMS}
    head = ["claim", "study", "statistic", "supported when", "estimate", "95 % CI", "verdict", "runs", "groups",
            "reliability", "reason", "also"]
    body = []
    for r in table.iter_rows(named=True):
        c = statements.get(r["claim"])
        tip = f' title="{esc(c.source + ": " + c.statement)}"' if c else ""
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None else "–"
        study = r["study"] + (f" / {r['dataset']}" if r["dataset"] not in ("unknown", r["study"]) else "")
        cells = [f'<td class="l"{tip}><code>{esc(r["claim"])}</code></td>', f'<td class="l">{esc(study)}</td>',
                 f'<td class="t">{esc(r["statistic"])}</td>', f"<td>{esc(r['supported_when'])}</td>",
                 f"<td>{_fmt(r['estimate'])}</td>", f'<td class="ci">{ci}</td>',
                 f'<td class="v {r["verdict"].replace(" ", "-")}">{esc(r["verdict"])}</td>',
                 f"<td>{'–' if r['n_runs'] is None else r['n_runs']}</td>",
                 f"<td>{'–' if r['n_groups'] is None else r['n_groups']}</td>",
                 f'<td class="t">{esc(r["reliability"])}</td>', f'<td class="t">{esc(r["reason"])}</td>',
                 f'<td class="t">{esc(r["also"])}</td>']
        body.append("<tr>" + "".join(cells) + "</tr>")
    claims_list = "".join(f"<tr><td class=\"l\"><code>{esc(c.id)}</code></td><td class=\"l\">{esc(c.source)}</td>"
                          f"<td class=\"t\">{esc(c.statement)}</td></tr>" for c in CLAIMS
                          if c.id in set(table["claim"].to_list()))
    page = [
        f"<h1>{esc(title)}</h1>",
        f'<div class="meta">{esc(meta)}</div>' if meta else "",
        f'<p class="meta">{summary}</p>',
        '<div class="wrap"><table class="claims"><tr>' + "".join(
            f'<th class="{"l" if h in _LEFT else ""}">{esc(h)}</th>' for h in head)
        + "</tr>\n" + "\n".join(body) + "</table></div>",
        '<p class="note">Verdict: supported when the 95 % bootstrap interval (1,000 replicates unless '
        "--boots says otherwise; runs resampled for τ, medians and shares, whole groups for ψ, Ψ and pair) "
        "lies entirely on the claimed side, contradicted when it lies entirely on the other side, undecided "
        "otherwise; not testable when the study lacks an axis, a measure or runs the claim needs. "
        "Definitions: CLAIMS.md and ANALYSIS.md.</p>",
        '<h2>The claims</h2><table><tr><th class="l">id</th><th class="l">source</th>'
        '<th class="l">claim</th></tr>' + claims_list + "</table>",
    ]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}{_VERDICT_CSS}</style></head>\n<body>\n"
            + "\n".join(p for p in page if p) + "\n</body></html>\n")


CLAIM_FORMATS = (".csv", ".parquet", ".md", ".html")


def write_claims(table: pl.DataFrame, out: str, *, title: str = "The seed's claims", meta: str = "") -> None:
    """Write the claims table as CSV, Parquet, Markdown or HTML by the extension, atomically."""
    import io
    import os

    from study.schema import write_atomic

    ext = os.path.splitext(out)[1].lower()
    if ext not in CLAIM_FORMATS:
        raise RunsError(f"--out {out}: the claims table is written as {', '.join(CLAIM_FORMATS)}; choose one")
    if ext in (".csv", ".parquet"):
        buf = io.BytesIO()
        (table.write_csv if ext == ".csv" else table.write_parquet)(buf)
        data = buf.getvalue()
    elif ext == ".md":
        data = claims_markdown(table).encode("utf-8")
    else:
        data = claims_html(table, title=title, meta=meta).encode("utf-8")
    write_atomic(out, data)
