"""`[measures] repeats = R` end to end: a tiny study writes measure_sd.* and the repeat
counts, the settings hash names R for stochastic measures only, and `analysis rank` shows
the reliability."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from analysis.cli import main
from study.executor import Executor
from study.jobs.run import run_study
from study.measures.registry import settings_hash
from study.spec import load_study
from tests.studyfiles import write_study

NAMES = ("expected_sharpness", "grad_variance", "param_norm")


def test_repeats_write_sd_and_rank_shows_reliability(tmp_path, capsys):
    study = load_study(write_study(tmp_path, include=json.dumps(list(NAMES)), extra="repeats = 3\n"))
    assert study.measures.repeats == 3
    s = run_study(study, Executor(serial=True, progress=False))
    assert s.ok == 4
    df = pl.read_parquet(tmp_path / "out" / "tiny" / "runs" / "*.parquet")
    for n in ("expected_sharpness", "grad_variance"):
        sd = df[f"measure_sd.{n}"].to_numpy()
        assert np.all(np.isfinite(sd)) and np.all(sd > 0), n
        assert df[f"measure_cfg.{n}"].unique().to_list() == [settings_hash(n, {}, 0, 3)]
        assert settings_hash(n, {}, 0, 3) != settings_hash(n, {}, 0, 1)
    assert (df["measure_sd.param_norm"] == 0).all()  # deterministic: computed once
    assert df["measure_cfg.param_norm"].unique().to_list() == [settings_hash("param_norm")]
    assert json.loads(df["measure_repeats"][0]) == {"expected_sharpness": 3, "grad_variance": 3}

    code = main(["rank", str(tmp_path / "out" / "tiny" / "runs"), "--out", str(tmp_path / "t.csv"),
                 "--boots", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "reliability" in out and "tau_ceiling" in out
    t = {r["measure"]: r for r in pl.read_csv(tmp_path / "t.csv").to_dicts()}
    assert t["param_norm"]["reliability"] == 1.0
    assert all(np.isfinite(t[n]["reliability"]) for n in ("expected_sharpness", "grad_variance"))
