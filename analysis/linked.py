"""The report's linked views, drawn in the browser from the rows' data: a scatter of the gap against a
measure chosen from a list, parallel coordinates over the hyperparameters, the gap and chosen measures
(dragging along an axis brushes a range; the brushes filter the network list and the scatter), the
list of analysed networks (with its seed), and every network's own view (training curve, Hessian
spectrum, loss curves and surface, each measure's percentile among the others), opened by clicking
a point, a row of the list or an entry of the one-network section's list.

The data is one ``<script type="application/json" id="linked-data">`` (`linked_data`: columns of the
analysed rows, artifacts rounded to 4 significant digits); `SCRIPT` (written for this report, no library,
nothing fetched) draws SVG from it. Its brushes are kept in data units on each axis (``data-lo`` and
``data-hi`` of ``g.pc-axis``), so that a test can select the same rows with polars. The report runs
`SCRIPT` inside its one inline script (``interactive.script(linked.SCRIPT)``).
"""
from __future__ import annotations

import json
import math

import polars as pl

from study.schema import OUTCOMES, artifact_col, is_hp, is_measure, name_of

ARTIFACTS = {"spec_nodes": "hessian_density_nodes", "spec_w": "hessian_density_weights",
             "curve_t": "filter_sharpness_t", "curves": "filter_sharpness_curves",
             "train": "train_loss_curve", "surf_t": "loss_surface_t", "surf": "loss_surface"}


def _json_float(v):
    """A JSON number at full precision, None for a missing or non-finite one."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _short(v):
    """A JSON number at 4 significant digits (artifacts: curves drawn a few hundred pixels wide)."""
    f = _json_float(v)
    return None if f is None else float(f"{f:.4g}")


def _column(s: pl.Series) -> list:
    if s.dtype.is_numeric() and s.dtype != pl.Boolean:
        return [_json_float(v) for v in s.cast(pl.Float64).to_list()]
    return [None if v is None else str(v) for v in s.to_list()]


def linked_data(pop: pl.DataFrame, measures: list[str], folded: dict[str, str], lead: list[str],
                scored: str | None = None) -> dict:
    """The linked views' data: the analysed runs ``pop`` as columns; ``measures`` in ranking order (names),
    each with the measure it is folded into (``folded``, '' if none); ``lead``: the measures on the parallel
    coordinates by default (the first is the scatter's, unless ``scored``, the user's measure, is given)."""
    ids = pop["run_id"].cast(pl.String).to_list() if "run_id" in pop.columns else [str(i) for i in range(pop.height)]
    axes = [c for c in pop.columns if is_hp(c) and pop[c].drop_nulls().n_unique() > 1]
    cols = {name_of(c) if is_measure(c) else c: c for c in pop.columns}
    ms = [m for m in measures if m in cols]
    art = {}
    for key, name in ARTIFACTS.items():
        col = artifact_col(name)
        if col in pop.columns:
            art[key] = [None if v is None or len(v) == 0 else [_short(x) for x in v] for v in pop[col].to_list()]
    target = None
    if "config" in pop.columns:
        for v in pop["config"].to_list():
            cfg = json.loads(v) if isinstance(v, str) and v else v
            if isinstance(cfg, dict) and isinstance(cfg.get("train"), dict) and cfg["train"].get("target_loss"):
                target = _json_float(cfg["train"]["target_loss"])
                break
    chosen = scored if scored in ms else next((m for m in lead if m in ms and m not in folded), ms[0] if ms else None)
    return {
        "runs": ids,
        "seed": _column(pop["seed"]) if "seed" in pop.columns else None,
        "dataset": _column(pop["dataset"]) if "dataset" in pop.columns and pop["dataset"].n_unique() > 1 else None,
        "axes": [{"name": name_of(a), "values": _column(pop[a]), "numeric": bool(pop[a].dtype.is_numeric())}
                 for a in axes],
        "outcomes": {o: _column(pop[o]) for o in OUTCOMES if o in pop.columns},
        "measures": [{"name": m, "values": _column(pop[cols[m]]), "folded": folded.get(m, "")} for m in ms],
        "lead": [m for m in lead if m in ms and m not in folded][:3],
        "chosen": chosen, "scored": scored if scored in ms else None,
        "target_loss": target, "art": art,
    }


def section(data: dict) -> str:
    """The HTML of the linked views (the script fills them; without it, a note says what they need)."""
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    n = len(data["runs"])
    return (
        f'<script type="application/json" id="linked-data">{blob}</script>'
        '<noscript><p class="note">The linked views need JavaScript.</p></noscript>'
        '<div id="linked" hidden>'
        '<h3>The gap against a measure</h3>'
        '<div class="rank-ctl"><label>measure <select id="scatter-measure"></select></label>'
        '<span class="meta">Click a point to open its network; brush the parallel coordinates below to '
        'filter.</span></div><div id="scatter"></div>'
        '<h3>Parallel coordinates</h3>'
        '<p class="note">One line per network across its hyperparameters, its gap and the chosen measures. Drag '
        'along an axis to keep only the networks within that range (on several axes: within all); click an '
        'axis without dragging to clear it. The brushes filter the scatter and the list of networks.</p>'
        '<div class="rank-ctl"><label>add a measure axis <select id="pc-add"><option value="">—</option>'
        '</select></label><button type="button" id="pc-clear">clear brushes</button>'
        '<span class="count" id="pc-count"></span></div>'
        '<div class="wrap" id="pc"></div>'
        f'<h3>The {n} analysed networks</h3>'
        '<p class="note">Click a row to open its network below. The measure column follows the scatter\'s '
        'choice.</p>'
        '<div class="wrap netlist"><table id="net-table"><thead></thead><tbody></tbody></table></div>'
        '<div id="net-view" hidden></div>'
        "</div>")


SCRIPT = r"""
(function () {
  "use strict";
  var holder = document.getElementById("linked-data");
  if (!holder) { return; }
  var probe = document.createElement("div");
  probe.innerHTML = "<svg></svg>";  // the SVG namespace, as the HTML parser gives it
  var D = JSON.parse(holder.textContent), N = D.runs.length, NS = probe.firstChild.namespaceURI;
  var MISSING = __MISSING__;
  var M = {}; D.measures.forEach(function (m) { M[m.name] = m; });
  var state = {chosen: D.chosen, extra: D.lead.slice(), brush: {}, open: -1};
  if (state.chosen && state.extra.indexOf(state.chosen) < 0) { state.extra.unshift(state.chosen); }

  function svg(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) { if (attrs.hasOwnProperty(k)) { e.setAttribute(k, attrs[k]); } }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function html(tag, attrs, parent, text) {
    var e = document.createElement(tag);
    for (var k in attrs) { if (attrs.hasOwnProperty(k)) { e.setAttribute(k, attrs[k]); } }
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) { return MISSING; }
    if (typeof v !== "number") { return String(v); }
    var a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? v.toExponential(3) : String(+v.toPrecision(4));
  }
  function label(t, x, y, parent, anchor, cls) {
    var e = svg("text", {x: x, y: y, "text-anchor": anchor || "start", "class": cls || "ax"}, parent);
    e.textContent = t; return e;
  }

  // ---------------------------------------------------------------- columns and brushes
  function column(key) {
    if (key === "gap") { return {name: "gap", values: D.outcomes.gap, numeric: true}; }
    if (key.indexOf("hp:") === 0) {
      var a = D.axes.filter(function (x) { return x.name === key.slice(3); })[0];
      return {name: a.name, values: a.values, numeric: a.numeric};
    }
    var m = M[key.slice(2)];
    return {name: m.name, values: m.values, numeric: true};
  }
  function scale(col) {  // data → [0, 1]; categories (text) by their sorted order
    if (!col.numeric) {
      var cats = col.values.filter(function (v, i, s) { return v !== null && s.indexOf(v) === i; }).sort();
      return {cats: cats, f: function (v) { var i = cats.indexOf(v); return i < 0 ? null : (cats.length > 1 ? i / (cats.length - 1) : 0.5); },
              inv: function (t) { return t * (cats.length - 1); }};
    }
    var lo = Infinity, hi = -Infinity;
    col.values.forEach(function (v) { if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    if (lo === Infinity) { lo = 0; hi = 1; }
    var span = hi > lo ? hi - lo : 1;
    return {lo: lo, hi: hi, f: function (v) { return v === null ? null : (hi > lo ? (v - lo) / span : 0.5); },
            inv: function (t) { return lo + t * span; }};
  }
  function kept(i) {
    for (var key in state.brush) {
      if (!state.brush.hasOwnProperty(key)) { continue; }
      var b = state.brush[key], v = column(key).values[i];
      if (v === null) { return false; }
      if (b.cats) { if (b.cats.indexOf(v) < 0) { return false; } }
      else if (v < b.lo || v > b.hi) { return false; }
    }
    return true;
  }

  // ---------------------------------------------------------------- the scatter
  var chooser = document.getElementById("scatter-measure");
  D.measures.forEach(function (m) {
    if (m.folded) { return; }
    var o = html("option", {value: m.name}, chooser, (m.name === D.scored ? "★ " : "") + m.name
                 + (m.name === D.scored ? " (your measure)" : ""));
    if (m.name === D.scored) { o.className = "scored"; }
  });
  if (state.chosen) { chooser.value = state.chosen; }
  chooser.addEventListener("change", function () {
    var old = state.chosen;
    state.chosen = chooser.value;
    if (state.extra.indexOf(state.chosen) < 0) {
      var k = state.extra.indexOf(old);
      if (k >= 0 && D.lead.indexOf(old) < 0) { state.extra[k] = state.chosen; } else { state.extra.unshift(state.chosen); }
    }
    drawScatter(); drawPC(); drawTable(); update();
  });

  function drawScatter() {
    var box = document.getElementById("scatter"); box.textContent = "";
    if (!state.chosen) { return; }
    var W = 640, H = 360, L = 64, R = 16, T = 14, B = 44;
    var s = svg("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "scatter",
                        "data-measure": state.chosen}, box);
    var xs = M[state.chosen].values, ys = D.outcomes.gap;
    var pos = xs.filter(function (v) { return v !== null; });
    var logx = pos.length > 0 && pos.every(function (v) { return v > 0; }) &&
               Math.max.apply(null, pos) / Math.min.apply(null, pos) > 100;
    var tx = function (v) { return logx ? Math.log10(v) : v; };
    var sx = scale({values: xs.map(function (v) { return v === null ? null : tx(v); }), numeric: true});
    var sy = scale({values: ys, numeric: true});
    svg("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fcfcfc", stroke: "#ccc"}, s);
    label((logx ? "log10 " : "") + state.chosen + (state.chosen === D.scored ? " (your measure)" : ""),
          (L + W - R) / 2, H - 8, s, "middle", "ax" + (state.chosen === D.scored ? " scored" : ""));
    var yl = label("gap", 14, (T + H - B) / 2, s, "middle"); yl.setAttribute("transform", "rotate(-90 14 " + (T + H - B) / 2 + ")");
    [0, 0.5, 1].forEach(function (t) {
      label(fmt(logx ? Math.pow(10, sx.inv(t)) : sx.inv(t)), L + t * (W - L - R), H - B + 14, s, "middle");
      label(fmt(sy.inv(t)), L - 4, H - B - t * (H - T - B) + 4, s, "end");
    });
    var n = 0;
    for (var i = 0; i < N; i++) {
      if (xs[i] === null || ys[i] === null) { continue; }
      n += 1;
      var c = svg("circle", {cx: (L + sx.f(tx(xs[i])) * (W - L - R)).toFixed(1),
                             cy: (H - B - sy.f(ys[i]) * (H - T - B)).toFixed(1), r: 3.2,
                             "class": "pt", "data-i": i, "data-run": D.runs[i]}, s);
      svg("title", {}, c).textContent = "run " + D.runs[i] + "\n" + pointText(i);
    }
    s.setAttribute("data-points", n);
  }
  function pointText(i) {
    var parts = D.axes.map(function (a) { return a.name + " " + fmt(a.values[i]); });
    if (D.seed) { parts.push("seed " + fmt(D.seed[i])); }
    return parts.join(" · ") + "\ngap " + fmt(D.outcomes.gap[i]) + "\n" + state.chosen + " " + fmt(M[state.chosen].values[i]);
  }
  document.getElementById("scatter").addEventListener("click", function (e) {
    var t = e.target;
    if (t && t.classList && t.classList.contains("pt")) { openNetwork(+t.getAttribute("data-i")); }
  });

  // ---------------------------------------------------------------- parallel coordinates
  var adder = document.getElementById("pc-add");
  D.measures.forEach(function (m) { if (!m.folded) { html("option", {value: m.name}, adder, m.name); } });
  adder.addEventListener("change", function () {
    if (adder.value && state.extra.indexOf(adder.value) < 0) { state.extra.push(adder.value); drawPC(); update(); }
    adder.value = "";
  });
  document.getElementById("pc-clear").addEventListener("click", function () { state.brush = {}; drawPC(); update(); });

  function pcKeys() {
    return D.axes.map(function (a) { return "hp:" + a.name; }).concat(["gap"])
      .concat(state.extra.map(function (m) { return "m:" + m; }));
  }
  var PC = {H: 300, T: 30, B: 40, gap: 120, L: 50};
  function drawPC() {
    var box = document.getElementById("pc"); box.textContent = "";
    var keys = pcKeys(), W = PC.L * 2 + PC.gap * (keys.length - 1);
    var s = svg("svg", {width: W, height: PC.H, viewBox: "0 0 " + W + " " + PC.H, "class": "pcoords"}, box);
    var span = PC.H - PC.T - PC.B, scales = keys.map(function (k) { return scale(column(k)); });
    var lines = svg("g", {"class": "pc-lines"}, s);
    for (var i = 0; i < N; i++) {
      var d = "", pen = false;
      keys.forEach(function (k, j) {
        var t = scales[j].f(column(k).values[i]);
        if (t === null) { pen = false; return; }
        d += (pen ? "L" : "M") + (PC.L + j * PC.gap) + " " + (PC.T + (1 - t) * span).toFixed(1);
        pen = true;
      });
      svg("path", {d: d, "class": "pc-line", "data-i": i}, lines);
    }
    keys.forEach(function (k, j) {
      var x = PC.L + j * PC.gap, sc = scales[j], col = column(k);
      var g = svg("g", {"class": "pc-axis" + (k === "m:" + D.scored ? " scored" : ""), "data-key": k,
                        "data-x": x}, s);
      svg("line", {x1: x, y1: PC.T, x2: x, y2: PC.T + span, stroke: "#555"}, g);
      label(col.name + (k === "m:" + D.scored ? " ★" : ""), x, PC.T - 12, g, "middle", "ax pc-name");
      if (sc.cats) {
        sc.cats.forEach(function (c) { label(String(c), x + 4, PC.T + (1 - sc.f(c)) * span + 4, g, "start"); });
      } else {
        label(fmt(sc.hi), x + 4, PC.T + 4, g, "start"); label(fmt(sc.lo), x + 4, PC.T + span + 4, g, "start");
      }
      var b = state.brush[k], r = svg("rect", {"class": "pc-brush", x: x - 7, width: 14, y: 0, height: 0}, g);
      if (b) {
        var y0 = PC.T + (1 - sc.f(b.cats ? b.cats[b.cats.length - 1] : Math.min(b.hi, sc.hi))) * span;
        var y1 = PC.T + (1 - sc.f(b.cats ? b.cats[0] : Math.max(b.lo, sc.lo))) * span;
        r.setAttribute("y", Math.min(y0, y1) - 2); r.setAttribute("height", Math.abs(y1 - y0) + 4);
        if (!b.cats) { g.setAttribute("data-lo", b.lo); g.setAttribute("data-hi", b.hi); }
      }
      var hit = svg("rect", {"class": "pc-hit", x: x - 14, width: 28, y: PC.T - 4, height: span + 8,
                             fill: "transparent"}, g);
      hit.addEventListener("mousedown", function (e) { startBrush(e, k, sc, g, r); });
    });
  }
  function startBrush(e, key, sc, g, r) {
    e.preventDefault();
    var s = g.ownerSVGElement, span = PC.H - PC.T - PC.B;
    function y(ev) {
      var rect = s.getBoundingClientRect(), h = rect.height / PC.H;
      return Math.min(Math.max((ev.clientY - rect.top) / h, PC.T), PC.T + span);
    }
    var y0 = y(e), y1 = y0;
    function move(ev) {
      y1 = y(ev);
      r.setAttribute("y", Math.min(y0, y1)); r.setAttribute("height", Math.abs(y1 - y0));
    }
    function up(ev) {
      document.removeEventListener("mousemove", move); document.removeEventListener("mouseup", up);
      y1 = y(ev);
      if (Math.abs(y1 - y0) < 2) { delete state.brush[key]; }
      else {
        var t0 = 1 - (Math.max(y0, y1) - PC.T) / span, t1 = 1 - (Math.min(y0, y1) - PC.T) / span;
        if (sc.cats) {
          state.brush[key] = {cats: sc.cats.filter(function (c) { var t = sc.f(c); return t >= t0 && t <= t1; })};
        } else { state.brush[key] = {lo: sc.inv(t0), hi: sc.inv(t1)}; }
      }
      drawPC(); update();
    }
    document.addEventListener("mousemove", move); document.addEventListener("mouseup", up);
  }

  // ---------------------------------------------------------------- the list of networks
  var order = [];
  for (var i0 = 0; i0 < N; i0++) { order.push(i0); }
  order.sort(function (a, b) {
    var x = D.outcomes.gap[a], y = D.outcomes.gap[b];
    return x === null ? 1 : y === null ? -1 : x - y || (D.runs[a] < D.runs[b] ? -1 : 1);
  });
  function drawTable() {
    var t = document.getElementById("net-table"), head = t.tHead, body = t.tBodies[0];
    head.textContent = ""; body.textContent = "";
    var hr = html("tr", {}, head);
    html("th", {"class": "l"}, hr, "run id");
    if (D.dataset) { html("th", {"class": "l"}, hr, "dataset"); }
    if (D.seed) { html("th", {}, hr, "seed"); }
    D.axes.forEach(function (a) { html("th", {}, hr, a.name); });
    html("th", {}, hr, "gap");
    if (state.chosen) { html("th", {"class": state.chosen === D.scored ? "scored" : ""}, hr, state.chosen); }
    order.forEach(function (i) {
      var tr = html("tr", {"data-i": i, "data-run": D.runs[i], "class": "net"}, body);
      html("td", {"class": "l"}, tr, D.runs[i]);
      if (D.dataset) { html("td", {"class": "l"}, tr, fmt(D.dataset[i])); }
      if (D.seed) { html("td", {"class": "seed"}, tr, fmt(D.seed[i])); }
      D.axes.forEach(function (a) { html("td", {}, tr, fmt(a.values[i])); });
      html("td", {}, tr, fmt(D.outcomes.gap[i]));
      if (state.chosen) { html("td", {}, tr, fmt(M[state.chosen].values[i])); }
    });
  }
  document.getElementById("net-table").addEventListener("click", function (e) {
    var tr = e.target.closest ? e.target.closest("tr.net") : null;
    if (tr) { openNetwork(+tr.getAttribute("data-i")); }
  });

  function update() {  // the brushes → the scatter's points, the lines and the list
    var n = 0, keep = [];
    for (var i = 0; i < N; i++) { keep.push(kept(i)); if (keep[i]) { n += 1; } }
    document.querySelectorAll("#scatter .pt").forEach(function (c) {
      c.classList.toggle("out", !keep[+c.getAttribute("data-i")]); });
    document.querySelectorAll("#pc .pc-line").forEach(function (p) {
      p.classList.toggle("out", !keep[+p.getAttribute("data-i")]); });
    document.querySelectorAll("#net-table tr.net").forEach(function (r) {
      var i = +r.getAttribute("data-i"); r.hidden = !keep[i]; r.classList.toggle("open", i === state.open); });
    document.getElementById("pc-count").textContent = n + " of " + N + " networks within the brushes";
  }

  // ---------------------------------------------------------------- one network's view
  function panel(title, parent) {
    var fig = html("figure", {"class": "net-panel"}, parent);
    var s = svg("svg", {width: 330, height: 220, viewBox: "0 0 330 220"}, fig);
    html("figcaption", {}, fig, title);
    return s;
  }
  function lineChart(s, series, opts) {  // series: [{x: [...], y: [...], colour, width}]
    var L = 52, R = 8, T = 8, B = 30, W = 330, H = 220, xs = [], ys = [];
    series.forEach(function (q) { q.x.forEach(function (v, k) {
      var y = q.y[k]; if (v !== null && y !== null && (!opts.logy || y > 0)) { xs.push(v); ys.push(opts.logy ? Math.log10(y) : y); } }); });
    if (!xs.length) { label("nothing finite to draw", W / 2, H / 2, s, "middle"); return; }
    var sx = scale({values: xs, numeric: true}), sy = scale({values: ys, numeric: true});
    svg("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fcfcfc", stroke: "#ccc"}, s);
    series.forEach(function (q) {
      var d = "", pen = false;
      q.x.forEach(function (v, k) {
        var y = q.y[k];
        if (v === null || y === null || (opts.logy && y <= 0)) { pen = false; return; }
        var py = opts.logy ? Math.log10(y) : y;
        d += (pen ? "L" : "M") + (L + sx.f(v) * (W - L - R)).toFixed(1) + " " + (H - B - sy.f(py) * (H - T - B)).toFixed(1);
        pen = true;
      });
      svg("path", {d: d, fill: "none", stroke: q.colour || "#1f4e79", "stroke-width": q.width || 1.2}, s);
    });
    [0, 1].forEach(function (t) {
      label(fmt(sx.inv(t)), L + t * (W - L - R), H - B + 13, s, "middle");
      var v = sy.inv(t); label(fmt(opts.logy ? Math.pow(10, v) : v), L - 3, H - B - t * (H - T - B) + 4, s, "end");
    });
    label(opts.x, (L + W - R) / 2, H - 4, s, "middle");
  }
  function percentile(v, others) {
    var xs = others.filter(function (x) { return x !== null; });
    if (v === null || !xs.length) { return null; }
    var below = 0, tie = 0; xs.forEach(function (x) { if (x < v) { below += 1; } else if (x === v) { tie += 1; } });
    return 100 * (below + 0.5 * tie) / xs.length;
  }
  function openNetwork(i) {
    state.open = i;
    var box = document.getElementById("net-view"), A = D.art;
    box.textContent = ""; box.hidden = false; box.setAttribute("data-run", D.runs[i]);
    var h = html("h3", {}, box, "Network " + D.runs[i]);
    h.id = "net-view-title";
    var facts = D.axes.map(function (a) { return a.name + " = " + fmt(a.values[i]); });
    if (D.seed) { facts.push("seed " + fmt(D.seed[i])); }
    ["gap", "train_acc", "test_acc", "train_loss"].forEach(function (o) {
      if (D.outcomes[o]) { facts.push(o + " " + fmt(D.outcomes[o][i])); } });
    html("p", {}, box, facts.join(" · "));
    var panels = html("div", {"class": "net-panels"}, box), notes = [];
    function art(k) { return A[k] ? A[k][i] : null; }
    if (art("train")) {
      var tr = art("train"), ep = tr.map(function (_, k) { return k + 1; }), ser = [{x: ep, y: tr}];
      if (D.target_loss) { ser.push({x: [1, tr.length], y: [D.target_loss, D.target_loss], colour: "#c0392b", width: 0.8}); }
      lineChart(panel("Training curve: mean mini-batch loss per epoch (log)", panels), ser, {logy: true, x: "epoch"});
    } else { notes.push("no training curve stored"); }
    if (art("spec_nodes") && art("spec_w")) {
      var nodes = art("spec_nodes"), w = art("spec_w"), fin = nodes.filter(function (v) { return v !== null; });
      var lo = Math.min.apply(null, fin), hi = Math.max.apply(null, fin), sp = Math.max(hi - lo, 1e-12), sd = 0.015 * sp;
      var gx = [], gy = [];
      for (var k = 0; k < 200; k++) {
        var x = lo - 0.05 * sp + k * 1.1 * sp / 199, d = 0;
        nodes.forEach(function (n, j) { if (n !== null && w[j] !== null) { d += w[j] * Math.exp(-0.5 * Math.pow((x - n) / sd, 2)); } });
        gx.push(x); gy.push(d / (sd * Math.sqrt(2 * Math.PI)));
      }
      var top = Math.max.apply(null, gy);
      lineChart(panel("Hessian eigenvalue density (SLQ, smoothed; log)", panels),
                [{x: gx, y: gy.map(function (v) { return Math.max(v, top * 1e-5); })}], {logy: true, x: "eigenvalue"});
    } else { notes.push("no Hessian spectrum stored"); }
    if (art("curve_t") && art("curves")) {
      var t = art("curve_t"), c = art("curves"), K = Math.floor(c.length / t.length), ser2 = [];
      for (var q = 0; q < K; q++) { ser2.push({x: t, y: c.slice(q * t.length, (q + 1) * t.length), colour: "#999", width: 0.8}); }
      lineChart(panel("Loss along " + K + " filter-normalised directions", panels), ser2, {x: "step along δ"});
    } else { notes.push("no filter-normalised loss curves stored"); }
    if (art("surf_t") && art("surf") && art("surf").length === art("surf_t").length * art("surf_t").length) {
      var st = art("surf_t"), sv = art("surf"), n = st.length, s = panel("Loss surface (" + n + " × " + n + ", log colour)", panels);
      var fv = sv.filter(function (v) { return v !== null && v > 0; }).map(Math.log);
      var a = Math.min.apply(null, fv), b = Math.max.apply(null, fv), cell = 180 / n;
      for (var r = 0; r < n; r++) { for (var cc = 0; cc < n; cc++) {
        var v = sv[r * n + cc], f = (v === null || v <= 0 || b <= a) ? 0 : (Math.log(v) - a) / (b - a);
        svg("rect", {x: 70 + cc * cell, y: 10 + (n - 1 - r) * cell, width: cell + 0.5, height: cell + 0.5,
                     fill: "hsl(" + (260 - 200 * f).toFixed(0) + ",60%," + (30 + 40 * f).toFixed(0) + "%)"}, s);
      } }
      label("b along δ₂ →   (a along δ₁ ↑)", 160, 210, s, "middle");
    } else { notes.push("no 2-D loss surface stored"); }
    if (notes.length) { html("p", {"class": "note"}, box, "Not shown: " + notes.join("; ") + "."); }
    var tbl = html("table", {"class": "netpos"}, html("div", {"class": "wrap"}, box));
    var hr = html("tr", {}, tbl);
    ["quantity", "this network", "percentile", "study median", "study range", "other networks"].forEach(function (c, j) {
      html("th", {"class": j ? "" : "l"}, hr, c); });
    var rows = Object.keys(D.outcomes).map(function (o) { return {name: o, values: D.outcomes[o], kind: "outcome"}; })
      .concat(D.measures.map(function (m) { return {name: m.name, values: m.values, kind: "measure", folded: m.folded}; }));
    rows.forEach(function (q) {
      var v = q.values[i], others = q.values.filter(function (x, j) {  // the other networks of its dataset
        return j !== i && x !== null && (!D.dataset || D.dataset[j] === D.dataset[i]); });
      var all = v === null ? others : others.concat([v]), sorted = all.slice().sort(function (x, y) { return x - y; });
      var med = sorted.length ? (sorted.length % 2 ? sorted[(sorted.length - 1) / 2]
                : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2) : null;
      var tr = html("tr", {"class": q.kind + (q.name === D.scored ? " scored" : "")}, tbl);
      html("td", {"class": "l"}, tr, q.name + (q.folded ? " (= " + q.folded + ")" : ""));
      html("td", {}, tr, fmt(v)); html("td", {}, tr, fmt(percentile(v, others) === null ? null : Math.round(percentile(v, others))));
      html("td", {}, tr, fmt(med));
      html("td", {}, tr, sorted.length ? fmt(sorted[0]) + " – " + fmt(sorted[sorted.length - 1]) : MISSING);
      html("td", {}, tr, String(others.length));
    });
    update();
    if (box.scrollIntoView) { box.scrollIntoView({block: "nearest"}); }
  }
  document.querySelectorAll("table.netruns").forEach(function (t) {  // the one-network section's list
    t.addEventListener("click", function (e) {
      var tr = e.target.closest ? e.target.closest("tr[data-run]") : null;
      if (tr) { window.openNetwork(tr.getAttribute("data-run")); }
    });
  });
  window.openNetwork = function (runId) { var i = D.runs.indexOf(runId); if (i >= 0) { openNetwork(i); } return i >= 0; };

  document.getElementById("linked").hidden = false;
  drawScatter(); drawPC(); drawTable(); update();
  window.__linkedReady = performance.now();
})();
"""

