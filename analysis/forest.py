"""The forest plot of the report: every measure's τ with its bootstrap interval and its Ψ, on one
[−1, 1] axis, in ranking order, with its reliability where the rows carry one. Drawn as inline SVG
from the ranking table (each row carries its interval as ``data-tau-lo`` / ``data-tau-hi``, the
table's numbers), so it needs no script; measures folded into another (`analysis.folding`) are
named on its row instead of drawn again."""

from __future__ import annotations

import numpy as np
import polars as pl

from analysis.output import MISSING, esc, interval, num

ROW, LABEL, PLOT, TEXT, TOP = 17, 230, 420, 300, 26  # pixels: row height, label, plot and text widths, axis band


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and np.isfinite(v)


def _x(v: float) -> float:
    return LABEL + (min(max(v, -1.0), 1.0) + 1.0) / 2.0 * PLOT


def forest_svg(table: pl.DataFrame, folded: dict[str, list[str]] | None = None, *,
               skip: set[str] = frozenset(), scored: str | None = None, wide: float = 1.0) -> str:
    """The SVG of ``table`` (ranking order kept) without the measures in ``skip``; ``folded``: kept measure
    → the names folded into it; ``scored``: the user's measure, highlighted; an interval wider than ``wide``
    is drawn grey (it says little)."""
    folded = folded or {}
    rows = [r for r in table.iter_rows(named=True) if r["measure"] not in skip]
    rel = "reliability" in table.columns and any(_finite(r.get("reliability")) for r in rows)
    height = TOP + ROW * len(rows) + 8
    width = LABEL + PLOT + TEXT
    out = [f'<svg class="forest" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="τ and Ψ of every measure">']
    for v in (-1, -0.5, 0, 0.5, 1):
        x = _x(v)
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{height - 6}" '
                   f'stroke="{"#888" if v == 0 else "#e3e3e3"}" stroke-width="1"/>'
                   f'<text x="{x:.1f}" y="{TOP - 9}" text-anchor="middle" class="ax">{v:+g}</text>')
    out.append(f'<text x="{LABEL + PLOT + 20}" y="{TOP - 9}" class="ax">τ [95 % CI] · Ψ'
               + (" · reliability" if rel else "") + "</text>")
    for i, r in enumerate(rows):
        m, y = r["measure"], TOP + ROW * i + ROW / 2
        lo, hi, tau, psi = r.get("tau_lo"), r.get("tau_hi"), r.get("tau"), r.get("psi")
        cls = "forest-row" + (" scored" if m == scored else "")
        attrs = (f' data-measure="{esc(m)}" data-tau="{_attr(tau)}" data-tau-lo="{_attr(lo)}" '
                 f'data-tau-hi="{_attr(hi)}" data-psi="{_attr(psi)}"')
        also = folded.get(m, [])
        if also:
            attrs += f' data-folded="{esc(",".join(also))}"'
        g = [f'<g class="{cls}"{attrs}>']
        if i % 2:
            g.append(f'<rect x="0" y="{y - ROW / 2:.1f}" width="{width}" height="{ROW}" fill="#fafafa"/>')
        if m == scored:
            g.append(f'<rect x="0" y="{y - ROW / 2:.1f}" width="{width}" height="{ROW}" fill="#fff1b8"/>')
        label = esc(m) + (f' <tspan class="fold">= {esc(", ".join(also))}</tspan>' if also else "")
        g.append(f'<text x="{LABEL - 8}" y="{y + 4:.1f}" text-anchor="end" class="lab">{label}</text>')
        if _finite(lo) and _finite(hi):
            colour = "#bbb" if hi - lo > wide else "#1f4e79"
            g.append(f'<line class="ci" x1="{_x(lo):.1f}" y1="{y:.1f}" x2="{_x(hi):.1f}" y2="{y:.1f}" '
                     f'stroke="{colour}" stroke-width="2"/>')
        if _finite(tau):
            g.append(f'<circle class="tau" cx="{_x(tau):.1f}" cy="{y:.1f}" r="3.6" fill="#1f4e79"/>')
        if _finite(psi):
            px = _x(psi)
            g.append(f'<path class="psi" d="M{px:.1f} {y - 4.5:.1f}l4.5 4.5l-4.5 4.5l-4.5 -4.5z" fill="none" '
                     'stroke="#c0392b" stroke-width="1.4"/>')
        text = (f"τ {num(tau, '+.2f')} {interval(lo, hi, '+.2f') if _finite(lo) else ''} · Ψ {num(psi, '+.2f')}"
                + (f" · {num(r.get('reliability'), '.2f')}" if rel else ""))
        g.append(f'<text x="{LABEL + PLOT + 8}" y="{y + 4:.1f}" class="num">{esc(text)}</text>')
        g.append(f"<title>{esc(m)}: {esc(text)}</title></g>")
        out.append("".join(g))
    out.append("</svg>")
    return "".join(out)


def _attr(v) -> str:
    return repr(float(v)) if _finite(v) else ""


def forest_section(table: pl.DataFrame, folded: dict[str, list[str]], skip: set[str], scored: str | None) -> str:
    """The forest plot with its legend."""
    if table.height == 0:
        return f'<p class="note">No measure to draw {MISSING}.</p>'
    return ('<div class="wrap">' + forest_svg(table, folded, skip=skip, scored=scored) + "</div>"
            '<p class="note">Each row is a measure, in the ranking order (by CMI): the dot is Kendall τ with the gap, '
            "the line its 95 % bootstrap interval (grey where wider than 1, half the range: it says little), the "
            "red diamond Ψ (granulated τ, the mean over axes of τ within groups that differ in that axis only). "
            "An interval that crosses 0 does not tell the measure from chance. A measure equal to one above it on "
            "every analysed network is not drawn again: its name follows that measure's, after “=”.</p>")
