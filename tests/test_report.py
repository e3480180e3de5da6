"""The HTML report: written from a runs folder, checked as HTML, and opened in headless Chromium.

Chromium is the Debian package ``chromium`` (``apt-get install -y chromium``);
the Chromium tests skip, saying so, where it is missing.
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from analysis import figures
from analysis import report as report_module
from analysis.load import RunsError, load_runs, population
from analysis.report import write_report
from analysis.synthetic import synthetic_runs
from analysis.table import rank_table
from study.schema import ARTIFACTS, FIXED, PREFIXES, artifact_col, is_artifact

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); the CI script must install it")

ALL_FIGURES = {"gap", "psi", "cmi", "scatter", "hessian", "landscape", "network"}
RANK = {"n_boot": 20}  # a short bootstrap keeps the tests fast


# ------------------------------------------------------------ runs on disk


def add_artifacts(df: pl.DataFrame) -> pl.DataFrame:
    """Give each run a Hessian spectral density (nodes, weights) and two loss-landscape curves."""
    nodes = np.linspace(-1.0, 5.0, 40)
    t = 0.1 * np.array(ARTIFACTS["filter_sharpness_t"].grid)
    gap = np.nan_to_num(df["gap"].to_numpy(), nan=0.1)
    dens = [np.exp(-((nodes - 10 * g) ** 2)) + 1e-4 for g in gap]
    curves = [np.concatenate([(1 + g) * t ** 2, (2 + g) * t ** 2]).tolist() for g in gap]
    lists = {"hessian_density_nodes": [nodes.tolist()] * df.height,
             "hessian_density_weights": [(d / d.sum()).tolist() for d in dens],
             "filter_sharpness_t": [t.tolist()] * df.height, "filter_sharpness_curves": curves}
    return df.with_columns(pl.Series(artifact_col(k), v, dtype=pl.List(pl.Float64)) for k, v in lists.items())


def study_frame(*, artifacts: bool = True, seed: int = 0) -> pl.DataFrame:
    """54 synthetic runs (3 axes × 3 values × 2 seeds): some failed, unconverged, diverged, NaN measures."""
    df = synthetic_runs(54, 8, n_axes=3, n_values=3, seed=seed, nan_frac=0.1, failed_frac=0.08,
                        unconverged_frac=0.1, n_test=2000, study="demo")
    diverged = pl.Series([i in (3, 17) for i in range(df.height)])
    df = df.with_columns(
        status=pl.when(diverged).then(pl.lit("diverged")).otherwise(pl.col("status")),
        diverged=diverged, converged=pl.col("converged") & ~diverged)
    return add_artifacts(df) if artifacts else df


def write_runs_folder(df: pl.DataFrame, folder: Path) -> Path:
    """One Parquet file per run, ``<run_id>.parquet``, as the study writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(df.height):
        row = df.slice(i, 1)
        row.write_parquet(folder / f"{row['run_id'][0]}.parquet")
    return folder


# ------------------------------------------------------------ reading the page


class Page(HTMLParser):
    """The parts of the report the tests look at: images, scripts, links, table cells."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[dict] = []
        self.scripts: list[dict] = []
        self.tags: set[str] = set()
        self.urls: list[str] = []
        self.rank_rows: list[list[str]] = []
        self._in_rank = self._in_cell = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag == "img":
            self.images.append(a)
        if tag == "script":
            self.scripts.append(a)
        if tag == "table" and a.get("class") == "rank":
            self._in_rank = True
        if self._in_rank and tag == "tr":
            self.rank_rows.append([])
        if self._in_rank and tag in ("td", "th"):
            self._in_cell = True
            self.rank_rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_rank = False
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.rank_rows[-1][-1] += data


def decode_png(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:40]
    img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
    img.load()
    return np.asarray(img)


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}",
           "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


# Test-only probe: records failed resource loads (capture phase) and, after load, every image's
# decoded size into a <pre> that --dump-dom prints. The report itself has no script.
_PROBE_HEAD = ("<script>window.__errs=[];addEventListener('error',function(e){var t=e.target;"
               "__errs.push(t&&t.tagName?('failed '+t.tagName+' '+String(t.src||t.href||'').slice(0,80))"
               ":String(e.message));},true);</script>")
_PROBE_TAIL = ("<script>addEventListener('load',function(){var r={errors:__errs,images:[]};"
               "document.querySelectorAll('img').forEach(function(i){r.images.push({fig:i.dataset.fig||null,"
               "complete:i.complete,w:i.naturalWidth,h:i.naturalHeight});});"
               "var p=document.createElement('pre');p.id='__probe';p.textContent=JSON.stringify(r);"
               "document.body.appendChild(p);});</script>")


def probe(page: Path, tmp: Path) -> tuple[dict, list[str]]:
    """Load ``page`` (with the probe added) in Chromium: (probe result, console messages)."""
    text = page.read_text(encoding="utf-8")
    assert "<head>" in text and "</body>" in text
    probed = tmp / f"probe-{page.name}"
    probed.write_text(text.replace("<head>", "<head>" + _PROBE_HEAD, 1)
                      .replace("</body>", _PROBE_TAIL + "</body>", 1), encoding="utf-8")
    p = chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), tmp=tmp)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', p.stdout, re.S)
    assert m, f"chromium did not load the page (rc {p.returncode}): {p.stderr[-2000:]}"
    console = [ln for ln in p.stderr.splitlines() if ":CONSOLE" in ln]
    return json.loads(html.unescape(m.group(1))), console


def check_in_chromium(report: Path, tmp: Path, expected: set[str]) -> None:
    """Every expected figure decodes in Chromium at the size PIL reads; no load error, no console message."""
    result, console = probe(report, tmp)
    assert result["errors"] == [], result["errors"]
    assert console == [], console
    page = Page(report.read_text(encoding="utf-8"))
    widths = {im["data-fig"]: decode_png(im["src"]).shape[1] for im in page.images}
    seen = {im["fig"]: im for im in result["images"]}
    assert set(seen) == expected
    for name, im in seen.items():
        assert im["complete"] and im["w"] > 0 and im["h"] > 0, im
        assert im["w"] == widths[name], (name, im["w"], widths[name])


# ------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory) -> tuple[pl.DataFrame, Path]:
    df = study_frame()
    return df, write_runs_folder(df, tmp_path_factory.mktemp("study") / "runs")


@pytest.fixture(scope="module")
def report(runs_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "nested" / "report.html"
    path = write_report(runs_folder[1], out, top=4, **RANK)
    assert path == out
    return out


# ------------------------------------------------------------ tests


def test_report_is_self_contained_and_its_figures_decode(report):
    text = report.read_text(encoding="utf-8")
    page = Page(text)
    assert "link" not in page.tags and "iframe" not in page.tags and "object" not in page.tags
    # one inline script of the page's own; the rest is data (the scatter's points), nothing loaded
    assert [s.get("type") for s in page.scripts if s.get("type") != "application/json"] == [None]
    assert all("src" not in s for s in page.scripts)
    code = text[text.rindex("<script>"):]
    assert not re.search(r"https?:|fetch\(|XMLHttpRequest|import\(|WebSocket|sendBeacon|\.src\s*=", code)
    assert all(u.startswith(("data:image/png;base64,", "#")) for u in page.urls), \
        [u[:60] for u in page.urls if not u.startswith(("data:", "#"))]
    assert {im["data-fig"] for im in page.images} == ALL_FIGURES
    for im in page.images:
        px = decode_png(im["src"])
        assert px.shape[0] > 50 and px.shape[1] > 50
        assert px.reshape(-1, px.shape[-1]).std(axis=0).max() > 0, f"{im['data-fig']} is a blank image"
    assert [p.name for p in report.parent.iterdir()] == ["report.html"], "a temporary file was left behind"


def test_report_shows_the_counts_and_the_rank_table(report, runs_folder):
    df, folder = runs_folder
    text = html.unescape(report.read_text(encoding="utf-8"))
    status = df["status"].to_list()
    assert f"<td>runs stored</td><td>{df.height}</td>" in text
    n_failed, n_div = status.count("failed"), status.count("diverged")
    assert f"<td>failed</td><td>{n_failed} ({100 * n_failed / df.height:.0f} %)</td>" in text
    assert f"<td>diverged</td><td>{n_div} ({100 * n_div / df.height:.0f} %)</td>" in text
    n_pop = df.filter((pl.col("status") == "ok") & pl.col("converged")).height
    assert f"<td>enter the analysis</td><td>{n_pop} (" in text

    table = rank_table(population(load_runs(str(folder))), **RANK)
    head, *rows = Page(report.read_text(encoding="utf-8")).rank_rows  # the first row holds the headers
    shown = {r[0]: r for r in rows}
    assert set(shown) == {m.removeprefix("measure.") for m in table["measure"]}
    for t in table.iter_rows(named=True):
        r = shown[t["measure"].removeprefix("measure.")]
        assert r[head.index("n")] == str(t["n_models"])
        assert r[head.index("τ")] == ("–" if not np.isfinite(t["tau"]) else f"{t['tau']:+.3f}")
    # sorted by CMI, highest first, undefined last
    cmi = [float(r[head.index("CMI")].replace("–", "nan")) for r in rows]
    finite = [c for c in cmi if np.isfinite(c)]
    assert finite == sorted(finite, reverse=True) and cmi[:len(finite)] == finite


@needs_chromium
def test_report_loads_in_chromium(report, tmp_path):
    # The probe must see what it is for: a broken image and a console message on a control page.
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><head></head><body><img data-fig="x" src="missing.png">'
                       '<script>console.error("control message")</script></body></html>')
    result, console = probe(control, tmp_path)
    assert result["images"][0]["w"] == 0 and len(result["errors"]) == 1
    assert len(console) == 1 and "control message" in console[0]

    check_in_chromium(report, tmp_path, ALL_FIGURES)
    shot = tmp_path / "report.png"
    chromium("--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}", report.as_uri(), tmp=tmp_path)
    px = np.asarray(Image.open(shot).convert("L"))
    assert px.shape == (2400, 1280) and px.std() > 10, "the rendered page is blank"


def test_report_says_what_is_missing(tmp_path):
    """No stored curves and no converged run: the page says so instead of drawing."""
    df = study_frame(artifacts=False).with_columns(converged=pl.lit(False))
    out = write_report(write_runs_folder(df, tmp_path / "runs"), tmp_path / "r.html", **RANK)
    text = out.read_text(encoding="utf-8")
    assert "stored no Hessian spectral density" in text and "stored no loss-landscape curve" in text
    assert "No ranking" in text and "at least 2 are needed" in text
    assert {im["data-fig"] for im in Page(text).images} == {"gap"}


def test_report_per_dataset(tmp_path, monkeypatch):
    """Two datasets: a section of each figure per dataset, one table row per measure and dataset."""
    # the page's structure is under test here, not the pixels: skip the slow PNG encoding
    monkeypatch.setattr(report_module, "_png", lambda fig, name, caption="": f'<img data-fig="{name}" src="#">')
    a = study_frame(artifacts=False, seed=1)
    b = study_frame(artifacts=False, seed=2).with_columns(
        dataset=pl.lit("other"), run_id=pl.col("run_id") + "b")
    out = write_report(write_runs_folder(pl.concat([a, b]), tmp_path / "runs"), tmp_path / "r.html",
                       top=2, n_boot=0)
    page = Page(out.read_text(encoding="utf-8"))
    figs = {im["data-fig"] for im in page.images}
    assert figs == {f"{f}-{d}" for f in ("gap", "psi", "cmi", "scatter") for d in ("synthetic", "other")}
    assert len(page.rank_rows) == 2 * (1 + sum(c.startswith("measure.") for c in a.columns))


def test_report_skips_unreadable_run_files_only_when_asked(runs_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_png", lambda fig, name, caption="": f'<img data-fig="{name}" src="#">')
    df, folder = runs_folder
    runs = tmp_path / "runs"
    shutil.copytree(folder, runs)
    (runs / "broken.parquet").write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(RunsError, match="broken.parquet"):
        write_report(runs, tmp_path / "r.html", n_boot=0)
    assert not (tmp_path / "r.html").exists()
    with pytest.warns(UserWarning, match="broken.parquet"):
        out = write_report(runs, tmp_path / "r.html", n_boot=0, on_corrupt="skip")
    assert f"<td>runs stored</td><td>{df.height}</td>" in out.read_text(encoding="utf-8")


def test_a_failed_write_keeps_the_old_report(runs_folder, tmp_path, monkeypatch):
    out = tmp_path / "r.html"
    out.write_text("old report")

    def broken(*a, **k):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(figures, "gap_by_axis", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        write_report(runs_folder[1], out, n_boot=0)
    assert out.read_text() == "old report" and [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_figures_draw_the_declared_artifacts_on_their_grids():
    lst = pl.List(pl.Float64)
    df = pl.DataFrame({"artifact.hessian_density_nodes": [[0.0, 1.0]], "artifact.hessian_density_weights": [[0.5, 0.5]],
                       "artifact.filter_sharpness_t": [[0.0, 1.0]],
                       "artifact.filter_sharpness_curves": [[1.0, 2.0, 3.0, 4.0]],
                       "artifact.filter_other": [[5.0]], "measure.x": [1.0], "gap": [0.1]},
                      schema_overrides={c: lst for c in ["artifact.hessian_density_nodes", "artifact.hessian_density_weights",
                                                         "artifact.filter_sharpness_t", "artifact.filter_sharpness_curves",
                                                         "artifact.filter_other"]})
    assert figures.stored_artifacts(df, "spectral") == [ARTIFACTS["hessian_density_weights"]]
    assert figures.stored_artifacts(df, "curves") == [ARTIFACTS["filter_sharpness_curves"]]  # undeclared: ignored
    # a K × T list is K curves on the T-long grid, drawn as their mean; any other length is not drawn
    p = figures._curve_panel(df, ARTIFACTS["filter_sharpness_curves"], [0], "loss", "t")
    assert p.curves[0][1].tolist() == [2.0, 3.0] and "mean over 2 directions" in p.title
    odd = df.with_columns(pl.Series("artifact.filter_sharpness_curves", [[1.0, 2.0, 3.0]], dtype=lst))
    assert figures._curve_panel(odd, ARTIFACTS["filter_sharpness_curves"], [0], "loss", "t").curves == {}
    assert figures.hessian_spectra(df.drop("artifact.hessian_density_weights")) is None
    assert figures.hessian_spectra(df) is not None and figures.landscape_curves(df) is not None


def test_mini_study_rows_follow_the_schema(mini_runs):
    runs = load_runs(mini_runs)
    assert [c for c in runs.columns if c not in FIXED and not c.startswith(PREFIXES)] == []
    by_name = {"pacbayes_optimized_parts"}   # the artifact of a measure computed only where named
    assert {c for c in runs.columns if is_artifact(c)} == {a.column for a in ARTIFACTS.values()
                                                           if a.name not in by_name}
    grid = ARTIFACTS["filter_sharpness_t"].grid
    for t, curves in zip(runs["artifact.filter_sharpness_t"].to_list(),
                         runs["artifact.filter_sharpness_curves"].to_list()):
        assert np.allclose(np.array(t) / t[grid.index(1.0)], grid)  # r · grid
        assert len(curves) % len(t) == 0  # K × T
    for a, surface in zip(runs["artifact.loss_surface_t"].to_list(), runs["artifact.loss_surface"].to_list()):
        assert len(a) == 5 and len(surface) == 25  # N × N, N = loss_surface_points
    for curve, epochs in zip(runs["artifact.train_loss_curve"].to_list(), runs["epochs"].to_list()):
        assert len(curve) == epochs
    for nodes, weights in zip(runs["artifact.hessian_density_nodes"].to_list(),
                              runs["artifact.hessian_density_weights"].to_list()):
        assert len(nodes) == len(weights) and sum(weights) == pytest.approx(1.0)


def test_broadened_density_is_the_smoothed_spectral_measure():
    nodes, weights, sigma = [-1.0, 0.0, 2.5], [0.2, 0.5, 0.3], 0.1
    grid = np.linspace(-5.0, 8.0, 8001)
    d = figures.broadened_density(nodes, weights, grid, sigma)
    assert np.trapezoid(d, grid) == pytest.approx(1.0, abs=1e-6)  # the weights' total mass
    at = figures.broadened_density(nodes, weights, np.array([0.0, 2.5]), sigma)
    gauss = lambda x, m: np.exp(-0.5 * ((x - m) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    assert at[0] == pytest.approx(sum(w * gauss(0.0, m) for m, w in zip(nodes, weights)))
    assert at[1] == pytest.approx(0.3 * gauss(2.5, 2.5), rel=1e-6)


def test_scatter_colours_by_the_axis_that_moves_the_gap():
    a = np.tile([0, 1], 9)
    b = np.repeat([0, 1, 2], 6)
    df = pl.DataFrame({"hp.a": a, "hp.b": b, "hp.c": np.zeros(18, dtype=int),
                       "gap": 0.1 * b + 0.01 * a + np.linspace(0, 0.001, 18)})
    assert figures.colour_axis(df) == "hp.b"
    assert figures.colour_axis(df.with_columns(gap=0.1 * pl.col("hp.a"))) == "hp.a"


def test_leading_measures_by_cmi_then_tau():
    t = pl.DataFrame({"measure": ["a", "b", "c", "d"], "cmi": [0.1, float("nan"), 0.3, 0.1],
                      "tau": [0.2, 0.9, -0.1, -0.5]})
    assert figures.leading_measures(t, 3) == ["c", "d", "a"]
    assert figures.leading_measures(t, 2, by="tau") == ["b", "d"]


def test_analysis_report_imports_neither_torch_nor_ray():
    code = ("import sys, matplotlib; b = matplotlib.get_backend(); import analysis.report, analysis.figures; "
            "assert matplotlib.get_backend() == b; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_report_from_the_mini_study(mini_runs, tmp_path):
    out = write_report(mini_runs, tmp_path / "mini.html", **RANK)
    text = out.read_text(encoding="utf-8")
    assert {"gap", "psi", "cmi", "scatter"} <= {im["data-fig"] for im in Page(text).images}
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the CI script must install it")
    expected = {im["data-fig"] for im in Page(text).images}
    check_in_chromium(out, tmp_path, expected)


# ------------------------------------------------------------ setup, headline, small studies (issue 13)


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end)]


def test_mini_study_report_shows_its_setup_and_headline(mini_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_png", lambda fig, name, caption="": f'<img data-fig="{name}" src="#">')
    out = write_report(mini_runs, tmp_path / "mini.html", **RANK)
    text = out.read_text(encoding="utf-8")
    runs = load_runs(mini_runs, include_unconverged=True, include_failed=True)
    cfg, ver = runs["config"][0], runs["versions"][0]
    setup = html.unescape(_between(text, 'id="setup"', 'id="glance"'))
    assert "<td>target loss</td><td>0.05</td>" in setup
    assert f"<td>optimizer</td><td>{cfg['train']['optimizer']}</td>" in setup
    assert len(ver["git"]) == 40 and ver["git"] in setup
    assert "<td>max epochs</td><td>80</td>" in setup
    assert "keskar_sharpness_5e-4" in setup and "local_entropy" in setup  # the measures excluded
    assert "16 stored" in setup and "seeds</td><td>2: 0, 1" in setup
    assert runs["device"][0] in setup
    lead = Page(text).rank_rows[1][0]  # the table's first row: the highest CMI
    headline = html.unescape(_between(text, 'id="headline"', 'id="forest"'))
    assert f"Leading measures by CMI: <b>{lead}</b>" in headline
    assert "overlaps the best measure's interval" in headline and "too-small" in text  # 16 < 20 networks
    assert headline.index('id="conclusion"') < headline.index('id="noise-floor"') < headline.index("Leading")


@needs_chromium
def test_mini_study_headline_states_the_noise_floor_and_a_conclusion_in_chromium(mini_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_png", lambda fig, name, caption="": f'<img data-fig="{name}" src="#">')
    out = write_report(mini_runs, tmp_path / "mini.html", **RANK)
    dom = chromium("--dump-dom", out.as_uri(), tmp=tmp_path).stdout  # the page as Chromium built it
    text = lambda pid: re.sub(r"<[^>]+>", "", html.unescape(  # noqa: E731
        re.search(rf'<p class="[a-z]+" id="{pid}">(.*?)</p>', dom, re.S).group(1)))
    conclusion, floor = text("conclusion"), text("noise-floor")
    pop = population(load_runs(mini_runs))
    f = report_module.noise_floor(pop)
    assert floor.startswith(f"Noise floor of the outcome: test set {f.n_test:,.0f}, binomial SE of test accuracy ")
    assert f"ICC {f.icc:.2f} over {f.configs} configurations" in floor
    # one sentence that concludes: no measure is told apart at 16 networks, why, and what would
    assert conclusion.startswith("No measure is distinguishable from the best: its CMI interval [")
    assert f"because {pop.height} networks are analysed (fewer than 20)" in conclusion
    assert conclusion.endswith(".") and "; a study that could separate them needs" in conclusion
    assert "at least 20 networks" in conclusion and ". " not in conclusion  # one sentence


def test_headline_sets_follow_the_intervals():
    nan = float("nan")
    t = pl.DataFrame({"measure": ["measure.a", "measure.b", "measure.c", "measure.d", "measure.e"],
                      "tau": [0.5, -0.4, 0.1, -0.2, nan], "tau_lo": [0.3, -0.6, -0.2, -0.5, None],
                      "tau_hi": [0.7, -0.1, 0.4, 0.1, None],
                      "cmi": [0.30, 0.20, 0.10, 0.05, nan], "cmi_lo": [0.22, 0.18, 0.02, 0.0, None],
                      "cmi_hi": [0.40, 0.25, 0.21, 0.1, None]})
    h = report_module._headline(t)
    assert '<p class="conclusion" id="conclusion">Distinguishable: a, b (CMI intervals overlapping the best ' \
           "one's [0.220, 0.400]) rank above the other 2 measures, whose intervals lie entirely below it.</p>" in h
    assert "Leading measures by CMI: <b>a</b> (CMI 0.300 [0.220, 0.400], τ +0.500); <b>b</b>" in h
    assert "overlaps the best measure's interval [0.220, 0.400]: b (1 measures)" in h  # c's 0.21 < 0.22
    assert "Significantly negative (τ interval entirely below 0): b (τ -0.400 [-0.60, -0.10])." in h
    no_boot = report_module._headline(t.with_columns(pl.lit(None, pl.Float64).alias(c)
                                                     for c in ("tau_lo", "tau_hi", "cmi_lo", "cmi_hi")))
    assert no_boot.count("not defined") == 2 and "is not decided here" in no_boot
    # every interval overlapping the best's: the sentence says why and what study would separate them
    floor = report_module.NoiseFloor(n_runs=12, seeds=2, n_test=360, test_acc=0.97, test_acc_se=0.009, configs=6,
                                     gap_sd=0.005, gap_within_sd=0.004, icc=0.36, seeds_needed=7.1)
    wide = t.with_columns(pl.lit(0.0).alias("cmi_lo"), pl.lit(0.5).alias("cmi_hi"))
    c = html.unescape(report_module._headline(wide, floor, ["12 networks are analysed (fewer than 20)"]))
    assert ("No measure is distinguishable from the best: its CMI interval [0.000, 0.500] overlaps those of 3 of "
            "the other 3 measures, because 12 networks are analysed (fewer than 20); the gap is mostly seed and test "
            "noise: ICC 0.36 < 0.5") in c
    assert ("; a study that could separate them needs 8 seeds per configuration (the mean over a configuration's "
            "seeds as the outcome), a test set larger than 360 examples and at least 20 networks.</p>") in c
    assert "Noise floor of the outcome: test set 360, binomial SE of test accuracy 0.0090 at the median 0.970" in c


def test_a_small_study_warns_and_greys_out_wide_intervals(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_png", lambda fig, name, caption="": f'<img data-fig="{name}" src="#">')
    df = synthetic_runs(4, 6, n_axes=2, n_values=2, seed=1)  # 4 networks, one seed
    out = write_report(write_runs_folder(df, tmp_path / "runs"), tmp_path / "r.html", **RANK)
    text = out.read_text(encoding="utf-8")
    warn = html.unescape(_between(text, 'id="too-small"', 'id="headline"'))
    assert "4 networks are analysed (fewer than 20)" in warn and "1 seed (fewer than 2)" in warn
    table = rank_table(population(load_runs(tmp_path / "runs")), **RANK)
    wide = {m.removeprefix("measure.") for m, lo, hi in table.select("measure", "tau_lo", "tau_hi").iter_rows()
            if lo is not None and hi - lo > 1.0}
    assert 0 < len(wide) < table.height, "some τ intervals wider than 1.0, some not"
    greyed = set(re.findall(r'<tr data-measure="([^"]+)"[^>]*>(?:<td[^>]*>[^<]*</td>){3}<td class=.tau wide.', text))
    assert greyed == wide
    # the 54-network study of the other tests (2 seeds, full 3 × 3 × 3 grid) is large enough
    big = write_report(write_runs_folder(study_frame(artifacts=False), tmp_path / "big"), tmp_path / "b.html",
                       n_boot=0)
    assert "too-small" not in big.read_text(encoding="utf-8")


def test_report_shows_the_cost_of_each_measure(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_png", lambda fig, name, caption="": f'<img data-fig="{name}" src="#">')
    df = synthetic_runs(4, 3, n_axes=2, n_values=2, seed=1).with_columns(
        pl.Series("seconds.cheap", [1.0, 2.0, 3.0, 4.0]), pl.Series("seconds.dear", [9.0, 8.0, 7.0, 6.0]),
        pl.Series("measure_seconds", [10.0, 10.0, 10.0, 10.0]))
    out = write_report(write_runs_folder(df, tmp_path / "runs"), tmp_path / "r.html", n_boot=0)
    text = html.unescape(_between(out.read_text(encoding="utf-8"), 'id="cost"', 'id="hessian"'))
    rows = re.findall(r'<tr><td class="l">(\w+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>(\d+)</td>', text)
    assert rows == [("dear", "7.5", "75.0 %", "75.0 %", "4"), ("cheap", "2.5", "25.0 %", "25.0 %", "4")]
    assert "charged in equal parts" in text


def test_report_shows_the_cost_of_each_family(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_png", lambda fig, name, caption="": f'<img data-fig="{name}" src="#">')
    info = json.loads((Path(report_module.__file__).with_name("measure_info.json")).read_text(encoding="utf-8"))
    a, b = info["param_norm"]["family"], info["hessian_trace"]["family"]
    assert a != b and info["path_norm"]["family"] == a
    df = synthetic_runs(4, 3, n_axes=2, n_values=2, seed=1).with_columns(
        pl.Series("seconds.param_norm", [1.0, 1.0, 1.0, 1.0]), pl.Series("seconds.path_norm", [1.0, 2.0, 3.0, 4.0]),
        pl.Series("seconds.hessian_trace", [4.0, 4.0, 2.0, 2.0]), pl.Series("seconds.mine", [0.5, 0.5, 0.5, 0.5]),
        pl.Series("measure_seconds", [10.0, 10.0, 10.0, 10.0]))
    out = write_report(write_runs_folder(df, tmp_path / "runs"), tmp_path / "r.html", n_boot=0)
    text = html.unescape(_between(out.read_text(encoding="utf-8"), 'id="cost"', 'id="hessian"'))
    fam = _between(text, 'family-cost', "</table>")
    rows = re.findall(r'<tr><td class="l">([\w ]+)</td><td>(\d+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td>', fam)
    # per run: a = 1 + (1, 2, 3, 4) → median 3.5, share of all 14/40; b = (4, 4, 2, 2) → 3, 12/40; other 0.5
    assert rows == [(a, "2", "3.5", "35.0 %", "35.0 %"), (b, "1", "3", "30.0 %", "30.0 %"),
                    ("other", "1", "0.5", "5.0 %", "5.0 %")]


def test_the_legend_is_computed_from_the_rows_shown():
    """The ranking's legend names the measures of this table whose one draw is less reliable
    than 0.9, from its reliability column; without one it says nothing of reliability figures."""
    from analysis.report import _legend
    t = pl.DataFrame({"measure": ["measure.a", "measure.b", "measure.c"], "reliability": [0.5, 0.95, None]})
    text = _legend(t)
    assert "Here 1 of the 2 measures with a reliability stay below 0.9 for one draw: a 0.50;" in text
    assert "b 0.95" not in text and "commit" not in text and "mini study" not in text
    none = _legend(t.with_columns(pl.lit(None, pl.Float64).alias("reliability")))
    assert "Here" not in none and "Kendall" in none
    assert "Here all 2 measures" in _legend(t.with_columns(pl.Series("reliability", [0.91, 0.99, None])))
