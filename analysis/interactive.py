"""What makes the report queryable: a sortable, filterable ranking table and scatter points that name their run.

The page stays one offline file. The HTML here carries the data (``data-v``
sort keys on the table cells, the points of a figure as JSON in a
``<script type="application/json">``); one inline script (`SCRIPT`, written
for this report, no library) adds the behaviour: a header click (or Enter on
a focused header) sorts by that column, numbers highest first and text A to
Z, a second click reverses, empty cells stay last and ties keep the page's
order; a family select and a text box filter the rows; a checkbox groups them
by family (families in the order of their first row); the pointer over a
scatter shows the nearest run, and a click opens its view (`analysis.linked`). Without the script the page reads as before.
"""
from __future__ import annotations

import json

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from analysis import measure_info
from analysis.output import MISSING, esc, num
from study.schema import is_hp, name_of

# ------------------------------------------------------------ the ranking table


def family(measure: str) -> str:
    """The registry family of ``measure`` ('' for a measure the registry does not know, e.g. a user's score)."""
    info = measure_info.load().get(name_of(measure))
    return info["family"] if info else ""


def tooltip(measure: str) -> str:
    """The hover text of ``measure``: its definition and citation ('' for an unknown measure)."""
    info = measure_info.load().get(name_of(measure))
    if not info:
        return ""
    noise = " Stochastic: redrawn by [measures] repeats." if info["stochastic"] else ""
    return f"{info['definition']}\nCitation: {info['cite']}.{noise}\nFamily: {info['family']}."


def measure_cells(measure: str, label: str) -> str:
    """The measure's name cell (with its definition on hover where known) and its family cell."""
    tip = tooltip(measure)
    fam = family(measure)
    name = (f'<td class="l def" title="{esc(tip)}">{esc(label)}</td>' if tip
            else f'<td class="l">{esc(label)}</td>')
    return name + f'<td class="l">{esc(fam) if fam else MISSING}</td>'


def sort_key(v) -> str:
    """A cell's ``data-v`` attribute: the number at full precision, empty for a missing one."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return ' data-v=""'
    return f' data-v="{float(v)!r}"' if np.isfinite(v) else ' data-v=""'


def controls(table_id: str, families: list[str]) -> str:
    """The text filter, family select and grouping toggle above a ranking table (shown by the script)."""
    opts = "".join(f'<option value="{esc(f)}">{esc(f)}</option>' for f in sorted(f for f in set(families) if f))
    if "" in families:
        opts += '<option value="-">no family (not in the registry)</option>'
    return (f'<div class="rank-ctl" data-table="{esc(table_id)}" hidden>'
            '<label>measure <input type="search" class="q" placeholder="name contains…"></label>'
            f'<label>family <select class="fam"><option value="">all</option>{opts}</select></label>'
            '<label><input type="checkbox" class="grp"> group by family</label>'
            '<span class="count"></span><span class="meta">Click a column header to sort by it, again to '
            "reverse; hover a measure's name for its definition.</span></div>")


def has_values(table: pl.DataFrame, columns: tuple[str, ...]) -> bool:
    """Whether any of ``columns`` holds a finite value (else the table leaves them out)."""
    return any(c in table.columns and bool(table[c].cast(pl.Float64).is_finite().any()) for c in columns)


def has_robust(table: pl.DataFrame) -> bool:
    """Whether any measure kept an environment for the robust sign-error (else its columns are empty)."""
    return "robust_envs" in table.columns and bool((table["robust_envs"].fill_null(0) > 0).any())


# ------------------------------------------------------------ scatter points


def scatter_points(fig: Figure, df: pl.DataFrame, columns: list[str], outcome: str = "gap") -> dict:
    """Where each run's point lies in a drawn scatter (one visible panel per column, in order).

    Positions are fractions of the figure's width and height from its top left, read from
    each panel's data transform after the figure was drawn (``savefig``); the plotted offsets
    are checked against the runs' finite (value, ``outcome``) pairs, so the points are the runs'.
    Returns {"runs": run ids, axes, seeds and outcomes, "panels": [{measure, x, y, row, value}]}.
    """
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.collections]
    if len(panels) != len(columns):
        raise ValueError(f"{len(panels)} scatter panels for {len(columns)} measures")
    y = df[outcome].cast(pl.Float64).to_numpy()
    w, h = fig.bbox.width, fig.bbox.height
    out = []
    for ax, col in zip(panels, columns):
        x = df[col].cast(pl.Float64).to_numpy()
        rows = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        offsets = np.asarray(ax.collections[0].get_offsets(), dtype=float)
        if offsets.shape != (rows.size, 2) or not np.allclose(offsets, np.c_[x[rows], y[rows]], equal_nan=True):
            raise ValueError(f"the points of panel {name_of(col)} are not the runs' ({col}, {outcome})")
        px = ax.transData.transform(offsets) if rows.size else np.zeros((0, 2))
        out.append({"measure": name_of(col), "x": np.round(px[:, 0] / w, 5).tolist(),
                    "y": np.round(1 - px[:, 1] / h, 5).tolist(), "row": rows.tolist(),
                    "value": [num(float(v), ".4g") for v in x[rows]]})
    axes = [c for c in df.columns if is_hp(c) and df[c].n_unique() > 1]
    runs = {"run_id": df["run_id"].cast(pl.String).to_list() if "run_id" in df.columns else
            [str(i) for i in range(df.height)],
            "params": [[name_of(a), [num(v, ".4g") for v in df[a].to_list()]] for a in axes]
            + ([["seed", [num(v, ".4g") for v in df["seed"].to_list()]]] if "seed" in df.columns else []),
            "outcome": outcome, "y": [num(float(v), ".4g") for v in y]}
    return {"runs": runs, "panels": out}


def queryable(figure_html: str, points: dict) -> str:
    """A report figure (``<figure><img …>``) with its points attached, for the script's hover;
    anything else (a figure stubbed out in a test) as it is."""
    if not figure_html.startswith("<figure><img"):
        return figure_html
    data = json.dumps(points, separators=(",", ":")).replace("</", "<\\/")
    return ('<figure class="queryable"><script type="application/json" class="points">' + data + "</script>"
            + figure_html[len("<figure>"):])


# ------------------------------------------------------------ the script

SCRIPT = r"""
(function () {
  "use strict";
  function num(td) { var v = td.getAttribute("data-v"); return v === null || v === "" ? null : parseFloat(v); }
  function text(td) { var t = td.textContent.trim(); return t === __MISSING__ || t === "" ? null : t; }

  function setupTable(ctl) {
    var table = document.getElementById(ctl.getAttribute("data-table"));
    if (!table) { return; }
    var body = table.tBodies[0], heads = table.tHead.rows[0].cells, ncol = heads.length;
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, i) { r.__order = i; });
    var state = {col: -1, dir: 1};
    var q = ctl.querySelector(".q"), fam = ctl.querySelector(".fam"), grp = ctl.querySelector(".grp");
    var count = ctl.querySelector(".count");

    function key(r) {
      var td = r.cells[state.col];
      return heads[state.col].getAttribute("data-type") === "num" ? num(td) : text(td);
    }
    function sorted() {
      var out = rows.slice();
      if (state.col < 0) { return out; }
      var numeric = heads[state.col].getAttribute("data-type") === "num";
      out.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) {
          return x === y ? a.__order - b.__order : (x === null ? 1 : -1);
        }
        var c = numeric ? x - y : x.localeCompare(y);
        return c !== 0 ? c * state.dir : a.__order - b.__order;
      });
      return out;
    }
    function shown(r) {
      var f = fam.value, s = q.value.trim().toLowerCase();
      var rf = r.getAttribute("data-family") || "-";
      return (f === "" || f === rf) && r.getAttribute("data-measure").toLowerCase().indexOf(s) >= 0;
    }
    function render() {
      var order = sorted(), groups = [], byFam = {};
      Array.prototype.slice.call(body.querySelectorAll("tr.fam-head")).forEach(function (h) { h.remove(); });
      order.forEach(function (r) {
        var f = r.getAttribute("data-family") || "-";
        if (!(f in byFam)) { byFam[f] = []; groups.push(f); }
        byFam[f].push(r);
      });
      var n = 0;
      function put(r) { r.hidden = !shown(r); if (!r.hidden) { n += 1; } body.appendChild(r); }
      if (grp.checked) {
        groups.forEach(function (f) {
          var members = byFam[f], head = document.createElement("tr"), td = document.createElement("td");
          var k = members.filter(shown).length;
          head.className = "fam-head"; head.setAttribute("data-family", f);
          td.colSpan = ncol;
          td.textContent = (f === "-" ? "no family (not in the registry)" : f) + " — " + k + " measure" + (k === 1 ? "" : "s");
          head.appendChild(td); head.hidden = k === 0; body.appendChild(head);
          members.forEach(put);
        });
      } else {
        order.forEach(put);
      }
      count.textContent = n + " of " + rows.length + " measures shown";
    }
    Array.prototype.forEach.call(heads, function (th, i) {
      th.classList.add("sort");
      th.title = "sort by this column (click again to reverse)";
      th.tabIndex = 0;
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); th.click(); }
      });
      th.addEventListener("click", function () {
        if (state.col === i) { state.dir = -state.dir; }
        else { state.col = i; state.dir = th.getAttribute("data-type") === "num" ? -1 : 1; }
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
        render();
      });
    });
    q.addEventListener("input", render);
    fam.addEventListener("change", render);
    grp.addEventListener("change", render);
    ctl.hidden = false;
    render();
  }

  function setupFigure(fig) {
    var data = JSON.parse(fig.querySelector("script.points").textContent);
    var img = fig.querySelector("img"), box = document.createElement("div");
    box.className = "pts";
    img.parentNode.insertBefore(box, img);
    box.appendChild(img);
    var mark = document.createElement("div"), tip = document.createElement("div");
    mark.className = "pt-mark"; tip.className = "pt-tip"; tip.setAttribute("role", "tooltip");
    mark.hidden = tip.hidden = true;
    box.appendChild(mark); box.appendChild(tip);
    var runs = data.runs;

    function describe(p, k) {
      var row = p.row[k], lines = ["run " + runs.run_id[row]];
      var params = runs.params.map(function (a) { return a[0] + " " + a[1][row]; });
      if (params.length) { lines.push(params.join(" · ")); }
      lines.push(runs.outcome + " " + runs.y[row]);
      lines.push(p.measure + " " + p.value[k]);
      return lines.join("\n");
    }
    function nearest(fx, fy, rect) {
      var best = null, bestD = 64;  // within 8 CSS pixels
      data.panels.forEach(function (p) {
        for (var k = 0; k < p.x.length; k++) {
          var dx = (p.x[k] - fx) * rect.width, dy = (p.y[k] - fy) * rect.height, d = dx * dx + dy * dy;
          if (d <= bestD) { bestD = d; best = [p, k]; }
        }
      });
      return best;
    }
    box.addEventListener("mousemove", function (e) {
      var rect = img.getBoundingClientRect();
      var hit = nearest((e.clientX - rect.left) / rect.width, (e.clientY - rect.top) / rect.height, rect);
      if (!hit) { mark.hidden = tip.hidden = true; return; }
      var p = hit[0], k = hit[1], x = p.x[k] * rect.width, y = p.y[k] * rect.height;
      mark.style.left = x + "px"; mark.style.top = y + "px";
      tip.textContent = describe(p, k);
      tip.setAttribute("data-run", runs.run_id[p.row[k]]);
      mark.hidden = tip.hidden = false;
      tip.style.left = (x + 14 + tip.offsetWidth > rect.width ? x - 14 - tip.offsetWidth : x + 14) + "px";
      tip.style.top = Math.max(0, y - tip.offsetHeight / 2) + "px";
    });
    box.addEventListener("mouseleave", function () { mark.hidden = tip.hidden = true; });
    box.addEventListener("click", function (e) {  // open the run's own view (analysis.linked)
      var rect = img.getBoundingClientRect();
      var hit = nearest((e.clientX - rect.left) / rect.width, (e.clientY - rect.top) / rect.height, rect);
      if (hit && window.openNetwork) { window.openNetwork(runs.run_id[hit[0].row[hit[1]]]); }
    });
  }

  document.querySelectorAll(".rank-ctl").forEach(setupTable);
  document.querySelectorAll("figure.queryable").forEach(setupFigure);
})();
"""


def script(*more: str) -> str:
    """The page's one inline script (module docstring), with ``more`` code after it (the linked views'),
    `MISSING` given to each as ``__MISSING__``."""
    return "<script>" + "".join(s.replace("__MISSING__", json.dumps(MISSING)) for s in (SCRIPT, *more)) + "</script>"
