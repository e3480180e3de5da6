"""The command lines' rough edges of issue 22 (item 5): a closed pipe is not an error, mistyped flags and
sub-commands get a suggestion, the report refuses a non-HTML name and defaults to <study>/report.html,
the one-network table's study range holds the network, the setup says "all examples"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from analysis import network_view
from analysis.cli import default_report_path
from analysis.cli import main as analysis_main
from analysis.report import _setup
from study.cli import main as study_main
from study.clikit import SIGPIPE_STATUS

ROOT = Path(__file__).resolve().parent.parent


def closed_stdout(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m …args`` with its standard output's reader gone before it writes (as ``| head -0``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", *args], stdout=w, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT, env=env, timeout=120)
    finally:
        os.close(w)


def test_study_status_into_a_closed_pipe_exits_quietly(tmp_path):
    p = closed_stdout("study", "status", "configs/mini.toml", "--out", str(tmp_path))
    assert p.stderr == "" and p.returncode == SIGPIPE_STATUS


class ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_analysis_into_a_closed_pipe_exits_quietly(monkeypatch, capsys):
    def rank(args):
        print("a long table")
        return 0
    monkeypatch.setattr("analysis.cli._rank", rank)
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert analysis_main(["rank", "runs/mini"]) == SIGPIPE_STATUS
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("main, argv, hint", [
    (study_main, ["status", "configs/mini.toml", "--jsn"], "(did you mean --json?)"),
    (study_main, ["--verison"], "(did you mean --version?)"),
    (study_main, ["stauts", "configs/mini.toml"], "(did you mean status?)"),
    (study_main, ["run", "configs/mini.toml", "--retry-faild"], "(did you mean --retry-failed?)"),
    (analysis_main, ["--verison"], "(did you mean --version?)"),
    (analysis_main, ["reprot", "runs"], "(did you mean report?)"),
    (analysis_main, ["rank", "runs", "--include-unconvergd"], "(did you mean --include-unconverged?)"),
])
def test_mistyped_flags_and_commands_get_a_suggestion(main, argv, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and hint in capsys.readouterr().err


def test_far_flags_get_no_suggestion(capsys):
    with pytest.raises(SystemExit):
        study_main(["status", "configs/mini.toml", "--zzzzzzzz"])
    assert "did you mean" not in capsys.readouterr().err


def test_report_refuses_a_non_html_name(tmp_path, capsys):
    assert analysis_main(["report", str(tmp_path), "--out", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert "r.csv" in err and ".html" in err and not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("runs, out", [
    ("runs/mini", "runs/mini/report.html"), ("runs/mini/", "runs/mini/report.html"),
    ("runs/mini/runs", "runs/mini/report.html"), ("runs/mini/runs.parquet", "runs/mini/report.html"),
    ("results/claims/claims_labels.parquet", "results/claims/claims_labels.html"),
    ("s3://bucket/prefix/mini", "s3://bucket/prefix/mini/report.html"), ("runs", "./report.html"),
])
def test_report_defaults_to_the_study_folder(runs, out):
    assert default_report_path(runs) == out


def test_report_without_out_writes_into_the_study(tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr("analysis.report.write_report", lambda src, out, **kw: written.setdefault("out", out))
    assert analysis_main(["report", str(tmp_path / "mini" / "runs")]) == 0
    assert written["out"] == f"{tmp_path / 'mini'}/report.html"


def test_the_study_range_holds_the_network_itself():
    pop = pl.DataFrame({"run_id": ["a", "b", "c"], "dataset": ["d"] * 3, "gap": [0.1, 0.2, 0.9],
                        "measure.m": [1.0, 2.0, 50.0]})
    pos = network_view.measure_positions(pop, pop.row(2, named=True))
    m = pos.filter(pl.col("quantity") == "m").row(0, named=True)
    assert (m["min"], m["max"], m["percentile"], m["n"]) == (1.0, 50.0, 100.0, 2)
    assert m["min"] <= m["value"] <= m["max"]


def test_the_setup_says_all_examples_for_subset_0():
    cfg = json.dumps({"measures": {"include": ["all"], "subset": 0}})
    runs = pl.DataFrame({"run_id": ["a"], "status": ["ok"], "converged": [True], "config": [cfg]})
    text = _setup(runs, runs)
    assert "all examples" in text and "subset 0" not in text
    cfg = json.dumps({"measures": {"include": ["all"], "subset": 500}})
    runs = runs.with_columns(config=pl.lit(cfg))
    assert "a subset of 500 examples" in _setup(runs, runs)


def test_notebooks_open_in_jupyter_with_the_runs_as_parameter(tmp_path):
    bin_dir, runs = tmp_path / "bin", tmp_path / "mini"
    bin_dir.mkdir()
    runs.mkdir()
    fake = bin_dir / "jupyter"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\necho "$RUNS" > {tmp_path}/runs\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": str(bin_dir)}
    p = subprocess.run([sys.executable, "-m", "analysis", "notebooks", "mini"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "args").read_text().split() == ["lab", str(ROOT / "analysis" / "notebooks")]
    assert (tmp_path / "runs").read_text().strip() == str(runs)
    fake.unlink()
    p = subprocess.run([sys.executable, "-m", "analysis", "notebooks", "mini"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "pip install -e '.[notebooks]'" in p.stderr


def test_the_one_network_list_has_a_seed_column():
    pop = pl.DataFrame({"run_id": ["a", "b"], "seed": [0, 1], "hp.lr": [0.1, 0.2], "gap": [0.1, 0.2]})
    text = network_view._run_list(pop, "a")
    assert "<th>run_id</th><th>seed</th><th>lr</th><th>gap</th>" in text


def test_score_hands_its_measure_to_the_report(monkeypatch, tmp_path):
    from tests.test_report import study_frame
    df = study_frame(artifacts=False).rename({"measure.m07": "measure.final_sq_norm"})
    df = df.select([c for c in df.columns if c != "measure.final_sq_norm"] + ["measure.final_sq_norm"])
    monkeypatch.setattr("analysis.cli._scored", lambda args: (df, "final_sq_norm: scored"))
    got = {}
    monkeypatch.setattr("analysis.report.write_report", lambda src, out, **kw: got.update(kw, out=out))
    out = str(tmp_path / "r.html")
    assert analysis_main(["score", "m.py:final_sq_norm", "runs", "--boots", "0", "--report", out]) == 0
    assert got["scored"] == "final_sq_norm" and got["out"] == out
