"""Dziugaite & Roy's table beside the runs that hold pacbayes_optimized_bound: built rows give
the table, the summary sentence and the pages; `analysis claims --reproduction` writes it."""

from __future__ import annotations

import json

import polars as pl
import pytest

from analysis.claims.reproduction import reproduction_html, reproduction_markdown, reproduction_table, summary
from analysis.cli import main
from study.schema import ARTIFACTS

LABELS = ARTIFACTS["pacbayes_optimized_parts"].labels


def rows(bounds=(0.31, 0.33, 0.29, 0.97)) -> pl.DataFrame:
    out = []
    for i, b in enumerate(bounds):
        noise = 1.0 if i == 3 else 0.0
        parts = {"kl": 1500.0 + i, "lambda": 0.001, "j": 460, "e_m": 0.08 + i / 100, "e_plus": 0.1 + i / 100,
                 "slack": 0.02, "test_error": 0.09 if noise == 0 else 0.5, "n": 20000, "m": 1000, "surrogate": 0.5}
        out.append({"run_id": f"r{i}", "study": "dr", "dataset": "fashion_mnist", "seed": i % 3,
                    "hp.label_noise": noise, "train_acc": 1.0 - i / 1000, "test_acc": 0.93 if noise == 0 else 0.5,
                    "gap": 0.07, "status": "ok", "converged": True, "n_train": 20000,
                    "config": json.dumps({"model_options": {"depth": 1, "width": 600}}),
                    "measure.params": 471602.0, "measure.pacbayes_optimized_bound": b,
                    "measure.pacbayes_bound": 2.0, "artifact.pacbayes_optimized_parts": [float(parts[k]) for k in LABELS]})
    return pl.DataFrame(out)


def test_the_table_reads_each_network_and_its_parts():
    t = reproduction_table(rows())
    assert t.height == 4 and t["label_noise"].to_list() == [0.0, 0.0, 0.0, 1.0]
    first = t.row(0, named=True)
    assert first["architecture"] == "1 × 600" and first["params"] == 471602.0
    assert first["train_error"] == pytest.approx(0.0) and first["test_error"] == pytest.approx(0.07)
    assert first["q_train_error"] == pytest.approx(0.08) and first["kl"] == 1500.0 and first["bound"] == 0.31
    assert summary(t) == ("on true labels the median bound over 3 networks is 0.310, non-vacuous (below 0.5); "
                          "on random labels the median bound over 1 network is 0.970, vacuous (0.5 or more).")
    md = reproduction_markdown(t)
    assert "0.161" in md and "55,000" in md and "binary Fashion-MNIST" in md and md.count("| true |") == 3
    assert "<script" not in reproduction_html(t) and "0.161" in reproduction_html(t)
    assert reproduction_table(rows().drop("measure.pacbayes_optimized_bound")).height == 0
    assert reproduction_html(reproduction_table(rows().drop("measure.pacbayes_optimized_bound"))) == ""


def test_claims_command_writes_the_reproduction(tmp_path, capsys):
    runs = tmp_path / "runs.parquet"
    rows().write_parquet(runs)
    md, html = tmp_path / "dr.md", tmp_path / "claims.html"
    assert main(["claims", str(runs), "--boots", "50", "--claims", "dziugaite_nonvacuous", "--out", str(html),
                 "--reproduction", str(md)]) == 0
    assert "non-vacuous" in md.read_text() and 'id="reproduction"' in html.read_text()
    rows().drop("measure.pacbayes_optimized_bound").write_parquet(runs)
    assert main(["claims", str(runs), "--boots", "50", "--claims", "dziugaite_nonvacuous",
                 "--reproduction", str(md)]) == 2
    assert "no run holds pacbayes_optimized_bound" in capsys.readouterr().err
