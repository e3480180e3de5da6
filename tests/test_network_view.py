"""One network in depth (analysis.network_view, the report's last section): the chosen run's
own values and percentiles, the median-gap default, an unknown run id (exit 2, what to do),
the loss-surface panel or its note, no empty axes, and the section in Chromium."""
from __future__ import annotations

import html
import math
import re

import numpy as np
import polars as pl
import pytest

from analysis import network_view as nv
from analysis.cli import main
from analysis.load import RunsError, load_runs, population
from tests.test_report import CHROMIUM, probe, study_frame, write_runs_folder

LST = pl.List(pl.Float64)


def with_network_artifacts(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` (with spectra and curves) plus a 5 × 5 loss surface and a training curve per run, each its own."""
    a = np.linspace(-0.2, 0.2, 5)
    surf = [((1 + 0.1 * i) * a[:, None] ** 2 + 2 * a[None, :] ** 2 + 0.02).ravel().tolist() for i in range(df.height)]
    train = [np.geomspace(2.0, 0.02, 8 + i % 4).tolist() for i in range(df.height)]
    return df.with_columns(pl.Series("artifact.loss_surface_t", [a.tolist()] * df.height, dtype=LST),
                           pl.Series("artifact.loss_surface", surf, dtype=LST),
                           pl.Series("artifact.train_loss_curve", train, dtype=LST))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    df = with_network_artifacts(study_frame())
    folder = write_runs_folder(df, tmp_path_factory.mktemp("netview") / "runs")
    runs = load_runs(folder, include_unconverged=True, include_failed=True)
    return folder, runs, population(runs)


def test_the_default_is_the_median_gap_network(study):
    _, runs, pop = study
    gaps = pop.filter(pl.col("gap").is_finite()).sort(["gap", "run_id"])
    assert nv.default_run(pop) == gaps["run_id"][(gaps.height - 1) // 2]


def test_section_shows_the_chosen_runs_values_and_percentiles(study):
    _, runs, pop = study
    rid = pop.sort("gap")["run_id"][-1]  # the largest gap: not the default
    assert rid != nv.default_run(pop)
    text = html.unescape(nv.network_section(runs, pop, rid[:6]))  # a unique prefix names it
    assert f"Run <code>{rid}</code> (chosen with --run)" in text
    row = runs.filter(pl.col("run_id") == rid).row(0, named=True)
    others = pop.filter(pl.col("run_id") != rid)
    shown = dict(re.findall(r'<td class="l">([^<]+)</td><td>([^<]+)</td>', text))
    measures = [c for c in pop.columns if c.startswith("measure.")]
    assert len(measures) > 3
    for col in ["gap", *measures]:
        v = row[col]
        name = col.removeprefix("measure.")
        assert shown[name] == ("–" if v is None or not math.isfinite(v) else format(v, ".4g")), name
    pos = {r["quantity"]: r for r in nv.measure_positions(pop, row).iter_rows(named=True)}
    assert pos["gap"]["percentile"] == 100.0 and pos["gap"]["n"] == others.height  # the largest of the others
    for col in measures:  # the percentile, counted by hand over the other networks
        x = [o for o in others[col].to_list() if o is not None and math.isfinite(o)]
        v = row[col]
        want = (math.nan if v is None or not math.isfinite(v) or not x else
                100 * (sum(o < v for o in x) + 0.5 * sum(o == v for o in x)) / len(x))
        got = pos[col.removeprefix("measure.")]["percentile"]
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want), col


def test_every_panel_drawn_and_no_axes_empty(study):
    _, runs, pop = study
    row = nv.run_row(runs, nv.default_run(pop))
    assert nv.available(row) == dict.fromkeys(nv.PANELS, True) and nv.missing_notes(row) == []
    fig = nv.network_figure(row)
    main_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(main_axes) == 4 and all(ax.has_data() for ax in fig.axes)
    assert any(ax.get_title().startswith("Loss surface (5 × 5") for ax in main_axes)


def test_without_the_surface_the_section_says_how_to_get_it(study):
    _, runs, pop = study
    runs = runs.drop("artifact.loss_surface", "artifact.loss_surface_t")
    text = nv.network_section(runs, population(runs), None)
    assert "2-D loss surface not computed: set loss_surface_points" in text
    fig = nv.network_figure(nv.run_row(runs, nv.default_run(pop)))
    assert len(fig.axes) == 3 and all(ax.has_data() for ax in fig.axes)  # no empty fourth axes


def test_an_unknown_run_id_exits_2_saying_what_to_do(study, tmp_path, capsys):
    folder, runs, _ = study
    rid = runs["run_id"][0]
    typo = rid[:-1] + ("0" if rid[-1] != "0" else "1")
    out = tmp_path / "r.html"
    assert main(["report", str(folder), "--out", str(out), "--run", typo]) == 2
    err = capsys.readouterr().err
    assert f"--run {typo}: no run of {folder} has this id (did you mean '{rid}'?)" in err
    assert "leave --run out for the median-gap network" in err and not out.exists()
    ambiguous = runs.with_columns(run_id=pl.Series([f"ab{i}" for i in range(runs.height)]))
    with pytest.raises(RunsError, match="runs of the runs start with it .* give more of the id"):
        nv.resolve_run(ambiguous, "ab")


def test_the_section_loads_in_chromium(study, tmp_path):
    """The section alone in a page (the whole report is loaded by test_report's Chromium tests)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the CI script must install it")
    _, runs, pop = study
    rid = pop["run_id"][3]
    section = nv.network_section(runs, pop, rid)
    assert f'<p id="network-run">Run <code>{rid}</code>' in section
    page = tmp_path / "net.html"
    page.write_text('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"></head><body>'
                    f"{section}</body></html>", encoding="utf-8")
    result, console = probe(page, tmp_path)
    assert result["errors"] == [] and console == [], (result["errors"], console)
    net = [im for im in result["images"] if im["fig"] == "network"]
    assert len(net) == 1 and net[0]["complete"] and net[0]["w"] > 300 and net[0]["h"] > 300
