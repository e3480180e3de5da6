"""Measure provenance: the settings hash of each measure (registry.settings_hash), written by the
runner as ``measure_cfg.<name>``, listed as stale by `study status`, and checked by `analysis`."""

from __future__ import annotations

import dataclasses
import math

import polars as pl
import pyarrow.parquet as pq
import pytest

from analysis.cli import main as analysis_main
from analysis.load import UNKNOWN, MixedSettingsError, check_settings, mixed_settings, settings_counts
from study.cli import main as study_main
from study.executor import Executor
from study.jobs.run import run_study
from study.measures import KNOBS, REGISTRY, measure_full, select
from study.measures.registry import Knob, expected_settings, outdated, settings, settings_hash
from study.schema import stored_settings
from study.spec import load_study
from tests.studyfiles import write_study

M = "log_prod_spec_op"  # a cheap measure with knobs: spec_op_rtol, spec_op_max_iter


def test_hash_follows_the_knobs_the_measure_reads_and_nothing_else(monkeypatch):
    base = settings_hash(M)
    assert len(base) == 12 and int(base, 16) >= 0
    assert settings_hash(M, {"spec_op_rtol": KNOBS["spec_op_rtol"].default}) == base  # default spelt out
    assert settings_hash(M, {"spec_op_rtol": 1e-2}) != base
    assert settings_hash(M, {"expected_sharpness_rho": 0.5}) == base    # a knob it does not read
    assert settings_hash(M, subset=100) != base
    # batching knobs only size batches (test below): out of every hash
    assert settings_hash("hessian_trace", {"memory_mb": 1.0, "eval_batch": 7}) == settings_hash("hessian_trace")
    assert "memory_mb" not in settings("hessian_trace")["knobs"]
    # a changed default changes the hash of the measures that read it, and only theirs
    other = settings_hash("params")
    k = KNOBS["spec_op_rtol"]
    monkeypatch.setitem(KNOBS, k.name, Knob(k.name, k.default * 10, k.doc))
    assert settings_hash(M) != base and settings_hash("params") == other


def test_hash_follows_the_code_version():
    m = REGISTRY[M]
    assert m.version == 1 and settings(m)["version"] == 1
    assert settings_hash(dataclasses.replace(m, version=2)) != settings_hash(m)


def test_batching_knobs_do_not_change_any_value():
    """eval_batch and memory_mb are left out of the hash because every measure's value is the
    same (to rounding) under any batching: every measure, squeezed to tiny batches."""
    from tests.cases import CASES, make
    c = make(CASES[0])
    kw = dict(init=c.init, train_log=c.train_log, seed=c.seed, names=tuple(REGISTRY))  # by_name ones too
    a = measure_full(c.model, (c.x, c.y), **kw).values
    b = measure_full(c.model, (c.x, c.y), knobs={"memory_mb": 0.001, "eval_batch": 5}, **kw).values
    assert set(a) == set(REGISTRY)
    for n in a:
        assert (math.isnan(a[n]) and math.isnan(b[n])) or b[n] == pytest.approx(a[n], rel=1e-4, abs=1e-8), n


def test_outdated_names_stale_and_missing():
    expected = {"a": "h1", "b": "h2", "c": "h3"}
    assert outdated({"a": "h1", "b": "old"}, expected) == (["b"], ["c"])
    assert outdated({"a": None, "b": "h2", "c": "h3", "x": "h9"}, expected) == (["a"], [])
    row = {"measure.a": 1.0, "measure_cfg.a": "h1", "measure.b": math.nan, "measure.c": None, "gap": 0.1}
    assert stored_settings(row) == {"a": "h1", "b": None}


def frame(**cols) -> pl.DataFrame:
    return pl.DataFrame(cols, strict=False)


def test_check_settings_on_small_frames():
    nan = math.nan
    mixed = frame(**{"measure.x": [1.0, 2.0, 3.0, nan], "measure_cfg.x": ["aa", "aa", "bb", "bb"],
                     "measure.y": [1.0, 2.0, 3.0, 4.0], "measure_cfg.y": ["cc"] * 4})
    assert settings_counts(mixed, "measure.x") == {"aa": 2, "bb": 1}  # the NaN row is not ranked
    assert mixed_settings(mixed) == {"measure.x": {"aa": 2, "bb": 1}}
    with pytest.raises(MixedSettingsError, match=r"measure\.x mixes settings: 2 rows with aa, 1 row with bb; "
                       r"recompute the stale rows with `study measure STUDY.toml --stale`, or pass --allow-mixed"):
        check_settings(mixed)
    check_settings(mixed, allow_mixed=True)
    check_settings(mixed, ["measure.y"])
    old = frame(**{"measure.x": [1.0, 2.0]})  # written before hashes: one setting, "unknown"
    assert settings_counts(old, "measure.x") == {UNKNOWN: 2}
    check_settings(old)
    both = frame(**{"measure.x": [1.0, 2.0, 3.0], "measure_cfg.x": [None, None, "aa"]})
    with pytest.raises(MixedSettingsError, match="2 rows with unknown, 1 row with aa"):
        check_settings(both)
    # datasets ranked apart may differ; ranked together (dataset axis) they may not
    two = frame(**{"dataset": ["d1", "d1", "d2", "d2"], "measure.x": [1.0, 2.0, 3.0, 4.0],
                   "measure_cfg.x": ["aa", "aa", "bb", "bb"]})
    check_settings(two)
    with pytest.raises(MixedSettingsError, match="2 rows with aa, 2 rows with bb"):
        check_settings(two, dataset_axis=True)


def test_tiny_study_writes_hashes_status_lists_stale_and_rank_refuses_mixed(tmp_path, capsys):
    include = f'["{M}", "params"]'
    path = write_study(tmp_path, include=include)
    study = load_study(path)
    assert run_study(study, Executor(serial=True, progress=False)).ok == 4
    runs = tmp_path / "out" / "tiny" / "runs"
    df = pl.read_parquet(runs / "*.parquet")
    want = expected_settings(select([M, "params"]), {}, 0)
    for n, h in want.items():
        assert df[f"measure_cfg.{n}"].dtype == pl.String and df[f"measure_cfg.{n}"].to_list() == [h] * 4
    assert study_main(["status", str(path)]) == 0
    assert "measures: all 2 up to date in the 4 ok rows" in capsys.readouterr().out

    # the study file's knob changes: the measure that reads it is stale in every row; one added is missing
    path = write_study(tmp_path, include=f'["{M}", "params", "path_norm"]',
                       extra="\n[measures.knobs]\nspec_op_rtol = 0.01\n")
    assert study_main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.startswith("  ") and "=" not in ln}
    assert lines[M] == ["4", "0"] and lines["path_norm"] == ["0", "4"] and "params" not in lines
    assert f"study measure {path} --stale" in out and "--missing" in out

    # rank refuses a column whose rows mix settings, and ranks it with --allow-mixed
    assert analysis_main(["rank", str(runs), "--boots", "0"]) == 0
    f = sorted(runs.glob("*.parquet"))[0]
    t = pq.read_table(f).to_pylist()[0]
    t[f"measure_cfg.{M}"] = "0123456789ab"
    pq.write_table(pl.DataFrame([t], infer_schema_length=None).to_arrow(), f)
    capsys.readouterr()
    assert analysis_main(["rank", str(runs), "--boots", "0"]) == 2
    err = capsys.readouterr().err
    assert f"measure.{M} mixes settings: 3 rows with {want[M]}, 1 row with 0123456789ab" in err
    assert "--allow-mixed" in err and "study measure STUDY.toml --stale" in err
    assert analysis_main(["report", str(runs), "--out", str(tmp_path / "r.html"), "--boots", "0"]) == 2
    assert "mixes settings" in capsys.readouterr().err
    assert analysis_main(["rank", str(runs), "--boots", "0", "--allow-mixed"]) == 0
    assert M in capsys.readouterr().out
