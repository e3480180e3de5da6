"""One network in depth: a run's Hessian spectrum, its loss along filter-normalised
directions (1-D curves and, where stored, the 2-D surface), its training curve and every
measure against the study's distribution. Polars, numpy and matplotlib only (no torch, no
Ray): the report's section and notebook 03 both use it.

The run shown is picked by its id (a unique prefix will do); by default the median-gap
network of the analysed population (`default_run`). A run's position among the study's
networks is its percentile: the share of the *other* analysed networks (of its dataset) with a smaller
value, ties counting half (0: the smallest, 100: the largest), over the networks with a
finite value.
"""

from __future__ import annotations

import difflib
import math

import numpy as np
import polars as pl
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from analysis.figures import broadened_density
from analysis.load import RunsError
from analysis.output import esc, num, png_uri
from study.schema import OUTCOMES, artifact_col, is_hp, is_measure, name_of

SURFACE_HINT = ("set loss_surface_points = N (e.g. 11) under [measures.knobs] of the study file, "
                "then `study measure STUDY.toml --measures filter_sharpness`")
PANELS = ("spectrum", "curves", "training", "surface")
_MISSING = {
    "spectrum": f"no Hessian spectrum stored ({artifact_col('hessian_density_weights')}: the measures "
                "hessian_* were not computed)",
    "curves": f"no filter-normalised loss curves stored ({artifact_col('filter_sharpness_curves')}: "
              "filter_sharpness was not computed)",
    "training": f"no training curve stored ({artifact_col('train_loss_curve')}: the run was trained "
                "before the study kept it; any `study measure` of the network adds it from its checkpoint)",
    "surface": f"2-D loss surface not computed: {SURFACE_HINT}",
}


# ------------------------------------------------------------------ choosing a run


def default_run(pop: pl.DataFrame) -> str | None:
    """The run id of the median-gap network of ``pop`` (the lower median; ties by run id), None if none has a gap."""
    if "gap" not in pop.columns or "run_id" not in pop.columns:
        return None
    ok = pop.select("run_id", pl.col("gap").cast(pl.Float64)).filter(pl.col("gap").is_finite())
    if ok.height == 0:
        return None
    ok = ok.sort(["gap", "run_id"])
    return str(ok["run_id"][(ok.height - 1) // 2])


def resolve_run(runs: pl.DataFrame, run_id: str, source: str = "the runs") -> str:
    """The full run id in ``runs`` that ``run_id`` names (itself, or a unique prefix); else RunsError saying what to do."""
    ids = [str(i) for i in runs["run_id"].to_list()] if "run_id" in runs.columns else []
    if run_id in ids:
        return run_id
    starts = [i for i in ids if i.startswith(run_id)] if run_id else []
    if len(starts) == 1:
        return starts[0]
    if len(starts) > 1:
        raise RunsError(f"--run {run_id}: {len(starts)} runs of {source} start with it "
                        f"({', '.join(sorted(starts)[:4])}{', …' if len(starts) > 4 else ''}); give more of the id")
    close = difflib.get_close_matches(run_id, ids, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise RunsError(f"--run {run_id}: no run of {source} has this id{hint}; give one of its {len(ids)} run ids "
                    "(the report's 'One network in depth' lists them; or leave --run out for the median-gap "
                    "network)")


def run_row(runs: pl.DataFrame, run_id: str) -> dict:
    """The row of ``run_id`` as a dict of columns (artifacts as lists)."""
    return runs.filter(pl.col("run_id").cast(pl.String) == run_id).row(0, named=True)


# ------------------------------------------------------- the study's distribution


def percentile(value: float, others) -> float:
    """100 × (#others < value + ½·#others == value) / #others over the finite ``others``; NaN if none or value not finite."""
    x = np.asarray([o for o in others if o is not None], dtype=float)
    x = x[np.isfinite(x)]
    if value is None or not math.isfinite(value) or x.size == 0:
        return math.nan
    return float(100.0 * ((x < value).sum() + 0.5 * (x == value).sum()) / x.size)


def measure_positions(pop: pl.DataFrame, row: dict) -> pl.DataFrame:
    """One row per outcome and measure of ``row``: its value, its percentile among ``pop``'s other networks of
    its dataset and their count, and the median, min and max over those networks and ``row`` itself (so the
    range holds the value)."""
    cols = [c for c in OUTCOMES if c in pop.columns] + sorted(c for c in pop.columns if is_measure(c))
    others = pop.filter(pl.col("run_id").cast(pl.String) != row["run_id"]) if "run_id" in pop.columns else pop
    if "dataset" in others.columns and row.get("dataset") is not None:
        others = others.filter(pl.col("dataset").cast(pl.String) == str(row["dataset"]))
    out = []
    for c in cols:
        v = row.get(c)
        v = float(v) if v is not None else math.nan
        x = others[c].cast(pl.Float64).to_numpy()
        x = x[np.isfinite(x)]
        a = np.append(x, v) if math.isfinite(v) else x
        out.append({"quantity": name_of(c), "kind": "measure" if is_measure(c) else "outcome", "value": v,
                    "percentile": percentile(v, x), "n": int(x.size),
                    "median": float(np.median(a)) if a.size else math.nan,
                    "min": float(a.min()) if a.size else math.nan, "max": float(a.max()) if a.size else math.nan})
    schema = {"quantity": pl.String, "kind": pl.String, "value": pl.Float64, "percentile": pl.Float64,
              "n": pl.Int64, "median": pl.Float64, "min": pl.Float64, "max": pl.Float64}
    return pl.DataFrame(out, schema=schema)


# ------------------------------------------------------------------ the panels


def _array(row: dict, name: str) -> np.ndarray | None:
    v = row.get(artifact_col(name))
    return None if v is None or len(v) == 0 else np.asarray(v, dtype=float)


def available(row: dict) -> dict[str, bool]:
    """Which of `PANELS` the row holds the artifacts of (a surface whose size is not N × N counts as absent)."""
    t, s = _array(row, "loss_surface_t"), _array(row, "loss_surface")
    t1, c = _array(row, "filter_sharpness_t"), _array(row, "filter_sharpness_curves")
    return {"spectrum": _array(row, "hessian_density_nodes") is not None
                        and _array(row, "hessian_density_weights") is not None,
            "curves": t1 is not None and c is not None and c.size % t1.size == 0,
            "training": _array(row, "train_loss_curve") is not None,
            "surface": t is not None and s is not None and s.size == t.size ** 2}


def draw_spectrum(ax, row: dict) -> None:
    """The run's Hessian eigenvalue density (SLQ nodes and weights, Gaussian-smoothed), log y."""
    nodes, weights = _array(row, "hessian_density_nodes"), _array(row, "hessian_density_weights")
    fin = nodes[np.isfinite(nodes)]
    lo, hi = float(fin.min()), float(fin.max())
    span = max(hi - lo, 1e-12)
    grid = np.linspace(lo - 0.05 * span, hi + 0.05 * span, 400)
    dens = broadened_density(nodes, weights, grid, 0.015 * span)
    ax.plot(grid, dens, color="#1f4e79", lw=1.2)
    top = float(np.nanmax(dens)) if np.isfinite(dens).any() else 0.0
    if top > 0:
        ax.set_yscale("log")
        ax.set_ylim(top * 1e-5, top * 2)
    ax.set_title("Hessian eigenvalue density (SLQ)", fontsize=9)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")


def draw_curves(ax, row: dict) -> None:
    """The run's K loss curves L(w + t·δ_k) along filter-normalised directions, with their mean."""
    t = _array(row, "filter_sharpness_t")
    curves = _array(row, "filter_sharpness_curves").reshape(-1, t.size)
    for c in curves:
        ax.plot(t, c, color="#999", lw=0.7, alpha=0.8)
    ax.plot(t, np.nanmean(curves, axis=0), color="#c0392b", lw=1.6, label="mean")
    ax.set_title(f"Loss along {len(curves)} filter-normalised directions", fontsize=9)
    ax.set_xlabel("step t along δ")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7, frameon=False)


def draw_training(ax, row: dict) -> None:
    """The run's mean training loss per epoch (log y), with the target loss where the row's config gives it."""
    loss = _array(row, "train_loss_curve")
    ax.plot(np.arange(1, loss.size + 1), loss, color="#1f4e79", lw=1.2, marker="." if loss.size < 30 else None)
    target = (row.get("config") or {}).get("train", {}) if isinstance(row.get("config"), dict) else {}
    target = target.get("target_loss") if isinstance(target, dict) else None
    if target:
        ax.axhline(float(target), color="#c0392b", lw=0.8, ls="--", label=f"target {float(target):g}")
        ax.legend(fontsize=7, frameon=False)
    if np.all(loss[np.isfinite(loss)] > 0):
        ax.set_yscale("log")
    ax.set_title(f"Training curve ({loss.size} epochs)", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean mini-batch loss")


def draw_surface(ax, row: dict, fig: Figure) -> None:
    """The run's 2-D loss surface L(w + a·δ₁ + b·δ₂) as filled contours (log-spaced levels), w marked."""
    a = _array(row, "loss_surface_t")
    s = _array(row, "loss_surface").reshape(a.size, a.size)
    B, A = np.meshgrid(a, a)
    fin = s[np.isfinite(s) & (s > 0)]
    if fin.size and fin.max() > fin.min():
        levels = np.geomspace(fin.min(), fin.max(), 15)
        cs = ax.contourf(B, A, s, levels=levels, norm=LogNorm(levels[0], levels[-1]), cmap="viridis")
        ax.contour(B, A, s, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
        fig.colorbar(cs, ax=ax, label="training loss", format="%.3g")
    else:
        ax.text(0.5, 0.5, "the surface is flat or not finite: nothing to contour", ha="center",
                va="center", transform=ax.transAxes, fontsize=8)
    ax.plot([0], [0], marker="+", color="#c0392b", ms=10)
    ax.set_title(f"Loss surface ({a.size} × {a.size}, Li et al. 2018)", fontsize=9)
    ax.set_xlabel("b along δ₂")
    ax.set_ylabel("a along δ₁")


def network_figure(row: dict) -> Figure | None:
    """The panels of `PANELS` the row holds, side by side (2 per line); None when it holds none."""
    have = [p for p, ok in available(row).items() if ok]
    if not have:
        return None
    cols = min(2, len(have))
    lines = math.ceil(len(have) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.6 * lines), layout="constrained")
    axes = fig.subplots(lines, cols, squeeze=False).ravel()
    for ax, p in zip(axes, have):
        if p == "surface":
            draw_surface(ax, row, fig)
        else:
            {"spectrum": draw_spectrum, "curves": draw_curves, "training": draw_training}[p](ax, row)
    for ax in axes[len(have):]:
        ax.remove()  # no empty axes
    fig.suptitle(f"Run {row.get('run_id')}", fontsize=10)
    return fig


def missing_notes(row: dict) -> list[str]:
    """Why each panel the row cannot draw is missing, in words."""
    return [_MISSING[p] for p, ok in available(row).items() if not ok]


# ------------------------------------------------------------------ the HTML section



def _img(fig: Figure) -> str:
    return f'<img class="netfig" data-fig="network" alt="one network in depth" src="{png_uri(fig, 110)}">'


def _hps(row: dict) -> str:
    return ", ".join(f"{name_of(k)} = {v}" for k, v in row.items() if is_hp(k))


def _positions_table(pos: pl.DataFrame) -> str:
    rows = []
    for r in pos.iter_rows(named=True):
        p = r["percentile"]
        bar = ("" if not math.isfinite(p) else
               f'<span class="pbar"><span style="left:{p:.1f}%"></span></span>')
        rows.append(f'<tr class="{r["kind"]}"><td class="l">{esc(r["quantity"])}</td><td>{num(r["value"], ".4g")}</td>'
                    f'<td>{num(p, ".0f")}</td><td>{bar}</td><td>{num(r["median"], ".4g")}</td>'
                    f'<td>{num(r["min"], ".4g")} – {num(r["max"], ".4g")}</td><td>{r["n"]}</td></tr>')
    return ('<div class="wrap"><table class="netpos"><tr><th class="l">quantity</th><th>this run</th>'
            "<th>percentile</th><th>0 ⟷ 100</th><th>study median</th><th>study range</th><th>networks</th></tr>"
            + "".join(rows) + "</table></div>")


def _run_list(pop: pl.DataFrame, chosen: str) -> str:
    if "run_id" not in pop.columns:
        return ""
    hp = [c for c in pop.columns if is_hp(c)]
    cols = ["run_id"] + (["seed"] if "seed" in pop.columns else []) + [*hp] + (["gap"] if "gap" in pop.columns else [])
    df = pop.select(cols).with_columns(pl.col("run_id").cast(pl.String))
    df = df.sort("gap", nulls_last=True) if "gap" in df.columns else df
    head = "".join(f"<th>{esc(name_of(c))}</th>" for c in cols)
    body = "".join(
        (f'<tr class="chosen" data-run="{esc(r["run_id"])}">' if r["run_id"] == chosen
         else f'<tr data-run="{esc(r["run_id"])}">')
        + "".join(f"<td>{esc(num(r[c], '.4g') if isinstance(r[c], float) else r[c])}</td>" for c in cols) + "</tr>"
        for r in df.iter_rows(named=True))
    return (f'<details class="runs"><summary>The {df.height} analysed networks, by gap (the one shown '
            "highlighted)</summary><p>To see another: click its row, point or list entry under “Explore the "
            "networks” above, or write the page with <code>analysis report RUNS --run RUN_ID</code> (a unique prefix "
            "of the id will do).</p>"
            f'<div class="wrap"><table class="netruns"><tr>{head}</tr>{body}</table></div></details>')


def network_section(runs: pl.DataFrame, pop: pl.DataFrame, run_id: str | None = None,
                    source: str = "the runs") -> str:
    """The report's 'One network in depth' HTML: ``run_id`` (RunsError if no run has it; None: the median-gap network)."""
    if run_id is not None:
        run_id, why = resolve_run(runs, run_id, source), "chosen with --run"
    else:
        run_id, why = default_run(pop), "the median-gap network; pick another with --run"
    if run_id is None:
        return '<p class="note">Nothing to show: no analysed network has a finite gap.</p>'
    row = run_row(runs, run_id)
    facts = [f"status {esc(row.get('status', 'ok'))}", f"gap {num(row.get('gap'), '.4g')}",
             f"train loss {num(row.get('train_loss'), '.4g')}", f"test acc {num(row.get('test_acc'), '.4g')}",
             f"{esc(num(row.get('epochs')))} epochs"]
    fig = network_figure(row)
    notes = "".join(f'<p class="note">{esc(n)}.</p>' for n in missing_notes(row))
    return "\n".join([
        f'<p id="network-run">Run <code>{esc(run_id)}</code> ({why}): {esc(_hps(row))} · {" · ".join(facts)}.</p>',
        _img(fig) if fig is not None else "", notes,
        "<h3>Its measures among the study's networks</h3>",
        _positions_table(measure_positions(pop, row)),
        '<p class="note">percentile: the share of the other analysed networks of its dataset with a smaller value, ties '
        "counting half (0: the smallest, 100: the largest); study median and range over those networks and this "
        "one.</p>",
        _run_list(pop, run_id),
    ])
