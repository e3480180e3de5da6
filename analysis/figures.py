"""Figures of a study: each function returns a matplotlib ``Figure``.

The figures are drawn on the Agg canvas directly (``Figure`` +
``FigureCanvasAgg``), so importing this module never changes the global
matplotlib backend of a notebook. Inputs are the runs table (row schema of
DESIGN.md) and the ranking table of ``analysis.table.rank_table``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.load import sort_ranking
from analysis.output import MISSING, num
from study.schema import ARTIFACTS, Artifact, artifact_col, is_hp, measure_col, name_of

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "figure.dpi": 100,
    "savefig.dpi": 110,
}

@contextmanager
def _style():
    with rc_context(_STYLE):
        yield


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _empty(message: str, width: float = 6.0, height: float = 1.2) -> Figure:
    """A small figure that states why there is nothing to draw."""
    with _style():
        fig = _figure(width, height)
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, message, ha="center", va="center", color="#555")
    return fig


def short_name(name: str) -> str:
    """A column name without its schema prefix (``measure.``, ``hp.``, ``artifact.`` …) or ``psi_``."""
    return name[len("psi_"):] if name.startswith("psi_") else name_of(name)


def varying_axes(df: pl.DataFrame) -> list[str]:
    """The ``hp.*`` columns that take two or more values in ``df``."""
    return [c for c in df.columns if is_hp(c) and df[c].drop_nulls().n_unique() > 1]


def _panels(n: int, max_cols: int, cell: tuple[float, float], pad: tuple[float, float], **kw):
    """A figure of ``n`` panels, at most ``max_cols`` a row, each cell ``cell`` inches plus ``pad``
    in all, the cells left over hidden: (figure, axes, columns)."""
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = _figure(cell[0] * cols + pad[0], cell[1] * rows + pad[1])
    axes = fig.subplots(rows, cols, squeeze=False, **kw).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes, cols


# --------------------------------------------------------------- the gap


def gap_by_axis(df: pl.DataFrame, axes: list[str] | None = None, *, outcome: str = "gap",
                title: str | None = None) -> Figure:
    """Distribution of ``outcome`` (default the generalization gap) for each value of each axis.

    One panel per axis: a box plot per value with the runs overlaid as a
    jittered strip. ``axes`` defaults to the ``hp.*`` columns that vary.
    """
    axes = varying_axes(df) if axes is None else axes
    if df.height == 0 or outcome not in df.columns:
        return _empty(f"no runs with a '{outcome}' to show")
    with _style():
        n = max(len(axes), 1)
        fig, panels, cols = _panels(n, 4, (2.6, 2.4), (0.4, 0.3), sharey=True)
        rng = np.random.default_rng(0)
        if not axes:  # no axis varies: one box of all runs
            y = df[outcome].cast(pl.Float64).to_numpy()
            y = y[np.isfinite(y)]
            panels[0].boxplot([y], widths=0.5, showfliers=False)
            panels[0].scatter(1 + rng.uniform(-0.15, 0.15, y.size), y, s=8, alpha=0.5, color="#1f77b4")
            panels[0].set_xticks([1], ["all runs"])
            panels[0].set_ylabel(outcome)
        for k, (ax, axis) in enumerate(zip(panels, axes)):
            values = sorted(df[axis].drop_nulls().unique().to_list())
            groups = []
            for v in values:
                y = df.filter(pl.col(axis) == v)[outcome].cast(pl.Float64).to_numpy()
                groups.append(y[np.isfinite(y)])
            pos = np.arange(1, len(values) + 1)
            ax.boxplot(groups, positions=pos, widths=0.55, showfliers=False,
                       medianprops={"color": "#d62728"}, boxprops={"color": "#444"},
                       whiskerprops={"color": "#444"}, capprops={"color": "#444"})
            for p, y in zip(pos, groups):
                ax.scatter(p + rng.uniform(-0.16, 0.16, y.size), y, s=7, alpha=0.45,
                           color="#1f77b4", linewidths=0)
            ax.set_xticks(pos, [num(v, "g") for v in values],
                          rotation=30 if len(values) > 5 else 0)
            ax.set_xlabel(short_name(axis))
            if k % cols == 0:
                ax.set_ylabel(outcome)
        if title:
            fig.suptitle(title)
    return fig


# ----------------------------------------------------------- heat maps


def _heatmap(ax, data: np.ndarray, norm, cmap: str, row_labels, col_labels, fmt: str, turn: bool = True):
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, norm=norm,
                   interpolation="nearest")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30 if turn else 0, ha="right" if turn else "center")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.grid(False)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    cm = colormaps[cmap]
    if data.shape[0] <= 60:
        for (i, j), v in np.ndenumerate(data):
            if not np.isfinite(v):
                ax.text(j, i, MISSING, ha="center", va="center", color="#999", fontsize=7, in_layout=False)
                continue
            r, g, b, _ = cm(norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                    color="white" if dark else "#222", in_layout=False)
    return im


def mark_label(labels, name: str | None) -> None:
    """Highlight the tick label (or title) that reads ``name`` (a user's scored measure): bold on yellow."""
    for t in labels:
        if name is not None and t.get_text().split("\n", 1)[0] == short_name(name):
            t.set_fontweight("bold")
            t.set_bbox({"facecolor": "#fff1b8", "edgecolor": "none", "pad": 1.5})


def _measure_labels(table: pl.DataFrame) -> list[str]:
    return [short_name(m) for m in table["measure"].to_list()]


def _heat_size(row_labels: list[str], col_labels: list[str], cell_w: float, right: float,
               bottom: float) -> tuple[float, float, bool]:
    """A heat map's figure (width, height) in inches from its content, and whether its column
    labels are turned: cells of ``cell_w`` × 0.24 in, room for the labels (about 0.065 in a
    character at 8 pt), ``right`` in at the right and ``bottom`` in below (colour bar)."""
    turn = max(map(len, col_labels), default=0) * 0.065 > cell_w
    below = 0.25 + (0.5 * 0.065 * max(map(len, col_labels), default=0) if turn else 0.0)
    width = 0.25 + 0.065 * max(map(len, row_labels), default=0) + cell_w * len(col_labels) + right
    return max(width, 3.2), 0.45 + 0.24 * len(row_labels) + below + bottom, turn


def psi_heatmap(table: pl.DataFrame, *, title: str | None = None, highlight: str | None = None) -> Figure:
    """Granulated τ: ψ per axis (columns) for each measure (rows), and their mean Ψ.

    The figure is sized to its cells (about 0.55 × 0.24 in each), whatever the number of rows."""
    axes = [c for c in table.columns if c.startswith("psi_")]
    if table.height == 0 or not axes:
        return _empty("no ψ to show (no measures, or no axis takes two values)")
    cols = axes + (["psi"] if "psi" in table.columns else [])
    data = table.select([pl.col(c).cast(pl.Float64) for c in cols]).to_numpy()
    labels = [short_name(c) for c in axes] + (["Ψ (mean)"] if "psi" in table.columns else [])
    rows = _measure_labels(table)
    width, height, turn = _heat_size(rows, labels, 0.55, 0.2, 0.75)
    with _style():
        fig = _figure(width, height)
        ax = fig.add_subplot()
        im = _heatmap(ax, data, TwoSlopeNorm(0.0, -1.0, 1.0), "RdBu_r", rows, labels, ".2f", turn)
        mark_label(ax.get_yticklabels(), highlight)
        fig.colorbar(im, ax=ax, label="ψ (Kendall τ within groups)", location="bottom", aspect=25,
                     fraction=0.3 / height, pad=0.02)
        ax.set_title(title or "Granulated τ per axis")
    return fig


def cmi_heatmap(table: pl.DataFrame, *, title: str | None = None, highlight: str | None = None) -> Figure:
    """Normalised conditional mutual information per size of conditioning set.

    Columns: S = ∅ (``cmi_k0``), the minimum over |S| = 1 and |S| = 2, and
    the overall minimum (``cmi``); the minimising set is written at the right.
    The figure is sized to its cells (about 0.7 × 0.24 in each).
    """
    spec = [("cmi_k0", "S = ∅"), ("cmi_k1", "min |S|=1"), ("cmi_k2", "min |S|=2"),
            ("cmi", "min |S|≤2")]
    spec = [(c, lab) for c, lab in spec if c in table.columns]
    if table.height == 0 or not spec:
        return _empty("no conditional mutual information to show")
    data = table.select([pl.col(c).cast(pl.Float64) for c, _ in spec]).to_numpy()
    finite = data[np.isfinite(data)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    sets = ([("S = " + s) if s else "S = ∅" for s in table["cmi_set"].fill_null("?").to_list()]
            if "cmi_set" in table.columns else [])
    rows = _measure_labels(table)
    width, height, turn = _heat_size(rows, [lab for _, lab in spec], 0.7,
                                     0.3 + 0.065 * max(map(len, sets), default=0), 0.75)
    with _style():
        fig = _figure(width, height)
        ax = fig.add_subplot()
        im = _heatmap(ax, data, Normalize(0.0, vmax), "Blues", rows, [lab for _, lab in spec], ".3f", turn)
        mark_label(ax.get_yticklabels(), highlight)
        if sets:
            sec = ax.secondary_yaxis("right")
            sec.set_yticks(range(table.height), sets)
            sec.tick_params(length=0)
            sec.spines["right"].set_visible(False)
        fig.colorbar(im, ax=ax, label="CMI / H(V_g | U_S)", location="bottom", aspect=25,
                     fraction=0.3 / height, pad=0.02)
        ax.set_title(title or "Conditional mutual information per conditioning set")
    return fig


# ------------------------------------------------------------- scatter


def leading_measures(table: pl.DataFrame, k: int = 6, *, by: str = "cmi") -> list[str]:
    """The ``k`` measures that rank best (``study.schema.ranking_order``): highest ``by``
    (``cmi``), ties by |τ|. ``by="tau"`` ranks by |τ| alone. Missing scores come last."""
    if table.height == 0:
        return []
    return sort_ranking(table, by if by in table.columns else "tau")["measure"].head(k).to_list()


def _measure_col(df: pl.DataFrame, measure: str) -> str:
    for c in (measure, measure_col(measure)):
        if c in df.columns:
            return c
    raise KeyError(f"measure {measure!r} is not a column of the runs table "
                   f"(looked for {measure!r} and {measure_col(measure)!r})")


def colour_axis(df: pl.DataFrame, outcome: str = "gap") -> str | None:
    """The varying axis whose values explain the largest share of the variance of ``outcome``."""
    axes = varying_axes(df)
    d = df.filter(pl.col(outcome).cast(pl.Float64).is_finite())
    y = d[outcome].cast(pl.Float64).to_numpy()
    if y.size < 2 or y.var() <= 0:
        return axes[0] if axes else None
    share = {}
    for axis in axes:
        g = d.group_by(axis).agg(pl.col(outcome).cast(pl.Float64).mean().alias("m"), pl.len().alias("n"))
        share[axis] = float((g["n"].to_numpy() * (g["m"].to_numpy() - y.mean()) ** 2).sum()) / (y.size * y.var())
    return max(axes, key=share.get) if axes else None


def measure_scatter(df: pl.DataFrame, measures: list[str], table: pl.DataFrame | None = None,
                    *, outcome: str = "gap", colour_by: str | None = "auto",
                    title: str | None = None, highlight: str | None = None) -> Figure:
    """Each measure against ``outcome``, one panel per measure (``highlight``: a measure whose title is marked).

    Points are coloured by ``colour_by`` (an ``hp.*`` column; ``"auto"``: the
    axis that explains the most variance of the gap; ``None``: one colour).
    The x-axis is logarithmic where a measure is positive and spans more than
    two decades. Non-finite values are left out, and the count shown.
    """
    if not measures or df.height == 0:
        return _empty("no measures to plot")
    if colour_by == "auto":
        colour_by = colour_axis(df, outcome)
    stats = {}
    if table is not None and table.height:
        for row in table.iter_rows(named=True):
            stats[short_name(row["measure"])] = row
    with _style():
        fig, panels, cols = _panels(len(measures), 3, (3.3, 2.75), (0, 0.5 if colour_by else 0.1))
        colours, handles = None, {}
        if colour_by:
            values = sorted(df[colour_by].drop_nulls().unique().to_list())
            cmap = colormaps["tab10"] if len(values) <= 10 else colormaps["viridis"]
            lut = {v: cmap(i if len(values) <= 10 else i / max(len(values) - 1, 1))
                   for i, v in enumerate(values)}
            colours = np.array([lut.get(v, (0.6, 0.6, 0.6, 1.0)) for v in df[colour_by].to_list()])
            handles = lut
        y = df[outcome].cast(pl.Float64).to_numpy()
        for k, (ax, m) in enumerate(zip(panels, measures)):
            x = df[_measure_col(df, m)].cast(pl.Float64).to_numpy()
            ok = np.isfinite(x) & np.isfinite(y)
            c = colours[ok] if colours is not None else "#1f77b4"
            ax.scatter(x[ok], y[ok], s=12, c=c, alpha=0.75, linewidths=0)
            xs = x[ok]
            if xs.size and xs.min() > 0 and xs.max() / xs.min() > 100:
                ax.set_xscale("log")
            name = short_name(m)
            s = stats.get(name)
            sub = []
            if s is not None:
                if s.get("tau") is not None and np.isfinite(s["tau"]):
                    sub.append(f"τ={s['tau']:+.2f}")
                if s.get("cmi") is not None and np.isfinite(s["cmi"]):
                    sub.append(f"CMI={s['cmi']:.3f}")
            if (~ok).sum():
                sub.append(f"{int((~ok).sum())} non-finite left out")
            mark_label([ax.set_title(name + ("\n" + ", ".join(sub) if sub else ""), fontsize=9)], highlight)
            ax.set_xlabel(name)
            if k % cols == 0:
                ax.set_ylabel(outcome)
        if colour_by and handles:
            items = [Line2D([], [], marker="o", ls="", color=col, label=num(v, "g"))
                     for v, col in list(handles.items())[:12]]
            fig.legend(handles=items, title=short_name(colour_by), loc="outside lower center",
                       ncols=min(len(items), 8), frameon=False)
        if title:
            fig.suptitle(title)
    return fig


# ------------------------------------------------- stored curves (artifacts)


def stored_artifacts(df: pl.DataFrame, kind: str) -> list[Artifact]:
    """The artifacts of ``kind`` (``study.schema.ARTIFACTS``) that ``df`` holds as lists, with their x lists."""
    held = [c for c in df.columns if isinstance(df.schema[c], (pl.List, pl.Array)) and df[c].drop_nulls().len()]
    return [a for a in ARTIFACTS.values() if a.kind == kind and {a.column, artifact_col(a.x)} <= set(held)]


def broadened_density(nodes, weights, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Σ_i w_i · N(λ; θ_i, σ²) on ``grid``: a spectral measure smoothed for plotting (Ghorbani et al. 2019)."""
    th = np.asarray(nodes, dtype=float)[:, None]
    w = np.asarray(weights, dtype=float)[:, None]
    ok = np.isfinite(th[:, 0]) & np.isfinite(w[:, 0])
    z = (grid[None, :] - th[ok]) / sigma
    return (w[ok] * np.exp(-0.5 * z ** 2)).sum(axis=0) / (sigma * math.sqrt(2 * math.pi))


# Panel titles of the artifacts drawn, in words; an artifact not named here is titled by its meaning.
_TITLES = {
    "hessian_density_weights": "Eigenvalue density",
    "filter_sharpness_curves": "Training loss L(w + t·δ)",
}


def _words(a: Artifact) -> str:
    """A panel title for artifact ``a`` in words (never its column name)."""
    if a.name in _TITLES:
        return _TITLES[a.name]
    words = a.meaning.split(" (")[0].split(":")[0]
    return words[:1].upper() + words[1:]


@dataclass
class _Panel:
    title: str
    xlabel: str
    ylabel: str
    curves: dict[int, tuple[np.ndarray, np.ndarray]]  # run index → its curve (x, y)
    log_y: bool = False


def _subsample(df: pl.DataFrame, a: Artifact, max_runs: int) -> list[int]:
    """Rows holding ``a`` and its x list; an even, deterministic subsample of at most ``max_runs``."""
    ok = np.ones(df.height, dtype=bool)
    for c in (a.column, artifact_col(a.x)):
        ok &= np.array([v is not None and len(v) > 0 for v in df[c].to_list()], dtype=bool)
    idx = np.flatnonzero(ok).tolist()
    if len(idx) > max_runs:
        idx = [idx[int(j)] for j in np.linspace(0, len(idx) - 1, max_runs)]
    return idx


def _spectral_panels(df: pl.DataFrame, a: Artifact, idx: list[int]) -> list[_Panel]:
    nodes, weights = df[artifact_col(a.x)].to_list(), df[a.column].to_list()
    th = [np.asarray(nodes[i], dtype=float) for i in idx]
    finite = np.concatenate([t[np.isfinite(t)] for t in th]) if th else np.array([])
    if finite.size == 0:
        return []
    lo, hi = float(finite.min()), float(finite.max())
    span = max(hi - lo, 1e-12)
    grid = np.linspace(lo - 0.05 * span, hi + 0.05 * span, 400)
    absolute = {i: (grid, broadened_density(nodes[i], weights[i], grid, 0.015 * span)) for i in idx}
    rel_grid = np.linspace(-1.05, 1.05, 400)
    relative = {}
    for i, t in zip(idx, th):
        scale = float(np.nanmax(np.abs(t))) if np.isfinite(t).any() else 0.0
        if scale > 0:
            relative[i] = (rel_grid, broadened_density(t / scale, weights[i], rel_grid, 0.015 * 2.1))
    what = _words(a)
    return [_Panel(f"{what} against λ", "eigenvalue λ", "density", absolute, True),
            _Panel(f"{what} against λ / max|λ| (each run's own)", "λ / max|λ|", "density", relative, True)]


def _curve_panel(df: pl.DataFrame, a: Artifact, idx: list[int], ylabel: str, xlabel: str) -> _Panel:
    """K curves per run (shape K × T, T the length of the x list), drawn as their mean."""
    vals, xs = df[a.column].to_list(), df[artifact_col(a.x)].to_list()
    curves, k = {}, 1
    for i in idx:
        x, v = np.asarray(xs[i], dtype=float), np.asarray(vals[i], dtype=float)
        if v.size % x.size:  # not K × T: not drawn
            continue
        v = v.reshape(-1, x.size)
        k = max(k, len(v))
        curves[i] = (x, np.nanmean(v, axis=0) if len(v) > 1 else v[0])
    title = _words(a) + (f"\n(mean over {k} directions)" if k > 1 else "")
    return _Panel(title, xlabel, ylabel, curves)


def _draw_panels(df: pl.DataFrame, panels: list[_Panel], *, title: str, outcome: str) -> Figure:
    with _style():
        fig, axes, _ = _panels(len(panels), 2, (4.6, 3.0), (0.8, 0.4))
        gap = (df[outcome].cast(pl.Float64).to_numpy() if outcome in df.columns
               else np.full(df.height, np.nan))
        fin = gap[np.isfinite(gap)]
        norm = Normalize(float(fin.min()) if fin.size else 0.0,
                         float(fin.max()) if fin.size and fin.max() > fin.min() else
                         (float(fin.min()) + 1.0 if fin.size else 1.0))
        cmap = colormaps["viridis"]
        for ax, p in zip(axes, panels):
            top = 0.0
            for i, (x, y) in p.curves.items():
                ax.plot(x, y, color=cmap(norm(gap[i])) if np.isfinite(gap[i]) else "#999", lw=0.9, alpha=0.75)
                if np.isfinite(y).any():
                    top = max(top, float(np.nanmax(y)))
            if p.log_y and top > 0:
                ax.set_yscale("log")
                ax.set_ylim(top * 1e-5, top * 2)
            ax.set_title(f"{p.title}\n{len(p.curves)} of {df.height} runs" if "\n" not in p.title else
                         f"{p.title}, {len(p.curves)} of {df.height} runs", fontsize=9)
            ax.set_xlabel(p.xlabel)
            ax.set_ylabel(p.ylabel)
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[:len(panels)]),
                     shrink=0.8, label=outcome)
        fig.suptitle(title)
    return fig


def hessian_spectra(df: pl.DataFrame, *, outcome: str = "gap", max_runs: int = 80) -> Figure | None:
    """Hessian eigenvalue densities (the ``spectral`` artifacts of ``study.schema``), one curve per run coloured by gap.

    The node/weight pairs (stochastic Lanczos quadrature) are smoothed with a
    Gaussian of width 1.5 % of the plotted range and drawn twice: against λ,
    and against λ scaled by each run's largest |λ|. Returns None when the
    runs stored no density.
    """
    panels = [p for a in stored_artifacts(df, "spectral")
              for p in _spectral_panels(df, a, _subsample(df, a, max_runs))]
    if not panels:
        return None
    return _draw_panels(df, panels, title="Hessian eigenvalue density (stochastic Lanczos quadrature)",
                        outcome=outcome)


def landscape_curves(df: pl.DataFrame, *, outcome: str = "gap", max_runs: int = 80) -> Figure | None:
    """Training loss along random filter-normalised directions, L(w + t·δ) (the ``curves`` artifacts).

    One curve per run, coloured by gap: the mean of the run's K directions.
    Returns None when the runs stored no curve.
    """
    panels = [_curve_panel(df, a, _subsample(df, a, max_runs), "training loss", "step t along δ")
              for a in stored_artifacts(df, "curves")]
    if not panels:
        return None
    return _draw_panels(df, panels, title="Loss along random filter-normalised directions (Li et al. 2018)",
                        outcome=outcome)
