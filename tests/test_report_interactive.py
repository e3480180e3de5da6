"""The report's interactive parts (issue 13, items 3 and 4): the ranking table sorted, filtered and
grouped by clicks, measure definitions on hover, scatter points that name their run, heat maps
sized to their content, figure titles in words. Chromium is driven by an injected probe script
that dispatches the clicks, inputs and pointer moves and writes what the page shows into the DOM.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.text import Text

from analysis import figures, interactive, measure_info
from analysis import report as report_module
from analysis.load import population, sort_ranking
from analysis.report import write_report
from analysis.table import rank_table
from study.schema import ARTIFACTS
from tests.test_report import _PROBE_HEAD, RANK, Page, chromium, decode_png, needs_chromium, study_frame

# measures of four families, and one the registry does not know (as a user's score would be)
NAMES = {"m00": "path_norm", "m01": "hessian_trace", "m02": "pacbayes_flatness", "m03": "param_norm",
         "m04": "sharpness_init", "m05": "keskar_sharpness_1e-3", "m06": "params", "m07": "m07"}


@pytest.fixture(scope="module")
def runs() -> pl.DataFrame:
    return study_frame().rename({f"measure.{k}": f"measure.{v}" for k, v in NAMES.items()})


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory) -> Path:
    return write_report("demo", tmp_path_factory.mktemp("interactive") / "report.html", runs=runs, top=4, **RANK)


@pytest.fixture(scope="module")
def table(runs) -> pl.DataFrame:
    """The ranking as the page shows it (the report's ranking, in its order), with each row's place."""
    return sort_ranking(rank_table(population(runs), **RANK)).with_row_index("place").with_columns(
        pl.col(pl.Float64).fill_nan(None))


# ------------------------------------------------------------ driving Chromium

# Test-only, before the page's own script: records every fetch and XMLHttpRequest, and every src or
# href set on an element after this script that is not inline data or a fragment (file:// loads leave no
# resource-timing entry, so they are caught here and by the load-error listener of _PROBE_HEAD).
_NET = ("<script>window.__net=[];var __f=window.fetch;window.fetch=function(u){__net.push('fetch '+u);"
        "return __f.apply(this,arguments);};var __o=XMLHttpRequest.prototype.open;"
        "XMLHttpRequest.prototype.open=function(m,u){__net.push('xhr '+u);return __o.apply(this,arguments);};"
        "function __url(n){if(!n.getAttribute)return;['src','href','srcset'].forEach(function(a){"
        "var v=n.getAttribute(a);if(v&&!/^(data:|#)/.test(v))__net.push(n.tagName+' '+a+' '+v.slice(0,80));});}"
        "new MutationObserver(function(ms){ms.forEach(function(m){"
        "if(m.type==='attributes')__url(m.target);m.addedNodes.forEach(function(n){__url(n);"
        "if(n.querySelectorAll)n.querySelectorAll('[src],[href],[srcset]').forEach(__url);});});})"
        ".observe(document.documentElement,{subtree:true,childList:true,attributes:true,"
        "attributeFilter:['src','href','srcset']});</script>")

# Runs after load: clicks headers, filters, groups and points at scatter points, recording the rows shown.
_ACTIONS = r"""
var t = document.querySelector("table.rank"), ctl = document.querySelector(".rank-ctl");
var heads = t.tHead.rows[0].cells, H = Array.prototype.map.call(heads, function (h) { return h.textContent; });
function shown() { return Array.prototype.filter.call(t.tBodies[0].rows, function (r) {
  return !r.hidden && !r.classList.contains("fam-head"); }).map(function (r) { return r.dataset.measure; }); }
function layout() { return Array.prototype.filter.call(t.tBodies[0].rows, function (r) { return !r.hidden; })
  .map(function (r) { return r.classList.contains("fam-head") ? "#" + r.dataset.family : r.dataset.measure; }); }
function click(label) { heads[H.indexOf(label)].dispatchEvent(new MouseEvent("click", {bubbles: true})); }
function set(sel, v, ev) { var e = ctl.querySelector(sel); if (sel === ".grp") { e.checked = v; } else { e.value = v; }
  e.dispatchEvent(new Event(ev, {bubbles: true})); }
var r = {heads: H, controls_shown: !ctl.hidden, initial: shown()};
click("τ"); r.tau_1 = shown(); r.tau_1_aria = heads[H.indexOf("τ")].getAttribute("aria-sort");
click("τ"); r.tau_2 = shown();
heads[H.indexOf("measure")].dispatchEvent(new KeyboardEvent("keydown", {key: "Enter", bubbles: true}));
r.name_1 = shown(); click("Ψ"); r.psi_1 = shown(); click("CMI"); r.cmi_1 = shown();
set(".fam", "norm", "change"); r.fam_norm = shown(); r.count = ctl.querySelector(".count").textContent;
set(".fam", "-", "change"); r.fam_none = shown(); set(".fam", "", "change");
set(".q", "SHARP", "input"); r.text_sharp = shown(); set(".q", "", "input");
set(".grp", true, "change"); r.grouped = layout();
set(".q", "norm", "input"); r.grouped_norm = layout(); set(".q", "", "input"); set(".grp", false, "change");
r.reset = shown();

var fig = document.querySelector("figure.queryable"), img = fig.querySelector("img");
var data = JSON.parse(fig.querySelector("script.points").textContent), tip = fig.querySelector(".pt-tip");
var rect = img.getBoundingClientRect(), all = [];
data.panels.forEach(function (p, i) { p.x.forEach(function (x, k) { all.push([i, k, x * rect.width, p.y[k] * rect.height]); }); });
function isolated(a) { return all.every(function (b) { return b === a || Math.hypot(a[2] - b[2], a[3] - b[3]) > 10; }); }
function point(fx, fy) { img.dispatchEvent(new MouseEvent("mousemove", {bubbles: true,
  clientX: rect.left + fx * rect.width, clientY: rect.top + fy * rect.height})); }
r.hover = all.filter(isolated).slice(0, 6).map(function (a) {
  var p = data.panels[a[0]]; point(p.x[a[1]], p.y[a[1]]);
  return {panel: a[0], k: a[1], run: tip.dataset.run, text: tip.textContent, shown: !tip.hidden}; });
point(0.002, 0.002); r.miss_shown = !tip.hidden;
r.rendered_width = rect.width;
return r;
"""


def drive(page: Path, tmp: Path, actions: str) -> tuple[dict, list[str]]:
    """Open ``page`` in Chromium and run ``actions`` (a JS function body returning a value) after load:
    (that value with the load errors and requests, console messages)."""
    text = page.read_text(encoding="utf-8")
    tail = ("<script>addEventListener('load',function(){var out;try{out={value:(function(){" + actions + "})()};}"
            "catch(e){out={exception:String(e&&e.stack||e)};}out.errors=__errs;out.net=__net;"
            "var p=document.createElement('pre');p.id='__probe';p.textContent=JSON.stringify(out);"
            "document.body.appendChild(p);});</script>")
    probed = tmp / f"driven-{page.name}"
    probed.write_text(text.replace("<head>", "<head>" + _PROBE_HEAD + _NET, 1).replace("</body>", tail + "</body>", 1),
                      encoding="utf-8")
    p = chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), tmp=tmp)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', p.stdout, re.S)
    assert m, f"chromium did not load the page (rc {p.returncode}): {p.stderr[-2000:]}"
    out = json.loads(html.unescape(m.group(1)))
    assert "exception" not in out, out["exception"]
    return out, [ln for ln in p.stderr.splitlines() if ":CONSOLE" in ln]


@pytest.fixture(scope="module")
def driven(page, tmp_path_factory) -> tuple[dict, list[str]]:
    return drive(page, tmp_path_factory.mktemp("chromium"), _ACTIONS)


def order(table: pl.DataFrame, col: str, descending: bool) -> list[str]:
    """The measures sorted by ``col`` (missing last, ties in the page's order), as the page should."""
    return table.sort([col, "place"], descending=[descending, False], nulls_last=True)["measure"].to_list()


# ------------------------------------------------------------ the table


@needs_chromium
def test_header_clicks_sort_the_rows(driven, table):
    r = driven[0]["value"]
    assert r["controls_shown"] and r["initial"] == table["measure"].to_list()
    assert r["tau_1"] == order(table, "tau", True) and r["tau_1_aria"] == "descending"  # numbers: highest first
    assert r["tau_2"] == order(table, "tau", False)  # again: reversed, the missing still last
    assert r["name_1"] == sorted(table["measure"].to_list())  # text: A to Z
    assert r["psi_1"] == order(table, "psi", True) and r["cmi_1"] == order(table, "cmi", True)
    assert r["reset"] == r["cmi_1"]


@needs_chromium
def test_filters_hide_the_right_rows(driven, table):
    r = driven[0]["value"]
    fam = table.with_columns(family=pl.col("measure").map_elements(interactive.family, return_dtype=pl.String))
    in_order = order(fam, "cmi", True)  # the filters keep the last sort (by CMI)
    norm = set(fam.filter(pl.col("family") == "norm")["measure"])
    assert norm == {"path_norm", "param_norm"}
    assert r["fam_norm"] == [m for m in in_order if m in norm]
    assert r["count"] == f"{len(norm)} of {table.height} measures shown"
    assert r["fam_none"] == ["m07"]  # the measure the registry does not know
    assert r["text_sharp"] == [m for m in in_order if "sharp" in m.lower()]
    assert set(r["text_sharp"]) == {"sharpness_init", "keskar_sharpness_1e-3"}


@needs_chromium
def test_grouping_by_family_keeps_the_order_within_each_family(driven, table):
    r = driven[0]["value"]
    cmi = order(table, "cmi", True)
    families = list(dict.fromkeys(interactive.family(m) or "-" for m in cmi))  # by their best member
    expected = [x for f in families for x in ["#" + f] + [m for m in cmi if (interactive.family(m) or "-") == f]]
    assert r["grouped"] == expected
    # a filter hides the rows and the heads of the families left empty
    assert r["grouped_norm"] == ["#norm"] + [m for m in cmi if m in {"path_norm", "param_norm"}]


def test_measure_names_carry_their_definition_and_citation(page):
    cells = dict((m, t) for t, m in re.findall(r'<td class="l def" title="([^"]*)">([^<]+)</td>',
                                               page.read_text(encoding="utf-8")))
    info = measure_info.load()
    assert set(cells) == set(NAMES.values()) - {"m07"}  # an unknown measure has no tooltip
    for m, tip in cells.items():
        tip = html.unescape(tip)
        assert info[m]["definition"] in tip and f"Citation: {info[m]['cite']}." in tip
    assert "Stochastic" in html.unescape(cells["hessian_trace"]) and "Stochastic" not in cells["params"]
    assert '<td class="l">m07</td><td class="l">–</td>' in page.read_text(encoding="utf-8")


def test_measure_info_is_the_registry_now():
    """The committed copy cannot drift: rewrite it with `python -m analysis.measure_info`."""
    now = measure_info.from_registry()
    assert measure_info.load() == now
    assert measure_info.PATH.read_text(encoding="utf-8") == measure_info.dumps(now)
    assert measure_info.definition("a\n   b.\n\n c") == "a b."


def test_empty_columns_are_hidden_with_the_reason(page):
    text = page.read_text(encoding="utf-8")
    head = Page(text).rank_rows[0]
    assert "robust max" not in head and "envs" not in head and 'id="no-robust"' in text
    assert "reliability" not in head and 'id="no-reliability"' in text
    # a ranking with robust environments and reliabilities shows both
    t = pl.DataFrame({"measure": ["a", "b"], "tau": [0.1, 0.2], "cmi": [0.1, 0.2], "reliability": [None, 0.9],
                      "robust_max": [0.4, 0.5], "robust_envs": [0, 3]})
    shown = Page(report_module._rank_html(t)).rank_rows[0]
    assert {"robust max", "envs", "reliability", "τ ceiling"} <= set(shown)


# ------------------------------------------------------------ the scatter


@needs_chromium
def test_hovering_a_scatter_point_shows_its_run(driven, runs):
    r = driven[0]["value"]
    pop = population(runs)
    lead = figures.leading_measures(rank_table(pop, **RANK), 4)
    assert len(r["hover"]) >= 4 and not r["miss_shown"]
    assert {h["panel"] for h in r["hover"]} != {None}
    for h in r["hover"]:
        assert h["shown"] and h["text"].startswith(f"run {h['run']}\n")
        run = pop.filter(pl.col("run_id") == h["run"]).row(0, named=True)
        m = figures.short_name(lead[h["panel"]])
        assert f"gap {run['gap']:.4g}" in h["text"] and f"{m} {run['measure.' + m]:.4g}" in h["text"]
        assert f"lr {run['hp.lr']:g}" in h["text"] and f"seed {run['seed']}" in h["text"]


def test_scatter_points_lie_on_the_drawn_markers(page, runs):
    """Each point's position falls on a coloured marker of the PNG, and the positions order the runs
    as their values do (x by the measure, y by the gap, upwards)."""
    text = page.read_text(encoding="utf-8")
    m = re.search(r'<figure class="queryable"><script type="application/json" class="points">(.*?)</script>'
                  r'<img[^>]*src="([^"]+)"', text, re.S)
    data, px = json.loads(m.group(1)), decode_png(m.group(2))[..., :3].astype(int)
    h, w = px.shape[:2]
    pop = population(runs)
    assert data["runs"]["run_id"] == pop["run_id"].to_list()
    for p in data["panels"]:
        assert len(p["x"]) > 10
        for x, y in zip(p["x"], p["y"]):
            patch = px[int(round(y * h)) - 1:int(round(y * h)) + 2, int(round(x * w)) - 1:int(round(x * w)) + 2]
            assert (patch.max(axis=-1) - patch.min(axis=-1)).max() > 40, (p["measure"], x, y)  # a colour, not grey
        value = pop["measure." + p["measure"]].to_numpy()[p["row"]]
        gap = pop["gap"].to_numpy()[p["row"]]
        assert np.all(np.diff(np.array(p["x"])[np.argsort(value, kind="stable")]) >= -1e-9)
        assert np.all(np.diff(np.array(p["y"])[np.argsort(gap, kind="stable")]) <= 1e-9)


@needs_chromium
def test_no_console_error_and_no_request_leaves_the_file(driven, page, tmp_path):
    out, console = driven
    assert out["errors"] == [] and console == [] and out["net"] == []
    # the probe sees requests and a script error where there are some
    (tmp_path / "x.png").write_bytes(decode_png_bytes())
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><head></head><body><script>fetch("x.png");'
                       'var i = new Image(); i.src = "x.png"; document.body.appendChild(i);'
                       "nosuchfunction();</script></body></html>")
    bad, bad_console = drive(control, tmp_path, "return 1;")
    assert bad["net"] == ["fetch x.png", "IMG src x.png"]
    assert any("nosuchfunction" in e for e in bad["errors"]) and bad_console


def decode_png_bytes() -> bytes:
    """A 1 × 1 PNG."""
    import base64
    return base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


# ------------------------------------------------------------ figures


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def test_figure_titles_are_words_not_column_names(runs):
    pop = population(runs)
    names = [n for a in ARTIFACTS.values() for n in (a.name, a.column)]
    for fig in (figures.hessian_spectra(pop), figures.landscape_curves(pop)):
        texts = _texts(fig)
        assert texts and not [t for t in texts if any(n in t for n in names)], texts
    assert any(t.startswith("Eigenvalue density against λ\n") for t in _texts(figures.hessian_spectra(pop)))


@pytest.mark.parametrize("rows", [2, 40])
def test_heat_maps_are_sized_to_their_content(runs, rows):
    """Everything drawn lies on the canvas, the canvas has no wide blank margin, and the height
    grows with the rows (about 0.24 in each)."""
    base = rank_table(population(runs), n_boot=0)
    t = pl.concat([base] * (rows // base.height + 1)).head(rows).with_columns(
        measure=pl.format("{}_{}", pl.col("measure"), pl.int_range(pl.len())))
    for draw in (figures.psi_heatmap, figures.cmi_heatmap):
        fig = draw(t)
        fig.canvas.draw()
        box = fig.bbox
        for text in fig.findobj(Text):
            if text.get_text() and text.get_visible():
                e = text.get_window_extent()
                assert e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y0 >= box.y0 - 1 and e.y1 <= box.y1 + 1, \
                    (draw.__name__, text.get_text())
        img = np.asarray(fig.canvas.buffer_rgba())[..., :3]
        ink = np.argwhere((img < 245).any(axis=-1))
        (y0, x0), (y1, x1) = ink.min(axis=0), ink.max(axis=0)
        assert (y1 - y0) / img.shape[0] > 0.9 and (x1 - x0) / img.shape[1] > 0.85, (draw.__name__, img.shape)
        assert fig.get_figheight() == pytest.approx(0.24 * rows + 2.0, abs=0.6)


def test_each_dataset_gets_its_own_table_and_controls(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_png", lambda fig, name, caption="": f'<img data-fig="{name}" src="#">')
    other = runs.with_columns(dataset=pl.lit("other"), run_id=pl.col("run_id") + "b")
    text = write_report("two", tmp_path / "r.html", runs=pl.concat([runs, other]), n_boot=0).read_text()
    ids = re.findall(r'<table class="rank" id="([^"]+)"', text)
    assert len(ids) == 2 == len(set(ids)) and re.findall(r'class="rank-ctl" data-table="([^"]+)"', text) == ids
