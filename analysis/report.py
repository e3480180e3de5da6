"""One self-contained HTML report of a study: the runs, the ranking of the measures, the figures.

The page has no external resources: figures are embedded as base64 PNG or inline SVG (the forest
plot, ``analysis.forest``), and its inline scripts sort and filter the ranking table and name the
run under the pointer (``analysis.interactive``) and draw the linked views from the rows' data
(``analysis.linked``). It leads with the conclusion, then the evidence. Each section is a function of the rows shown (`_setup`, `_glance`, `_rank_html`, `_cost`,
`network_view.network_section`, …; `analysis.output` shows how one is written), and `write_report`
puts them in the one page shell (`output.page`), written atomically.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib import colormaps

from analysis import figures, interactive, linked, measure_info, network_view
from analysis.floor import MIN_NETWORKS, SMALL_RULE, NoiseFloor, noise_floor, noise_reasons, small_study
from analysis.folding import duplicates, folded_into
from analysis.forest import forest_section
from analysis.load import MixedSettingsError, RunsError, load_runs, population, sort_ranking
from analysis.output import MISSING, esc, interval, num, page, png_uri, write
from analysis.table import rank_table
from study.schema import ARTIFACTS, artifact_col, is_hp, is_measure, is_seconds, name_of

# ------------------------------------------------------------ helpers

RELIABLE = 0.9  # the legend names the measures whose one draw is less reliable than this

_DEFINITIONS = (
    "τ: Kendall's τ-a between the measure and the gap over all runs, with a seeded bootstrap "
    "interval (95 % CI). Reliability: 1 − the variance of one redraw of the measure's noise "
    "over the variance of one draw across networks (needs [measures] repeats > 1, else {missing}; 1 for "
    "a deterministic measure); τ ceiling: (2/π)·arcsin √(reliability of the stored mean of the "
    "repeats), the largest |τ| the stored values allow under a bivariate-normal model.{reliability} "
    "Ψ: granulated τ, the mean of ψ over the axes (ψ<sub>axis</sub>: mean τ over "
    "groups of runs that differ only in that axis). CMI: the minimum over conditioning sets S "
    "(|S| ≤ 2) of the normalised conditional mutual information between the measure's and the "
    "gap's pairwise order, with its bootstrap interval; S is the minimising set; k0 / k1 / k2: S = ∅ and the minima over "
    "|S| = 1 and |S| = 2. Robust: weighted sign-error over environments (pairs of grid points "
    "that differ in one axis), max / mean / 90th percentile, and the number of environments "
    "kept (lower is better; ½ is chance). Sorted by CMI. Definitions: ANALYSIS.md."
)


def _legend(table: pl.DataFrame) -> str:
    """The ranking table's legend: the definitions, and, from the table's ``reliability``
    column, the measures whose one draw is less reliable than `RELIABLE` (nothing said where no
    measure has a reliability: the runs stored one draw each)."""
    rel = [(r["measure"], r["reliability"]) for r in table.iter_rows(named=True)
           if r.get("reliability") is not None and np.isfinite(r["reliability"])]
    low = sorted((v, m) for m, v in rel if v < RELIABLE)
    said = ""
    if low:
        said = (f" Here {len(low)} of the {len(rel)} measures with a reliability stay below {RELIABLE:g} for one "
                "draw: " + ", ".join(f"{esc(figures.short_name(m))} {num(v, '.2f')}" for v, m in low)
                + "; read their τ with that in mind.")
    elif rel:
        said = f" Here all {len(rel)} measures with a reliability reach {RELIABLE:g} for one draw."
    return _DEFINITIONS.format(reliability=said, missing=MISSING)




def _png(fig, name: str, caption: str = "", dpi: int = 144) -> str:
    width = int(round(fig.get_figwidth() * 96))
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure><img class="fig" data-fig="{esc(name)}" alt="{esc(name)}" width="{width}" '
            f'src="{png_uri(fig, dpi)}">{cap}</figure>')


def _bg(v, cmap: str, lo: float, hi: float) -> str:
    """A pale background colour for a table cell holding ``v``."""
    if v is None or not np.isfinite(v) or hi <= lo:
        return ""
    r, g, b, _ = colormaps[cmap](min(max((v - lo) / (hi - lo), 0.0), 1.0))
    mix = [int(255 * (0.62 + 0.38 * c)) for c in (r, g, b)]  # most of the way to white: text stays legible
    return f' style="background:rgb({mix[0]},{mix[1]},{mix[2]})"'


def _kv(rows: list[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(
        f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _total(df: pl.DataFrame, cols: list[str]) -> float:
    return float(sum(df[c].cast(pl.Float64).fill_nan(None).sum() or 0.0 for c in cols))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _share(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.0f} %)" if total else str(n)


# ------------------------------------------------------------ sections


def _glance(runs: pl.DataFrame, pop: pl.DataFrame, include_unconverged: bool) -> str:
    total = runs.height
    status = runs["status"] if "status" in runs.columns else pl.Series([], dtype=pl.String)
    ok = runs.filter(pl.col("status") == "ok") if "status" in runs.columns else runs
    conv = ok.filter(pl.col("converged").fill_null(False)) if "converged" in ok.columns else ok
    rows = [
        ("runs stored", str(total)),
        ("ok and converged", _share(conv.height, total)),
        ("ok, not converged", _share(ok.height - conv.height, total)),
        ("diverged", _share(int((status == "diverged").sum()), total)),
        ("failed", _share(int((status == "failed").sum()), total)),
        ("enter the analysis", f"{pop.height} (" + ("ok runs, converged or not" if include_unconverged
                                                     else "ok and converged runs") + ")"),
    ]
    for col in ("dataset", "model"):
        if col in runs.columns:
            rows.append((col + "s", ", ".join(esc(d) for d in sorted(runs[col].drop_nulls().unique().to_list()))))
    if "seed" in runs.columns:
        rows.append(("seeds", str(runs["seed"].n_unique())))
    n_measures = sum(map(is_measure, runs.columns))
    rows.append(("measures", str(n_measures)))
    if "train_seconds" in runs.columns:
        train = _total(runs, ["train_seconds"])
        measured = _total(runs, ["measure_seconds"] if "measure_seconds" in runs.columns
                          else [c for c in runs.columns if is_seconds(c)])
        rows.append(("compute", f"{_duration(train)} training, {_duration(measured)} measures"))
    if pop.height and "gap" in pop.columns:
        g = pop["gap"].cast(pl.Float64).drop_nans().drop_nulls().to_numpy()
        if g.size:
            q = np.quantile(g, [0.0, 0.25, 0.5, 0.75, 1.0])
            rows.append(("gap (analysed runs)", f"median {q[2]:.3f}, quartiles {q[1]:.3f} – {q[3]:.3f}, "
                                                f"range {q[0]:.3f} – {q[4]:.3f}"))
    parts = [_kv(rows), _axes_table(runs)]
    if "status" in runs.columns and "error" in runs.columns:
        errs = (runs.filter(pl.col("status") != "ok").filter(pl.col("error").is_not_null())
                .with_columns(pl.col("error").cast(pl.String).str.split("\n").list.first().str.slice(0, 160))
                .group_by("error").len().sort("len", descending=True).head(5))
        if errs.height:
            parts.append("<h3>Most frequent errors</h3>" + _kv(
                [(str(n), f'<span class="err">{esc(e)}</span>') for e, n in errs.iter_rows()]))
    return "\n".join(parts)


def _axes_table(runs: pl.DataFrame) -> str:
    axes = [c for c in runs.columns if is_hp(c)]
    if not axes:
        return ""
    body = []
    for a in axes:
        counts = runs.group_by(a).len().sort(a, nulls_last=True)
        vals = ", ".join(f"{esc(num(v, 'g'))} <span class=meta>({n})</span>"
                         for v, n in counts.iter_rows())
        body.append(f'<tr><td class="l">{esc(name_of(a))}</td><td class="l">{vals}</td></tr>')
    return ('<h3>Grid</h3><table><tr><th class="l">axis</th><th class="l">values (runs stored)</th></tr>'
            + "".join(body) + "</table>")


_PLAIN = ("cmi_k0", "cmi_k1", "cmi_k2")
_ROBUST = ("robust_max", "robust_mean", "robust_p90", "robust_envs")
_RELIABILITY = ("reliability", "tau_ceiling")


def _rank_html(table: pl.DataFrame, table_id: str = "rank", dups: dict[str, str] | None = None,
               scored: str | None = None) -> str:
    """The ranking table with its sort keys (``data-v``), family column and the controls of
    ``analysis.interactive``; the reliability and robust columns only where some measure has them.
    ``dups``: a measure folded into another (`analysis.folding`) → that one, named in its cell;
    ``scored``: the user's measure, highlighted."""
    dups = dups or {}
    psi_axes = [c for c in table.columns if c.startswith("psi_")]
    cmi_max = max([v for v in table["cmi"].to_list() if v is not None and np.isfinite(v)] or [0.0]) \
        if "cmi" in table.columns else 0.0
    plain = _PLAIN + (_ROBUST if interactive.has_robust(table) else ())
    rel = interactive.has_values(table, _RELIABILITY)
    th = lambda label, cls="": f'<th data-type="num"{cls}>{label}</th>'  # noqa: E731
    head = (['<th class="l" data-type="text">measure</th>', '<th class="l" data-type="text">family</th>',
             th("n"), th("τ"), th("95 % CI", ' class="ci"')] + ([th("reliability"), th("τ ceiling")] if rel else []) + [th("Ψ")]
            + [th(f"ψ<sub>{esc(c[4:])}</sub>") for c in psi_axes]
            + [th("CMI"), th("95 % CI", ' class="ci"'), '<th class="l" data-type="text">S</th>']
            + [th(lab) for lab in ("k0", "k1", "k2", "robust max", "mean", "p90", "envs")[:len(plain)]])
    body = []
    for r in table.iter_rows(named=True):
        g = r.get
        v = lambda c: interactive.sort_key(g(c))  # noqa: E731
        tw = " wide" if _wide(g("tau_lo"), g("tau_hi"), "tau") else ""  # greyed out: the interval says little
        cw = " wide" if _wide(g("cmi_lo"), g("cmi_hi"), "cmi") else ""
        name = figures.short_name(r["measure"])
        first = interactive.measure_cells(r["measure"], name)
        if r["measure"] in dups:
            first = first.replace("</td>", f' <span class="fold">= {esc(figures.short_name(dups[r["measure"]]))}'
                                  "</span></td>", 1)
        cells = [first, f"<td{v('n_models')}>{num(g('n_models'))}</td>",
                 f"<td class='tau{tw}'{v('tau')}{_bg(g('tau'), 'RdBu_r', -1, 1)}>{num(g('tau'), '+.3f')}</td>",
                 f'<td class="ci{tw}"{v("tau_lo")}>{interval(g("tau_lo"), g("tau_hi"), "+.2f")}</td>']
        cells += [f"<td{v(c)}>{num(g(c), '.2f')}</td>" for c in _RELIABILITY if rel]
        cells += [f"<td{v('psi')}{_bg(g('psi'), 'RdBu_r', -1, 1)}>{num(g('psi'), '+.3f')}</td>"]
        cells += [f"<td{v(c)}{_bg(g(c), 'RdBu_r', -1, 1)}>{num(g(c), '+.2f')}</td>" for c in psi_axes]
        cset = g("cmi_set")
        cells += [f"<td class='cmi{cw}'{v('cmi')}{_bg(g('cmi'), 'Blues', 0, cmi_max)}>{num(g('cmi'))}</td>",
                  f'<td class="ci{cw}"{v("cmi_lo")}>{interval(g("cmi_lo"), g("cmi_hi"), ".3f")}</td>',
                  f'<td class="l">{esc(cset) if cset else "∅" if cset is not None else MISSING}</td>']
        cells += [f"<td{v(c)}>{num(g(c))}</td>" for c in plain]
        extra = (f' data-folded-into="{esc(dups[r["measure"]])}"' if r["measure"] in dups else "") + (
            ' class="scored"' if r["measure"] == scored else "")
        body.append(f'<tr data-measure="{esc(name)}" data-family="{esc(interactive.family(r["measure"]))}"{extra}>'
                    + "".join(cells) + "</tr>")
    families = [interactive.family(m) for m in table["measure"].to_list()]
    return (interactive.controls(table_id, families)
            + f'<div class="wrap"><table class="rank" id="{esc(table_id)}"><thead><tr>' + "".join(head)
            + "</tr></thead><tbody>" + "\n".join(body) + "</tbody></table></div>")


def _dataset_sections(ds: str | None, pop: pl.DataFrame, table: pl.DataFrame | None,
                      error: str | None, top: int, scored: str | None = None) -> dict[str, str]:
    tag = f" — {esc(ds)}" if ds is not None else ""
    key = f"-{ds}" if ds is not None else ""
    out = {}
    out["gap"] = _png(figures.gap_by_axis(pop), f"gap{key}",
                      f"The generalization gap (train − test accuracy) of the analysed runs per value of each axis{tag}: "
                      "boxes show quartiles, dots are runs.")
    if table is None:
        msg = f'<p class="err">No ranking{tag}: {esc(error)}</p>'
        return {**out, "headline": msg, "rank": msg, "psi": msg, "cmi": msg, "scatter": msg, "forest": msg}
    table = sort_ranking(table)
    dups = duplicates(pop, table["measure"].to_list())
    out["headline"] = _headline(table.filter(~pl.col("measure").is_in(list(dups))), noise_floor(pop), small_study(pop))
    out["forest"] = forest_section(table, folded_into(dups), set(dups), scored)
    out["rank"] = _rank_html(table, f"rank{key}", dups, scored) + f'<p class="note">{_legend(table)}</p>'
    if "robust_envs" in table.columns and not interactive.has_robust(table):
        out["rank"] += ('<p class="note" id="no-robust">The robust sign-error columns are hidden: they would be '
                        "empty, since no environment (two grid points differing in one axis) reaches the "
                        "minimum effective sample size (--min-ess, 12 by default). Its samples are the seed "
                        "pairings of the two points, so a study needs more seeds (or a lower --min-ess) for "
                        "these columns.</p>")
    if not interactive.has_values(table, _RELIABILITY):
        out["rank"] += ('<p class="note" id="no-reliability">The reliability and τ ceiling columns are hidden: '
                        "they would be empty, since the runs stored one draw of each measure (they need "
                        "[measures] repeats &gt; 1, which stores the spread of the redraws).</p>")
    out["psi"] = _png(figures.psi_heatmap(table, title=f"Granulated τ per axis{tag}", highlight=scored), f"psi{key}",
                      "ψ per axis: how well the measure orders runs that differ only in that axis "
                      "(red: larger measure, larger gap; blue: the reverse).")
    out["cmi"] = _png(figures.cmi_heatmap(table, title=f"CMI per conditioning set{tag}", highlight=scored), f"cmi{key}",
                      "Normalised CMI with the gap's order given the values of the axes in S; "
                      "the minimum (last column, set at the right) is the measure's score.")
    lead = figures.leading_measures(table.filter(~pl.col("measure").is_in(list(dups))), top)
    if scored is not None and scored in table["measure"].to_list() and scored not in lead:
        lead = [*lead[: max(top - 1, 0)], scored]  # the user's measure is always drawn
    fig = figures.measure_scatter(pop, lead, table, highlight=scored)
    out["scatter"] = _png(fig, f"scatter{key}", f"The {len(lead)} leading measures (by CMI, then |τ|) against "
                          f"the gap{tag}; point at a run to see its id, hyper-parameters, gap and value.")
    if lead:
        cols = [figures._measure_col(pop, m) for m in lead]
        out["scatter"] = interactive.queryable(out["scatter"], interactive.scatter_points(fig, pop, cols))
    return out


def _artifact_section(pop: pl.DataFrame, kind: str) -> str:
    if kind == "hessian":
        fig, drawn, what = figures.hessian_spectra(pop), "spectral", "Hessian spectral density"
        cap = ("Hessian eigenvalue density per run (stochastic Lanczos quadrature, smoothed), coloured by the "
               "run's gap; logarithmic density axis.")
    else:
        fig, drawn, what = figures.landscape_curves(pop), "curves", "loss-landscape curve"
        cap = ("Training loss along random filter-normalised directions δ, L(w + t·δ), one curve per run "
               "coloured by the run's gap.")
    if fig is None:
        cols = " and ".join(f"<code>{esc(c)}</code>" for a in ARTIFACTS.values() if a.kind == drawn
                            for c in (a.column, artifact_col(a.x)))
        return f'<p class="note">The analysed runs stored no {what} (no list columns {cols}).</p>'
    return _png(fig, kind, cap)


# ------------------------------------------------------------ setup, headline, warnings

WIDE = {"tau": 1.0, "cmi": 0.5}  # an interval wider than half the statistic's range is greyed out


def _dicts(runs: pl.DataFrame, col: str) -> list[dict]:
    """Each row's ``config`` / ``versions`` as a dict, whether decoded into a struct or stored as JSON."""
    if col not in runs.columns:
        return []
    out = []
    for v in runs[col].to_list():
        if isinstance(v, str):
            try:
                v = json.loads(v) if v else None
            except ValueError:
                v = None
        if isinstance(v, dict):
            out.append(v)
    return out


def _values(dicts: list[dict], *path: str) -> list:
    """The distinct non-null values at ``path`` in ``dicts``, sorted as text."""
    seen = {}
    for d in dicts:
        for k in path:
            d = d.get(k) if isinstance(d, dict) else None
        if d is not None and d != [] and d != {}:
            seen.setdefault(json.dumps(d, sort_keys=True, default=str), d)
    return _sorted(seen.values())


def _sorted(vals) -> list:
    """Numbers in numeric order before anything else in text order."""
    def key(v):
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        return (0, float(v), "") if ok else (1, 0.0, str(v))
    return sorted(vals, key=key)


def _options(dicts: list[dict]) -> str:
    """Several option dicts as ``key value, value; …`` (each key's distinct values)."""
    keys = sorted({k for d in dicts for k in d})
    return "; ".join(f"{esc(k)} {_show(_values(dicts, k))}" for k in keys)


def _show(vals: list, missing: str = MISSING) -> str:
    if not vals:
        return f'<span class="meta">{missing}</span>'
    return ", ".join(esc(", ".join(num(x, "g") for x in v) if isinstance(v, list) else
                          json.dumps(v, sort_keys=True) if isinstance(v, dict) else num(v, "g")) for v in vals)


def _column_values(runs: pl.DataFrame, col: str) -> list:
    return _sorted(runs[col].drop_nulls().unique().to_list()) if col in runs.columns else []


def _setup(runs: pl.DataFrame, pop: pl.DataFrame) -> str:
    """What the study is: data, model, training, grid, measures, code and hardware (from the rows)."""
    cfg, ver = _dicts(runs, "config"), _dicts(runs, "versions")
    ok = population(runs, include_unconverged=True)
    conv = population(runs)
    model = _show(_column_values(runs, "model") or _values(cfg, "model"))
    opts = _values(cfg, "model_options")
    if opts:
        model += " <span class=meta>(" + _options(opts) + ")</span>"
    train = _column_values(runs, "n_train") or _values(cfg, "data", "train_size")
    axes = [c for c in runs.columns if is_hp(c)]
    grid = "; ".join(f"{esc(name_of(a))}: {_show(_column_values(runs, a))}" for a in axes) or "none"
    seeds = _column_values(runs, "seed")
    measures = [f"include {_show(_values(cfg, 'measures', 'include'), 'all')}",
                f"exclude {_show(_values(cfg, 'measures', 'exclude'), 'none')}"]
    subsets = _values(cfg, "measures", "subset")
    if subsets:
        measures.append("on " + ", ".join("all examples" if v in (0, None) else f"a subset of {esc(num(v, 'g'))} examples"
                                          for v in subsets))
    if _values(cfg, "measures", "repeats"):
        measures.append(f"repeats {_show(_values(cfg, 'measures', 'repeats'))}")
    lib = sorted({k for d in ver for k in d if k not in ("git", "study", "schema")})
    rows = [
        ("dataset", _show(_column_values(runs, "dataset") or _values(cfg, "dataset"))),
        ("model family", model),
        ("networks", f"{runs.height} stored, {ok.height} trained without failure, {conv.height} converged; "
                     f"{pop.height} analysed"),
        ("train / test examples", f"{_show(train)} / {_show(_column_values(runs, 'n_test'))}"),
        ("target loss", _show(_values(cfg, "train", "target_loss"))),
        ("optimizer", _show(_values(cfg, "train", "optimizer"))),
        ("max epochs", _show(_values(cfg, "train", "max_epochs"))),
        ("grid axes", grid),
        ("seeds", f"{len(seeds)}: {_show(seeds)}"),
        ("measures", "; ".join(measures) + f" <span class=meta>({sum(map(is_measure, runs.columns))} columns)</span>"),
        ("code", f"study {_show(_values(ver, 'study'))}, schema {_show(_values(ver, 'schema'))}, "
                 f"git commit <code>{_show(_values(ver, 'git'), 'not recorded')}</code>"),
        ("libraries", "; ".join(f"{esc(k)} {_show(_values(ver, k))}" for k in lib) or _show([])),
        ("device", _show(_column_values(runs, "device"))),
    ]
    return '<div id="setup-block">' + _kv(rows) + "</div>"


def _warning(pop: pl.DataFrame) -> str:
    why = small_study(pop)
    if not why:
        return ""
    return ('<div class="warn" id="too-small"><b>This study is too small to rank the measures with confidence:</b> '
            + "; ".join(esc(w) for w in why) + f". The page warns at {esc(SMALL_RULE)}. Statistics whose bootstrap "
            "interval is wider than half their range (τ: more than 1.0 of [−1, 1]; CMI: more than 0.5 of [0, 1]) "
            "are greyed out in the table.</div>")


def _wide(lo, hi, stat: str) -> bool:
    return lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi) and hi - lo > WIDE[stat]


def _names(ms: list[str], most: int = 6) -> str:
    shown = ", ".join(esc(figures.short_name(m)) for m in ms[:most])
    return shown + (f" and {len(ms) - most} more" if len(ms) > most else "")


def _conclusion(rows: dict, finite: list[str], floor: NoiseFloor | None, small: list[str]) -> str:
    """One sentence on the measures with a CMI: the leading group is the best measure and those whose CMI
    interval overlaps its interval. A group of at most max(3, a tenth of the measures) is
    distinguishable from the rest; otherwise no measure stands out, and the sentence says why (the
    small-study and noise reasons, else wide intervals) and what study would separate them."""
    tied = _tied(rows, finite)
    if tied is None:
        return ("Whether any measure is distinguishable from the others is not decided here: the ranking has no "
                "bootstrap intervals (n_boot = 0).")
    lo, hi = rows[finite[0]]["cmi_lo"], rows[finite[0]]["cmi_hi"]
    lead = [finite[0]] + tied
    below = [m for m in finite if m not in lead]
    noisy = [esc(w) for w in noise_reasons(floor)] if floor is not None else []
    if below and len(lead) <= max(3, len(finite) // 10):
        caveat = f" — though {noisy[0]}" if noisy else ""
        return (f"Distinguishable: {_names(lead)} (CMI intervals overlapping the best one's {interval(lo, hi, '.3f')}) "
                f"rank above the other {len(below)} measures, whose intervals lie entirely below it{caveat}.")
    why = [esc(w) for w in small] + noisy or [f"the intervals are wide at {floor.n_runs if floor else '?'} networks"]
    need = []
    if floor is not None and (floor.noisy or not floor.configs):
        if floor.seeds_needed == np.inf:
            need.append("settings that move the gap beyond its seed noise (at ICC ≤ 0 no number of seeds helps)")
        else:
            need.append(esc(floor.seeds_text()) + (" (the mean over a configuration's seeds as the outcome)"
                                                   if floor.configs else ""))
        if np.isfinite(floor.n_test):
            need.append(f"a test set larger than {floor.n_test:,.0f} examples")
    if floor is not None and floor.n_runs < MIN_NETWORKS:
        need.append(f"at least {MIN_NETWORKS} networks")
    if not need:
        need.append("more networks, so that the intervals narrow")
    worse = (f"; {len(below)} ({_names(below, 3)}) lie entirely below it" if below else "")
    return (f"No measure is distinguishable from the best: its CMI interval {interval(lo, hi, '.3f')} overlaps those of "
            f"{len(tied)} of the other {len(finite) - 1} measures{worse}, because " + "; ".join(why)
            + "; a study that could separate them needs " + _and(need) + ".")


def _tied(rows: dict, finite: list[str]) -> list[str] | None:
    """The measures whose CMI interval overlaps the best one's (``finite[0]``); None when the best
    has no interval (no bootstrap)."""
    lo, hi = rows[finite[0]].get("cmi_lo"), rows[finite[0]].get("cmi_hi")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return [m for m in finite[1:] if rows[m].get("cmi_lo") is not None and rows[m].get("cmi_hi") is not None
            and rows[m]["cmi_lo"] <= hi and rows[m]["cmi_hi"] >= lo]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _headline(table: pl.DataFrame, floor: NoiseFloor | None = None, small: list[str] = (), top: int = 3) -> str:
    """The conclusion in one sentence (:func:`_conclusion`), the outcome's noise floor, the leading
    measures, the set indistinguishable from the best, and the significantly negative ones."""
    table = sort_ranking(table)
    rows = {r["measure"]: r for r in table.iter_rows(named=True)}
    finite = [m for m, r in rows.items() if r.get("cmi") is not None and np.isfinite(r["cmi"])]
    if not finite:
        return '<p class="note">No measure has a defined CMI: no headline.</p>'

    def named(m: str) -> str:
        r = rows[m]
        ci = interval(r.get("cmi_lo"), r.get("cmi_hi"), ".3f")
        return (f"<b>{esc(figures.short_name(m))}</b> (CMI {num(r['cmi'])}"
                f"{'' if ci == MISSING else ' ' + ci}, τ {num(r.get('tau'), '+.3f')})")

    parts = [f'<p class="conclusion" id="conclusion">{_conclusion(rows, finite, floor, list(small))}</p>']
    if floor is not None:
        parts.append(f'<p class="floor" id="noise-floor">Noise floor of the outcome: {esc(floor.text())}.</p>')
    lead, best, tied = finite[:top], rows[finite[0]], _tied(rows, finite)
    parts.append(f'<p class="lead">Leading measure{"s" if len(lead) > 1 else ""} by CMI: '
                 + "; ".join(named(m) for m in lead) + ".</p>")
    rule = ("the measures whose CMI bootstrap interval (cmi_lo – cmi_hi) overlaps the best measure's "
            "interval")
    if tied is None:
        parts.append(f"<p>Statistically indistinguishable from the best ({rule}): not defined, the ranking "
                     "has no bootstrap intervals (n_boot = 0).</p>")
    else:
        parts.append(f'<div class="para">Statistically indistinguishable from the best, defined as {rule} '
                     f"{interval(best['cmi_lo'], best['cmi_hi'], '.3f')}: "
                     + (_listed(tied) if tied else "none") + ("" if len(tied) > 8 else ".") + "</div>")
    neg = [m for m, r in rows.items() if r.get("tau_hi") is not None and np.isfinite(r["tau_hi"])
           and r["tau_hi"] < 0]
    no_tau_ci = all(r.get("tau_hi") is None or not np.isfinite(r["tau_hi"]) for r in rows.values())
    parts.append("<p>Significantly negative (τ interval entirely below 0): " + (
                 "not defined, the ranking has no bootstrap intervals (n_boot = 0)" if no_tau_ci else
                 ", ".join(f"{esc(figures.short_name(m))} (τ {num(rows[m]['tau'], '+.3f')} "
                              f"{interval(rows[m]['tau_lo'], rows[m]['tau_hi'], '+.2f')})" for m in neg)
                    if neg else "none") + ".</p>")
    return '<div class="headline">' + "".join(parts) + "</div>"


def _listed(ms: list[str], most: int = 8) -> str:
    """Measure names, folded into a <details> when more than ``most`` (the conclusion comes first)."""
    names = ", ".join(esc(figures.short_name(m)) for m in ms)
    if len(ms) <= most:
        return f"{names} ({len(ms)} measures)"
    return f'<details class="inline"><summary>{len(ms)} measures</summary>{names}</details>'


def _cost(runs: pl.DataFrame) -> str:
    """Median seconds per measure and its share of the run's measuring time, over the ok runs."""
    ok = population(runs, include_unconverged=True)
    cols = [c for c in ok.columns if is_seconds(c)]
    if not cols or ok.height == 0:
        return '<p class="note">The runs stored no per-measure times (no <code>seconds.*</code> columns).</p>'
    total = (ok["measure_seconds"].cast(pl.Float64) if "measure_seconds" in ok.columns
             else ok.select(pl.sum_horizontal(pl.col(c).cast(pl.Float64) for c in cols)).to_series())
    total = total.fill_nan(None).replace(0.0, None)
    rows = sorted(((name_of(c), ok[c].cast(pl.Float64).fill_nan(None)) for c in cols),
                  key=lambda r: -(r[1].median() if r[1].median() is not None else -1.0))
    family_table = _family_cost(ok, cols, total)
    body = "".join(f'<tr><td class="l">{esc(m)}</td>{_cost_cells(sec, total)}<td>{sec.count()}</td></tr>'
                   for m, sec in rows)
    return (family_table + '<div class="wrap"><table class="cost"><tr><th class="l">measure</th><th>median s</th>'
            "<th>median share</th><th>share of all</th><th>runs</th></tr>" + body + "</table></div>"
            '<p class="note">Seconds a measure took per run (<code>seconds.&lt;measure&gt;</code>), the median '
            "over the runs that trained without failure; share: those seconds over the run's measuring time "
            "(<code>measure_seconds</code>), the median per run and the total over all runs. Work shared by "
            "several measures (a Hessian spectrum, a sharpness search, …) is charged in equal parts to the "
            "measures that use it (rows written before the study split shared work may charge it "
            "otherwise), so a measure's cost here is not what it would take alone. A family's seconds "
            "are the sum of its measures' per run (families from <code>analysis/measure_info.json</code>; "
            "a measure it does not know, such as a score of your own, counts as \u201cother\u201d).</p>")


def _cost_cells(sec: pl.Series, total: pl.Series) -> str:
    """Cells of seconds per run ``sec`` against the runs' measuring time ``total``: the median,
    the median share per run, and the share of the total over all runs."""
    share = (sec / total).drop_nulls().median()
    of_all = sec.sum() / (total.sum() or np.nan)
    return (f"<td>{num(sec.median(), '.3g')}</td><td>{num(None if share is None else 100 * share, '.1f', unit=' %')}</td>"
            f"<td>{num(None if of_all is None else 100 * of_all, '.1f', unit=' %')}</td>")


def _family_cost(ok: pl.DataFrame, cols: list[str], total: pl.Series) -> str:
    """Per measure family: the median over runs of its measures' summed seconds, and its share
    of the run's measuring time (median per run, and of the total)."""
    info = measure_info.load()
    families: dict[str, list[str]] = {}
    for c in cols:
        families.setdefault(info.get(name_of(c), {}).get("family", "other"), []).append(c)
    rows = sorted(((fam, len(fcols), ok.select(pl.sum_horizontal(
                       pl.col(c).cast(pl.Float64).fill_nan(None) for c in fcols)).to_series())
                   for fam, fcols in families.items()),
                  key=lambda r: -(r[2].median() if r[2].median() is not None else -1.0))
    body = "".join(f'<tr><td class="l">{esc(f)}</td><td>{k}</td>{_cost_cells(sec, total)}</tr>'
                   for f, k, sec in rows)
    return ('<div class="wrap"><table class="cost family-cost"><tr><th class="l">family</th><th>measures</th>'
            "<th>median s</th><th>median share</th><th>share of all</th></tr>" + body + "</table></div>")


# ------------------------------------------------------------ entry point


def write_report(source, out_path, *, include_unconverged: bool = False, top: int = 6,
                 on_corrupt: str = "error", runs: pl.DataFrame | None = None, run: str | None = None,
                 scored: str | None = None, **rank_options) -> Path:
    """Write the HTML report of the runs at ``source`` to ``out_path``; return the path.

    ``source``: a runs folder, a study folder, a consolidated Parquet file or
    a URI (as ``analysis.load.load_runs``, which also takes ``on_corrupt``).
    ``top``: how many leading measures to plot against the gap. ``runs``: the runs already read
    (with columns added in memory, as `analysis score` does); ``source`` then only names them.
    ``run``: the run id (or a unique prefix) shown in depth (RunsError if none has it; None: the
    median-gap network, `analysis.network_view`). ``scored``: a measure of the user's (`analysis score`),
    highlighted wherever it appears and shown first in the scatter.
    ``rank_options`` go to ``analysis.table.rank_table``; a measure column whose rows mix
    settings raises its :class:`~analysis.load.MixedSettingsError` (``allow_mixed=True`` ranks it).
    """
    source = os.fspath(source) if isinstance(source, os.PathLike) else source
    if runs is None:
        runs = load_runs(source, include_unconverged=True, include_failed=True, on_corrupt=on_corrupt)
    pop = population(runs, include_unconverged=include_unconverged)
    network = network_view.network_section(runs, pop, run, source)  # before the ranking: a bad id fails fast
    datasets = sorted(pop["dataset"].drop_nulls().unique().to_list()) if "dataset" in pop.columns else []
    table, error = None, None
    if pop.height < 2:
        error = (f"{pop.height} run(s) enter the analysis; at least 2 are needed"
                 + ("" if include_unconverged else " (include_unconverged=True admits unconverged runs)"))
    else:
        try:
            table = rank_table(pop, include_unconverged=include_unconverged, **rank_options)
        except MixedSettingsError:  # refused, not reported: the page would rank nothing
            raise
        except RunsError as e:  # input that cannot be ranked: say why on the page
            error = f"the ranking failed: {e}"
    names = table["dataset"].unique(maintain_order=True).to_list() if table is not None else datasets
    multi = len(names) > 1
    secs: dict[str, list[str]] = {k: [] for k in ("gap", "headline", "rank", "psi", "cmi", "scatter", "forest")}
    for ds in (names if multi else [None]):
        p = pop.filter(pl.col("dataset") == ds) if ds in datasets else pop
        t = table.filter(pl.col("dataset") == ds) if ds is not None and table is not None else table
        for k, v in _dataset_sections(ds, p, t, error, top, scored).items():
            secs[k].append((f"<h3>{esc(ds)}</h3>" if multi else "") + v)

    views = _linked(pop, table, scored)
    studies = sorted(runs["study"].drop_nulls().unique().to_list()) if "study" in runs.columns else []
    title = "Generalization measures" + (f": {', '.join(map(str, studies))}" if studies else "")
    opts = {"include_unconverged": include_unconverged, "top": top, **rank_options}
    toc = [("headline", "Conclusion"), ("forest", "τ and Ψ"), ("ranking", "Ranking"), ("explore", "Explore"),
           ("setup", "Setup"), ("glance", "At a glance"), ("psi", "ψ per axis"), ("cmi", "CMI"),
           ("scatter", "Leading measures"), ("cost", "Cost"), ("hessian", "Hessian spectra"),
           ("landscape", "Loss landscape"), ("network", "One network")]
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<div class="meta">source <code>{esc(source)}</code> · written '
        f'{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · options '
        f'{esc(", ".join(f"{k}={v}" for k, v in opts.items()))}</div>',
        "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in toc) + "</nav>",
        _warning(pop), '<h2 id="headline">Conclusion</h2>', *secs["headline"],
        '<h2 id="forest">How sure: τ and Ψ of every measure</h2>', *secs["forest"],
        '<h2 id="ranking">Ranking of the measures</h2>', *secs["rank"],
        '<h2 id="explore">Explore the networks</h2>', views,
        '<h2 id="setup">Setup</h2>', _setup(runs, pop),
        '<h2 id="glance">At a glance</h2>', _glance(runs, pop, include_unconverged),
        "<h3>The gap per axis</h3>", *secs["gap"],
        '<h2 id="psi">Granulated τ (ψ) per axis</h2>', *secs["psi"],
        '<h2 id="cmi">Conditional mutual information</h2>', *secs["cmi"],
        '<h2 id="scatter">Leading measures against the gap</h2>', *secs["scatter"],
        '<h2 id="cost">Cost of the measures</h2>', _cost(runs),
        '<h2 id="hessian">Hessian spectra</h2>', _artifact_section(pop, "hessian"),
        '<h2 id="landscape">Loss landscape</h2>', _artifact_section(pop, "landscape"),
        '<h2 id="network">One network in depth</h2>', network,
    ]
    write(out_path, page(title, body, interactive.script(linked.SCRIPT)))
    return Path(out_path)


def _linked(pop: pl.DataFrame, table: pl.DataFrame | None, scored: str | None) -> str:
    """The linked views (`analysis.linked`) over every analysed network, measures in ranking order."""
    if pop.height == 0 or "gap" not in pop.columns:
        return '<p class="note">No analysed network: nothing to explore.</p>'
    if table is not None and table.height:
        order = sort_ranking(table)["measure"].unique(maintain_order=True).to_list()
    else:
        order = []
    order += sorted(name_of(c) for c in pop.columns if is_measure(c) and name_of(c) not in order)
    dups = duplicates(pop, order)
    lead = figures.leading_measures(table.filter(~pl.col("measure").is_in(list(dups))), 3) \
        if table is not None and table.height else []
    return linked.section(linked.linked_data(pop, order, dups, lead, scored))
