"""The claims table: every claim of :mod:`analysis.claims.catalogue` on every study, with Holm-adjusted
p-values and verdicts (CLAIMS.md, "Statistics used here" and "Verdicts").

One row per (claim, study, dataset, statistic), columns `CLAIM_COLUMNS`:

- ``statistic``, ``supported_when`` (the claimed side, e.g. ``> 0``); ``estimate``, ``ci_low``,
  ``ci_high`` (the 95 % percentile bootstrap interval of :mod:`analysis.stats.claims_stats`; for a
  share, its exact one-sided 95 % Clopper–Pearson lower and upper bounds);
- ``p`` (:func:`analysis.stats.inference.bootstrap_p` from the same replicates; for a share the
  exact binomial p) and ``p_holm``, adjusted by Holm over the *family*: every primary statistic
  of the table with a p (all studies together); the "also" quantities, the ψ_k parts, the
  per-measure list and the instrument check are outside it;
- ``verdict``: ``supported`` (``p_holm < 0.05``, the estimate on the claimed side and, for a Ψ,
  no ψ_k interval entirely on the other side), ``mixed`` (as supported, but some ψ_k interval
  lies entirely on the other side: ``reason`` names the axes), ``contradicted`` (``p_holm <
  0.05``, the estimate on the other side), ``undecided``, ``not testable`` (``reason`` says what
  is missing); a share by its bounds instead (supported when the lower bound reaches the
  threshold, contradicted when the upper bound is below it). The instrument check row reads ``ok``
  or ``broken``; per-measure rows have no verdict;
- ``n_runs``, ``n_groups``; ``per_axis`` (a Ψ's ψ_k with intervals, and each axis's robust
  sign-error); ``robust_max`` (Ψ(m, gap)'s robust sign-error, ANALYSIS.md: the worst environment);
  ``icc`` and ``low_icc`` (the study's outcome reliability, :mod:`analysis.floor`, and whether it
  is below 0.5); ``reliability`` (of each measure used, where the rows carry ``measure_sd.*``);
  ``reason``; ``also`` (the quantities CLAIMS.md prints besides, never decided).

Choices where CLAIMS.md leaves room:

- A study is the ``study`` column; a study with several datasets is tested per dataset. The axes
  are its ``hp.*`` columns; the settings and quantities are read as
  :mod:`analysis.claims.quantities` says. Groups also agree on the seed.
- Ψ's bootstrap draws configurations (equal ``hp.*`` values; a configuration's seeds stay
  together) once per replicate and regroups every axis from that draw
  (:mod:`analysis.stats.claims_stats`).
- A statistic whose column is constant among its runs (τ), within every group (ψ) or within every
  group of every axis (Ψ; a ψ_k part constant within its groups is marked "(constant)") is not
  testable, saying which column.
- Per-measure rows (``zhang_measures_see_labels``) carry their raw p, never an adjusted one.
- A median is tested like any estimate: bootstrap replicates over runs, the p of its distance
  from the threshold, Holm, the side (``dziugaite_nonvacuous``: < 0.5 on true labels, ≥ 0.5 on
  random labels).
- A share (``zhang_random_labels``) is in the Holm family with its exact binomial p (so that the
  family counts it), but, as CLAIMS.md says, decided by its exact bounds alone. It counts every
  stored run of the study with ``label_noise = 1`` that did not fail, converged or not; a missing
  ``train_acc`` counts as not fitted. Fewer than 29 runs are still evaluated: they cannot be
  supported (the reason says how many would be needed) but can be contradicted.
- A conjunction (``zhang_random_labels``, ``dziugaite_nonvacuous``) adds a row ``all of the
  above``: contradicted when a part is, else not testable when a part is, supported when every
  part is, mixed when every part is supported or mixed, undecided otherwise.
- A pair with ``min_se`` (``wen_xor_bias``) is undecided when ``|estimate|`` does not exceed
  ``min_se`` × √(a(1 − a)/n) at the pair's runs' median test accuracy ``a`` and median ``n_test``.
- A pair with a link (``seong_schedules``) groups each ``q`` run with the ``p`` runs whose linked
  setting is its own divided by the factor (relative tolerance 1e-6), equal on every other axis
  and the seed; one row per ``q`` value present.
- ``final_lr`` (``seong_schedules``' "also"): its median over the paired runs at ``p`` and at
  ``q``; "not recorded" where the rows lack the column (rows written before it existed).
- A regime (``dziugaite_nonvacuous``): only the runs meeting every condition count (≥ 10,000
  ``n_train``, a binary task, ``model = mlp``, ``measure.params > n_train``); without one the row
  names the conditions no run meets and the measures the study lacks.
- The robust sign-error of a Ψ(m, gap) uses each run's ``n_test`` and environments of at least
  ``min_ess`` (12) effective samples; with 2 seeds an environment has 4 samples, so small studies
  keep none and say so. A difference of two Ψ prints none.
- ``zhang_measures_see_labels``: the instrument check is ``ok`` when ψ_label_noise of every
  instrument measure present is exactly 0 in every group, ``broken`` otherwise; then one row per
  measure, sorted by ψ (highest first, not testable last), with its interval and raw p.
- Mixed settings: a measure column whose rows mix settings hashes within one study (and
  dataset: the unit a claim is decided on) is refused (:func:`analysis.load.check_settings`)
  unless ``allow_mixed``; studies measured under different settings (repeats = 2 in one) are
  fine side by side. Only the measures the selected claims read are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from study.schema import measure_col, name_of, sd_col

from ..floor import noise_floor
from ..load import MixedSettingsError, RunsError, check_settings, checked, measure_columns, population
from ..output import num
from ..stats import claims_stats as cs
from ..stats._ranks import row_codes
from ..stats.inference import binomial_p, bootstrap_p, clopper_pearson, holm
from ..stats.noise import binomial_se
from ..stats.psi import group_taus
from ..stats.robust import robust_sign_error
from ..table import reliability_of
from .catalogue import BY_ID, CLAIMS, Claim, Stat
from .quantities import (
    NotTestable,
    axis_codes,
    in_regime,
    measures_of,
    need_axes,
    quantity,
    same,
    select,
    setting,
    value_codes,
    varies,
)

CLAIM_COLUMNS = ["claim", "study", "dataset", "statistic", "supported_when", "estimate", "ci_low", "ci_high", "p",
                 "p_holm", "verdict", "n_runs", "n_groups", "per_axis", "robust_max", "icc", "low_icc",
                 "reliability", "reason", "also"]
VERDICTS = ("supported", "mixed", "contradicted", "undecided", "not testable")
CHECKS = ("ok", "broken")
ALPHA = 0.05
LEVEL = 0.95
_FLOATS = ("estimate", "ci_low", "ci_high", "p", "p_holm", "robust_max", "icc")


def select_claims(ids: list[str] | None) -> list[Claim]:
    """The claims named (all when None); an unknown id raises RunsError naming the known ones."""
    if not ids:
        return list(CLAIMS)
    for i in ids:
        if i not in BY_ID:
            raise RunsError(f"unknown claim id {i!r}; known: {', '.join(BY_ID)}")
    return [BY_ID[i] for i in ids]


@dataclass
class Row:
    """One row of the table; the fields after ``also`` only steer the verdict."""

    claim: str
    study: str
    dataset: str
    statistic: str
    supported_when: str = ""
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None
    p_holm: float | None = None
    verdict: str = "not testable"
    n_runs: int | None = None
    n_groups: int | None = None
    per_axis: str = ""
    robust_max: float | None = None
    icc: float | None = None
    low_icc: bool | None = None
    reliability: str = ""
    reason: str = ""
    also: str = ""
    role: str = "primary"  # primary, listed, instrument, combined
    kind: str = ""
    side: str | None = None
    threshold: float = 0.0
    parts: list = field(default_factory=list)  # (axis name, claims_stats.Part)
    min_effect: float | None = None
    share: tuple[int, int] | None = None
    members: list = field(default_factory=list)  # the parts of a combined row


@dataclass(frozen=True)
class Options:
    n_boot: int
    seed: int
    min_ess: float


TINY = 1e-12  # a figure of smaller magnitude reads as 0 in the tables (`output.num`)
SIGNED, PLAIN = "+.3g", ".3g"  # the tables' figures: 3 significant digits, an estimate signed


def side_text(side: str | None, threshold: float) -> str:
    """The claimed side as text (``> 0``, ``≥ 0.9``); empty for none."""
    return f"{'≥' if side == '>=' else side} {threshold:g}" if side else ""


def _on(side: str, t: float, x: float) -> bool:
    return {">": x > t, ">=": x >= t, "<": x < t}[side]


def _off(side: str, t: float, x: float) -> bool:
    return {">": x < t, ">=": x < t, "<": x > t}[side]


def _other_side(side: str, t: float, lo: float, hi: float) -> bool:
    """The interval lies entirely on the other side of ``t``."""
    return {">": hi < t, ">=": hi < t, "<": lo > t}[side]


# ------------------------------------------------------------ computing one statistic


def _constant_reason(stat: Stat, e: cs.Estimate, where: str) -> str:
    name = stat.a if e.constant == "a" else stat.b
    return f"needs {name} to vary {where}"


def _pair_groups(src: pl.DataFrame, stat: Stat, q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(at p, at q, group label) of each run of a pair (CLAIMS.md's groups; the link, if any)."""
    ax, names, keys = axis_codes(src)
    vals = setting(src, stat.axes[0])
    at_p = np.array([same(v, stat.p) for v in vals], dtype=bool)
    at_q = np.array([same(v, q) for v in vals], dtype=bool)
    free = [names.index(stat.axes[0])]
    cols = [keys]
    if stat.link:
        name, factor = stat.link
        lv = quantity(src, name)
        code = value_codes(np.where(at_q, lv / factor, lv))
        free += [names.index(name)] if name in names else []
        cols.append(code[:, None] + 1)
    key = np.concatenate([np.delete(ax, free, axis=1)] + cols, axis=1).astype(np.int64)
    ok = (at_p | at_q) & ((key[:, -1] > 0) if stat.link else True)
    return at_p, at_q, np.where(ok, row_codes(key), -1)


def _robust(a: np.ndarray, b: np.ndarray, ax: np.ndarray, names: list[str], src: pl.DataFrame,
            min_ess: float) -> tuple[float | None, dict[str, float], str]:
    """Robust sign-error of ``a`` against ``b``: the maximum, per axis, and a note when none."""
    nt = quantity(src, "n_test") if "n_test" in src.columns else np.full(src.height, np.nan)
    keep = np.isfinite(a) & np.isfinite(b)
    if not (np.isfinite(nt[keep]).all() and (nt[keep] > 0).all()) or not keep.any():
        return None, {}, "robust sign-error: needs n_test"
    rr = robust_sign_error(b[keep], a[keep], ax[keep], nt[keep], min_ess)
    if rr.overall[0][3] == 0:
        return None, {}, (f"robust sign-error: no environment reaches {min_ess:g} effective samples "
                          "(its samples are the seed pairings of two configurations)")
    per = {n: rr.per_axis[0][k][2] for k, n in enumerate(names) if rr.per_axis[0][k][3]}
    return rr.overall[0][2], per, f"robust sign-error {num(rr.overall[0][2], PLAIN, tiny=TINY)} over {rr.overall[0][3]} environments"


def _compute(stat: Stat, df: pl.DataFrame, rows_all: pl.DataFrame, opts: Options, q=None) -> Row:
    """The statistic on the rows ``df`` (``rows_all``: every stored row) as a row without
    verdict; NotTestable when it cannot be computed."""
    src = select(rows_all if stat.all_rows else df, stat.where)
    nb, seed = opts.n_boot, opts.seed
    row = Row("", "", "", stat.label, kind=stat.kind, side=stat.side, threshold=stat.threshold)
    if stat.kind == "tau":
        e = cs.tau(quantity(src, stat.a), quantity(src, stat.b), n_boot=nb, seed=seed)
        if e.n_runs < 2:
            raise NotTestable(f"needs at least 2 runs with finite {stat.a} and {stat.b}")
        if e.constant:
            raise NotTestable(_constant_reason(stat, e, "(it is the same on every run)"))
    elif stat.kind == "median":
        e = cs.median(quantity(src, stat.a), n_boot=nb, seed=seed)
        if not e.n_runs:
            raise NotTestable(f"needs runs with a finite {stat.a}")
    elif stat.kind == "max":
        x = quantity(src, stat.a)
        fin = x[np.isfinite(x)]
        if not len(fin):
            raise NotTestable(f"needs a finite {stat.a}")
        e = cs.Estimate(float(fin.max()), np.nan, np.nan, len(fin), None, np.zeros(0))
    elif stat.kind == "share":
        src = src.filter(pl.col("status") != "failed") if "status" in src.columns else src
        x = quantity(src, stat.a)
        k, n = int((np.isfinite(x) & (x >= stat.cut)).sum()), src.height
        if not n:
            raise NotTestable("needs runs that did not fail")
        lo, hi = clopper_pearson(k, n, LEVEL)
        row.estimate, row.ci_low, row.ci_high, row.n_runs, row.share = k / n, lo, hi, n, (k, n)
        row.p = binomial_p(k, n, stat.threshold)
        return row
    elif stat.kind in ("psi", "Psi", "Psi_diff"):
        need_axes(src, stat.axes)
        ax, names, keys = axis_codes(src)
        b = quantity(src, stat.b)
        if stat.kind == "psi":
            e = cs.psi(quantity(src, stat.a), b, ax, [names.index(x) for x in stat.axes], keys, n_boot=nb, seed=seed)
            what = "+".join(stat.axes)
            if not e.n_groups:
                raise NotTestable(f"needs groups of ≥ 2 runs that differ only in {what}")
            if e.constant:
                raise NotTestable(_constant_reason(stat, e, f"within a group (it is constant within every group "
                                                            f"of runs that differ only in {what})"))
        else:
            a_list = [quantity(src, stat.a)] + ([quantity(src, stat.a2)] if stat.kind == "Psi_diff" else [])
            ests, diff = cs.psi_all(a_list, b, ax, keys, row_codes(ax), n_boot=nb, seed=seed)
            e = diff if stat.kind == "Psi_diff" else ests[0]
            if not e.n_groups:
                raise NotTestable("needs groups of ≥ 2 runs that differ in one axis only")
            if e.constant:
                raise NotTestable(f"needs {stat.a} to vary within a group of some axis")
            row.parts = [(names[p.axis], p) for p in e.parts]
            robust = {}
            if stat.kind == "Psi":
                row.robust_max, robust, note = _robust(a_list[0], b, ax, names, src, opts.min_ess)
            else:
                note = "robust sign-error: not defined for a difference"
            row.per_axis = "; ".join(
                f"{n} {num(p.estimate, SIGNED, tiny=TINY)} [{num(p.lo, SIGNED, tiny=TINY)}, {num(p.hi, SIGNED, tiny=TINY)}]" + (" (constant)" if p.constant else "")
                + (f", robust {num(robust[n], PLAIN, tiny=TINY)}" if n in robust else "") for n, p in row.parts) + f"; {note}"
    elif stat.kind == "pair":
        need_axes(src, stat.axes)
        at_p, at_q, group = _pair_groups(src, stat, q)
        e = cs.pair(quantity(src, stat.a), at_p, at_q, group, n_boot=nb, seed=seed)
        if not e.n_groups:
            link = (f" whose {stat.link[0]} is {stat.link[1]:g} × the {stat.link[0]} of runs at "
                    f"{stat.axes[0]} = {stat.p}," if stat.link else "")
            raise NotTestable(f"needs runs at {stat.axes[0]} = {str(q).lower()}{link} and {stat.axes[0]} = "
                              f"{str(stat.p).lower()} that agree on every other axis and the seed")
        if stat.min_se:
            used = src.filter(pl.Series((at_p | at_q) & (group >= 0)))
            acc = quantity(used, "test_acc") if "test_acc" in used.columns else np.full(1, np.nan)
            nt = quantity(used, "n_test") if "n_test" in used.columns else np.full(1, np.nan)
            se = binomial_se(_median(acc), _median(nt))
            row.min_effect = stat.min_se * se if np.isfinite(se) else np.nan
    else:
        raise ValueError(f"unknown statistic kind {stat.kind!r}")
    row.estimate, row.ci_low, row.ci_high = e.estimate, e.lo, e.hi
    row.n_runs, row.n_groups = e.n_runs, e.n_groups
    if stat.side is not None and len(e.reps):
        row.p = bootstrap_p(e.reps, e.estimate, stat.threshold)
    return row


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else np.nan


def _median_at_text(stat: Stat, df: pl.DataFrame, q) -> str:
    """The median of ``stat.a`` over the paired runs at ``p`` and at ``q`` (those in a group with both)."""
    col = stat.a
    if col not in df.columns or not df[col].cast(pl.Float64, strict=False).is_not_null().any():
        return f"{stat.label}: not recorded"
    need_axes(df, stat.axes)
    at_p, at_q, group = _pair_groups(df, stat, q)
    both = np.isin(group, np.intersect1d(group[at_p & (group >= 0)], group[at_q & (group >= 0)]))
    x = quantity(df, col)
    out = []
    for v, at in ((stat.p, at_p), (q, at_q)):
        sel = at & both & np.isfinite(x)
        out.append(f"{v} median {num(float(np.median(x[sel])), PLAIN, tiny=TINY)} ({int(sel.sum())} runs)" if sel.any()
                   else f"{v} not recorded")
    return f"{stat.label}: " + ", ".join(out)


def _also_text(stat: Stat, df, rows_all, opts: Options, q=None) -> str:
    q = q if stat.q_each else stat.q
    label = stat.label + (f", {q} vs {stat.p}" if stat.q_each else "")
    try:
        if stat.kind == "median_at":
            return _median_at_text(stat, select(df, stat.where), q)
        r = _compute(stat, df, rows_all, opts, q)
    except NotTestable as err:
        return f"{label}: not computed ({err})"
    ci = f" [{num(r.ci_low, SIGNED, tiny=TINY)}, {num(r.ci_high, SIGNED, tiny=TINY)}]" if r.ci_low is not None and np.isfinite(r.ci_low) else ""
    groups = f", {r.n_groups} groups" if r.n_groups is not None else ""
    return f"{label} = {num(r.estimate, SIGNED, tiny=TINY)}{ci} ({r.n_runs} runs{groups})"


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
    return "; ".join(f"{name_of(c)} {num(float(r), PLAIN, tiny=TINY)}" for c, r in zip(cols, rel.of_mean))


# ------------------------------------------------------------ one claim on one study


def _q_values(df: pl.DataFrame, stat: Stat) -> list:
    """The ``q`` of each row of a statistic: the values of ``q_each`` present (else ``q``)."""
    if not stat.q_each:
        return [stat.q]
    need_axes(df, stat.axes)
    present = {str(v) for v in setting(df, stat.axes[0]) if v is not None}
    qs = [s for s in stat.q_each if s in present]
    if not qs:
        raise NotTestable(f"needs a {stat.axes[0]} of {', '.join(stat.q_each)} besides {stat.p}")
    return qs


def _missing_measures(df: pl.DataFrame, stat: Stat) -> list[str]:
    out = []
    for qn in (stat.a, stat.b, stat.a2):
        for m in measures_of(qn) if qn else []:
            try:
                quantity(df, m)
            except NotTestable as err:
                out.append(str(err))
    return out


def _not_testable(claim: Claim, stat: Stat, base: dict, why: list[str]) -> Row:
    reason = "; ".join(dict.fromkeys(why))
    if claim.note and "needs measure" in reason:
        reason += f" ({claim.note})"
    return Row(**base, statistic=stat.label, supported_when=side_text(stat.side, stat.threshold),
               reason=f"not testable: {reason}", side=stat.side, threshold=stat.threshold, kind=stat.kind)


def _stat_rows(claim: Claim, stat: Stat, df, rows_all, opts: Options, base: dict) -> list[Row]:
    try:
        qs = _q_values(df, stat)
    except NotTestable as err:
        return [_not_testable(claim, stat, base, [str(err)])]
    out = []
    for q in qs:
        label = stat.label + (f", {q} at {stat.link[1]:g}× the {stat.link[0]} of {stat.p}" if stat.q_each and stat.link
                              else f", {q} vs {stat.p}" if stat.q_each else "")
        try:
            row = _compute(stat, df, rows_all, opts, q)
        except NotTestable as err:
            out.append(_not_testable(claim, Stat(label, stat.kind, stat.a, side=stat.side,
                                                 threshold=stat.threshold), base, [str(err)]))
            continue
        for k, v in base.items():
            setattr(row, k, v)
        row.statistic, row.supported_when = label, side_text(stat.side, stat.threshold)
        row.reliability = _reliability_text(df, stat)
        shown = [f"{name}: {', '.join(sorted({str(default if v is None else v) for v in setting(df, name)}))}"
                 for name, default in claim.show]
        row.also = "; ".join([_also_text(a, df, rows_all, opts, q) for a in claim.also] + shown)
        out.append(row)
    return out


def _instrument_label(claim: Claim) -> str:
    return f"instrument check: {claim.per_measure.label.replace('{m}', 'm')} = 0 exactly for " + ", ".join(
        claim.instrument)


def _per_measure(claim: Claim, df, rows_all, opts: Options, base: dict) -> list[Row]:
    """The instrument check, then the template statistic of every measure, sorted (no verdicts)."""
    tpl = claim.per_measure
    check = Row(**base, statistic=_instrument_label(claim), supported_when="= 0 exactly", role="instrument")
    try:
        need_axes(df, tpl.axes)
    except NotTestable as err:
        check.reason = f"not testable: {err}"
        return [check]
    rows = []
    for col in measure_columns(df):
        m = name_of(col)
        stat = Stat(tpl.label.replace("{m}", m), tpl.kind, tpl.a.replace("{m}", m), tpl.b, axes=tpl.axes,
                    side=">", threshold=tpl.threshold)
        r = _stat_rows(claim, stat, df, rows_all, opts, base)[0]
        r.role, r.supported_when, r.side = "listed", "", None
        rows.append(r)
    ax, names, keys = axis_codes(df)
    b = quantity(df, tpl.b)
    exact, present = [], []
    for m in claim.instrument:
        if measure_col(m) not in df.columns:
            continue
        taus, _ = group_taus(b, quantity(df, m), ax, [names.index(a) for a in tpl.axes], keys)
        if len(taus):
            present.append(m)
            exact.append((m, float(np.max(np.abs(taus)))))
    if not present:
        check.reason = "not testable: needs measure " + " or ".join(claim.instrument)
    else:
        bad = [(m, v) for m, v in exact if v != 0]
        check.verdict = "broken" if bad else "ok"
        check.estimate = max(v for _, v in exact)
        check.n_runs = df.height
        check.reason = (f"ψ is exactly 0 in every group for {', '.join(present)}" if not bad else
                        "not exactly 0 for " + ", ".join(f"{m} (largest |τ| in a group {num(v, PLAIN, tiny=TINY)})"
                                                         for m, v in bad))
    rows.sort(key=lambda r: (r.estimate is None or not np.isfinite(r.estimate),
                             -(r.estimate if r.estimate is not None and np.isfinite(r.estimate) else 0.0)))
    return [check] + rows


def _untestable(claim: Claim, df: pl.DataFrame, base: dict, why: str) -> list[Row]:
    if claim.per_measure:
        return [Row(**base, statistic=_instrument_label(claim), supported_when="= 0 exactly", role="instrument",
                    reason=f"not testable: {why}")]
    return [_not_testable(claim, s, base, [why] + _missing_measures(df, s)) for s in claim.stats]


def _claim_rows(claim: Claim, df: pl.DataFrame, rows_all: pl.DataFrame, opts: Options, base: dict) -> list[Row]:
    base = {**base, "claim": claim.id}
    if df.height == 0:
        return _untestable(claim, df, base, "needs runs that are ok and converged "
                                            "(--include-unconverged admits unconverged ones)")
    try:
        sub = in_regime(select(df, claim.where), claim.regime)
        sub_all = in_regime(select(rows_all, claim.where), claim.regime)
        if claim.needs_any_axis and not any(varies(sub, a) for a in claim.needs_any_axis):
            raise NotTestable("needs axis " + " or ".join(claim.needs_any_axis))
    except NotTestable as err:
        return _untestable(claim, df, base, str(err))
    if claim.per_measure:
        return _per_measure(claim, sub, sub_all, opts, base)
    rows = [r for s in claim.stats for r in _stat_rows(claim, s, sub, sub_all, opts, base)]
    if claim.conjunction:
        runs = [r.n_runs for r in rows if r.n_runs is not None]
        rows.append(Row(**base, statistic="all of the above", role="combined", members=list(rows),
                        n_runs=max(runs) if runs else None))
    return rows


# ------------------------------------------------------------ verdicts


def _decide(r: Row) -> None:
    """The verdict of a computed primary row (module docstring) from its adjusted p."""
    if r.role == "listed":
        r.verdict = ""
        return
    if r.role in ("instrument", "combined") or r.reason.startswith("not testable"):
        return
    t, side = r.threshold, r.side
    if r.share is not None:
        k, n = r.share
        if r.ci_low >= t:
            r.verdict, r.reason = "supported", f"{k} of {n}: exact lower bound {num(r.ci_low, PLAIN, tiny=TINY)} ≥ {t:g}"
        elif r.ci_high < t:
            r.verdict, r.reason = "contradicted", f"{k} of {n}: exact upper bound {num(r.ci_high, PLAIN, tiny=TINY)} < {t:g}"
        else:
            fewest = int(np.ceil(np.log(1 - LEVEL) / np.log(t))) if 0 < t < 1 else None
            r.verdict = "undecided"
            r.reason = (f"{k} of {n}: exact bounds [{num(r.ci_low, PLAIN, tiny=TINY)}, {num(r.ci_high, PLAIN, tiny=TINY)}] contain {t:g}"
                        + (f" ({fewest} of {fewest} is the fewest that can show ≥ {t:g})" if fewest else ""))
        return
    if r.estimate is None or not np.isfinite(r.estimate):
        r.verdict, r.reason = "undecided", "the statistic is undefined on these runs"
        return
    if r.p_holm is None or not np.isfinite(r.p_holm):
        r.verdict, r.reason = "undecided", "no bootstrap replicates (--boots 0)"
        return
    ptext = f"adjusted p {r.p_holm:.3g}"
    if r.min_effect is not None and not (abs(r.estimate) > r.min_effect):
        r.verdict = "undecided"
        r.reason = (f"the effect {num(r.estimate, SIGNED, tiny=TINY)} does not exceed 2 binomial SE of test accuracy "
                    f"({num(r.min_effect, PLAIN, tiny=TINY)})" if np.isfinite(r.min_effect)
                    else "the binomial SE of test accuracy is unknown (needs test_acc and n_test)")
        return
    if r.p_holm < ALPHA and _on(side, t, r.estimate):
        against = [n for n, p in r.parts if np.isfinite(p.lo) and _other_side(side, t, p.lo, p.hi)]
        if against:
            r.verdict = "mixed"
            r.reason = (f"{ptext} < {ALPHA:g} and the estimate is {side_text(side, t)}, but the interval of "
                        + ", ".join(f"ψ_{a}" for a in against) + " lies entirely on the other side")
        else:
            r.verdict = "supported"
            r.reason = f"{ptext} < {ALPHA:g}, estimate {side_text(side, t)}" + (
                ", no ψ_k interval entirely on the other side" if r.parts else "")
    elif r.p_holm < ALPHA and _off(side, t, r.estimate):
        r.verdict, r.reason = "contradicted", f"{ptext} < {ALPHA:g}, estimate on the other side of {t:g}"
    else:
        r.verdict, r.reason = "undecided", f"{ptext} ≥ {ALPHA:g}" if r.p_holm >= ALPHA else f"the estimate is {t:g}"


def _combine(r: Row) -> None:
    verdicts = [m.verdict for m in r.members]
    if "contradicted" in verdicts:
        r.verdict, r.reason = "contradicted", "a part is contradicted"
    elif "not testable" in verdicts:
        r.verdict = "not testable"
        r.reason = "not testable: " + "; ".join(dict.fromkeys(m.reason.removeprefix("not testable: ")
                                                              for m in r.members if m.verdict == "not testable"))
    elif verdicts and all(v == "supported" for v in verdicts):
        r.verdict, r.reason = "supported", "every part is supported"
    elif verdicts and all(v in ("supported", "mixed") for v in verdicts):
        r.verdict, r.reason = "mixed", "every part is supported or mixed"
    else:
        r.verdict, r.reason = "undecided", "a part is undecided"


def adjust_and_decide(rows: list[Row]) -> None:
    """Holm over the primary rows with a p, then every verdict (combined rows last)."""
    family = [r for r in rows if r.role == "primary" and r.p is not None and np.isfinite(r.p)]
    for r, adj in zip(family, holm([r.p for r in family])):
        r.p_holm = float(adj)
    for r in rows:
        _decide(r)
    for r in rows:
        if r.role == "combined":
            _combine(r)


# ------------------------------------------------------------ the table


def _units(runs: pl.DataFrame) -> list[tuple[str, str]]:
    study = runs["study"].cast(pl.String).fill_null("unknown").to_list()
    ds = runs["dataset"].cast(pl.String).fill_null("unknown").to_list()
    return sorted(set(zip(study, ds)))


def _unit(frame: pl.DataFrame, study: str, ds: str) -> pl.DataFrame:
    return frame.filter((pl.col("study").cast(pl.String).fill_null("unknown") == study)
                        & (pl.col("dataset").cast(pl.String).fill_null("unknown") == ds))


def needed_measures(claims: list[Claim], df: pl.DataFrame) -> list[str]:
    """The measure columns of ``df`` the claims read (every measure for a per-measure claim)."""
    cols = []
    for c in claims:
        if c.per_measure:
            want = measure_columns(df)
        else:
            names = [qn for s in c.stats + c.also for qn in (s.a, s.b, s.a2) if qn]
            names += [qn for cond in c.regime for qn in (cond.quantity, cond.other) if qn]
            want = [measure_col(m) for qn in names for m in measures_of(qn)]
        cols += [w for w in want if w in df.columns and w not in cols]
    return cols


def _prepare(runs: pl.DataFrame, n_boot: int = 0) -> pl.DataFrame:
    """`load.checked` runs, with a study and a dataset column ("unknown" where absent)."""
    runs = checked(runs, n_boot)
    for col in ("study", "dataset"):
        if col not in runs.columns:
            runs = runs.with_columns(pl.lit("unknown").alias(col))
    return runs


def noise_floors(runs: pl.DataFrame, include_unconverged: bool = False) -> pl.DataFrame:
    """The noise floor (:func:`analysis.floor.noise_floor`) of every study and dataset of ``runs``."""
    runs = _prepare(runs)
    pop = population(runs, include_unconverged)
    out = []
    for study, ds in _units(runs):
        f = noise_floor(_unit(pop, study, ds))
        out.append({"study": study, "dataset": ds, "n_runs": f.n_runs, "n_test": f.n_test, "test_acc": f.test_acc,
                    "test_acc_se": f.test_acc_se, "configs": f.configs, "gap_sd": f.gap_sd,
                    "gap_within_sd": f.gap_within_sd, "icc": f.icc, "seeds_needed": f.seeds_needed,
                    "low_icc": f.noisy if np.isfinite(f.icc) else None, "text": f.text()})
    return pl.DataFrame(out, schema={"study": pl.String, "dataset": pl.String, "n_runs": pl.Int64,
                                     "n_test": pl.Float64, "test_acc": pl.Float64, "test_acc_se": pl.Float64,
                                     "configs": pl.Int64, "gap_sd": pl.Float64, "gap_within_sd": pl.Float64,
                                     "icc": pl.Float64, "seeds_needed": pl.Float64, "low_icc": pl.Boolean,
                                     "text": pl.String})


def evaluate_claims(runs: pl.DataFrame, claim_ids: list[str] | None = None, *, n_boot: int = 10_000,
                    boot_seed: int = 0, include_unconverged: bool = False, allow_mixed: bool = False,
                    min_ess: float = 12.0) -> pl.DataFrame:
    """The claims table (module docstring) of every stored row ``runs`` (failed ones included:
    the population is selected here).

    Raises :class:`~analysis.load.RunsError` on an unknown claim id, on rows without a ``gap``,
    and (:class:`~analysis.load.MixedSettingsError`) when a measure the claims read mixes
    settings hashes, unless ``allow_mixed``."""
    claims = select_claims(claim_ids)
    runs = _prepare(runs, n_boot)
    pop = population(runs, include_unconverged)
    needed = needed_measures(claims, pop)
    for study, ds in _units(runs):  # each study is decided on its own: settings agree within it
        try:
            check_settings(_unit(pop, study, ds), needed, allow_mixed=allow_mixed)
        except MixedSettingsError as e:
            raise MixedSettingsError(f"study {study}: {e}") from None
    opts = Options(n_boot, boot_seed, min_ess)
    out: list[Row] = []
    for study, ds in _units(runs):
        df, rows_all = _unit(pop, study, ds), _unit(runs, study, ds)
        floor = noise_floor(df)
        for claim in claims:
            for r in _claim_rows(claim, df, rows_all, opts, {"study": study, "dataset": ds}):
                r.icc = floor.icc if np.isfinite(floor.icc) else None
                r.low_icc = floor.noisy if np.isfinite(floor.icc) else None
                out.append(r)
    adjust_and_decide(out)
    return _frame(out)


def _frame(rows: list[Row]) -> pl.DataFrame:
    def f(v):
        return None if v is None or not np.isfinite(v) else float(v)

    data = {c: [(f(getattr(r, c)) if c in _FLOATS else getattr(r, c)) for r in rows] for c in CLAIM_COLUMNS}
    schema = {c: (pl.Float64 if c in _FLOATS else pl.Int64 if c in ("n_runs", "n_groups")
                  else pl.Boolean if c == "low_icc" else pl.String) for c in CLAIM_COLUMNS}
    return pl.DataFrame(data, schema=schema)
