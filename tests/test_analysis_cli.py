"""The rank command line and the loader: sources, output formats, columns, bad input, no torch/ray."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from analysis.cli import main
from analysis.load import axis_columns, load_runs, measure_columns, population, read_runs, split_datasets
from analysis.synthetic import synthetic_runs
from analysis.table import table_columns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AXES = ["lr", "depth", "width"]


def write_run_files(df: pl.DataFrame, runs_dir) -> None:
    """One Parquet file per row, as the study writes them, plus a writer's hidden temporary file."""
    os.makedirs(runs_dir, exist_ok=True)
    for i in range(df.height):
        row = df[i]
        pq.write_table(row.to_arrow(), os.path.join(runs_dir, f"{row['run_id'][0]}.parquet"))
    with open(os.path.join(runs_dir, ".tmp-abc-123"), "wb") as f:
        f.write(b"half a parquet file")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study folder with runs/ (81 rows: 3 axes × 3 values × 3 seeds, some failed or unconverged)."""
    base = tmp_path_factory.mktemp("out") / "mini"
    df = synthetic_runs(81, 4, n_axes=3, seed=1, nan_frac=0.1, failed_frac=0.05, unconverged_frac=0.05)
    write_run_files(df, base / "runs")
    return base, df


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_rank_on_a_runs_folder_writes_the_table(study, tmp_path, capsys):
    base, df = study
    out = tmp_path / "table.csv"
    code, stdout, err = run_cli(capsys, "rank", base / "runs", "--out", out, "--boots", 3)
    assert code == 0, err
    assert f"wrote {out}" in stdout and "m00" in stdout
    table = pl.read_csv(out)
    assert table.columns == table_columns(AXES)
    assert sorted(table["measure"].to_list()) == ["m00", "m01", "m02", "m03"]
    pop = df.filter((pl.col("status") == "ok") & pl.col("converged"))
    for name in ["m00", "m01"]:
        expect = int(pop[f"measure.{name}"].is_finite().sum())
        assert table.filter(pl.col("measure") == name)["n_models"].item() == expect


def test_consolidated_file_and_study_folder_give_the_same_table(study, tmp_path, capsys):
    base, df = study
    cons = tmp_path / "runs.parquet"
    df.write_parquet(cons)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert run_cli(capsys, "rank", cons, "--out", a, "--boots", 2)[0] == 0
    assert run_cli(capsys, "rank", base, "--out", b, "--boots", 2)[0] == 0  # the study folder: reads runs/
    ta, tb = pl.read_parquet(a), pl.read_parquet(b)
    assert ta.columns == table_columns(AXES)
    assert ta.equals(tb)


def test_study_folder_prefers_a_fresh_consolidated_file(study, tmp_path):
    base, df = study
    folder = tmp_path / "s"
    write_run_files(df.head(10), folder / "runs")
    df.write_parquet(folder / "runs.parquet")  # newer than every run file: read instead of runs/
    assert read_runs(str(folder)).height == df.height
    os.utime(folder / "runs.parquet", (0, 0))  # now stale: runs/ is read, with a warning
    with pytest.warns(UserWarning, match="older than some run files"):
        assert read_runs(str(folder)).height == 10


def test_file_uri_and_options(study, tmp_path, capsys):
    base, _ = study
    out = tmp_path / "t.csv"
    code, stdout, err = run_cli(capsys, "rank", f"file://{base}/runs", "--out", out, "--boots", 0,
                                "--max-cond", 1, "--include-unconverged", "--robust-n", 100000, "--min-ess", 2)
    assert code == 0, err
    table = pl.read_csv(out, infer_schema_length=None)
    assert table["cmi_k2"].null_count() == table.height  # nothing of size 2 with --max-cond 1
    assert table["tau_lo"].null_count() == table.height  # no bootstrap
    assert (table["robust_envs"] > 0).any()


def test_rows_with_different_columns_are_stacked(tmp_path, capsys):
    df = synthetic_runs(27, 2, n_axes=3, seed=2)
    runs = tmp_path / "runs"
    write_run_files(df.head(20), runs)
    write_run_files(df.slice(20).drop("measure.m01").with_columns(pl.lit(1.0).alias("measure.extra")), runs)
    full = load_runs(str(runs))
    assert full.height == 27 and full["measure.m01"].null_count() == 7
    assert full["measure.extra"].null_count() == 20
    code, _, err = run_cli(capsys, "rank", runs, "--out", tmp_path / "t.csv", "--boots", 0)
    assert code == 0, err
    table = pl.read_csv(tmp_path / "t.csv")
    counts = dict(zip(table["measure"], table["n_models"]))
    assert counts == {"m00": 27, "m01": 20, "extra": 7}


def test_two_datasets_give_one_table_each(tmp_path, capsys):
    a = synthetic_runs(27, 2, n_axes=3, dataset="digits", seed=3)
    b = synthetic_runs(27, 2, n_axes=3, dataset="xor", seed=4)
    pl.concat([a, b]).write_parquet(tmp_path / "runs.parquet")
    code, _, err = run_cli(capsys, "rank", tmp_path / "runs.parquet", "--out", tmp_path / "t.csv", "--boots", 0)
    assert code == 0, err
    t = pl.read_csv(tmp_path / "t.csv")
    assert t.height == 4 and sorted(set(t["dataset"])) == ["digits", "xor"]
    code, _, err = run_cli(capsys, "rank", tmp_path / "runs.parquet", "--out", tmp_path / "u.csv", "--boots", 0,
                           "--dataset-axis")
    assert code == 0, err
    u = pl.read_csv(tmp_path / "u.csv")
    assert u.height == 2 and u["dataset"].to_list() == ["digits+xor"] * 2 and "psi_dataset" in u.columns


def test_corrupt_file_is_named_or_skipped(study, tmp_path, capsys):
    _, df = study
    runs = tmp_path / "runs"
    write_run_files(df.head(30), runs)
    with open(runs / "broken.parquet", "wb") as f:
        f.write(b"PAR1 truncated")
    code, _, err = run_cli(capsys, "rank", runs, "--boots", 0)
    assert code == 2 and "broken.parquet" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "rank", runs, "--boots", 0, "--skip-corrupt")
    assert code == 0 and "warning" in err and "broken.parquet" in err


@pytest.mark.parametrize("case, message", [
    ("missing", "no such runs folder or file"),
    ("empty", "no run files"),
    ("all_failed", "ok and converged"),
    ("no_axes", "no hp.* columns"),
    ("no_measures", "no measure.* columns"),
    ("bad_ext", ".csv or .parquet"),
    ("corrupt_consolidated", "cannot read"),
])
def test_bad_input_is_one_error_line_and_status_2(case, message, tmp_path, capsys):
    df = synthetic_runs(9, 2, n_axes=2)
    src = tmp_path / "runs.parquet"
    out = tmp_path / "t.csv"
    if case == "missing":
        src = tmp_path / "nowhere"
    elif case == "empty":
        src = tmp_path / "runs"
        os.makedirs(src)
    elif case == "all_failed":
        df.with_columns(pl.lit("failed").alias("status")).write_parquet(src)
    elif case == "no_axes":
        df.drop("hp.lr", "hp.depth").write_parquet(src)
    elif case == "no_measures":
        df.drop("measure.m00", "measure.m01").write_parquet(src)
    elif case == "corrupt_consolidated":
        df.write_parquet(src)
        data = open(src, "rb").read()
        with open(src, "wb") as f:
            f.write(data[: len(data) // 2])  # truncated
    else:
        df.write_parquet(src)
        out = tmp_path / "t.xlsx"
    code, stdout, err = run_cli(capsys, "rank", src, "--out", out)
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out)


def test_report_dispatches_to_write_report(monkeypatch, tmp_path, capsys):
    calls = []
    fake = types.ModuleType("analysis.report")
    fake.write_report = lambda runs, out, **options: calls.append((runs, out, options))
    monkeypatch.setitem(sys.modules, "analysis.report", fake)
    code, stdout, _ = run_cli(capsys, "report", "some/runs", "--out", tmp_path / "r.html", "--boots", 5,
                              "--max-cond", 1)
    assert code == 0 and "wrote" in stdout
    assert calls == [("some/runs", str(tmp_path / "r.html"), {"n_boot": 5, "max_cond": 1})]


def test_module_entry_point_runs(study, tmp_path):
    base, _ = study
    out = tmp_path / "t.parquet"
    proc = subprocess.run([sys.executable, "-m", "analysis", "rank", str(base / "runs"), "--out", str(out),
                           "--boots", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert pl.read_parquet(out).columns == table_columns(AXES)


def test_analysis_does_not_import_torch_or_ray():
    code = ("import sys, study.schema; bad = [m for m in ('torch', 'ray', 'polars') if m in sys.modules]; "
            "import analysis.table, analysis.cli, analysis.load, analysis.stats, analysis.synthetic, analysis.score; "
            "bad += [m for m in ('torch', 'ray') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_table_is_sorted_by_cmi(study, tmp_path, capsys):
    base, _ = study
    assert run_cli(capsys, "rank", base / "runs", "--out", tmp_path / "t.parquet", "--boots", 0)[0] == 0
    cmi = pl.read_parquet(tmp_path / "t.parquet")["cmi"].fill_nan(None).drop_nulls().to_numpy()
    assert np.all(np.diff(cmi) <= 0)


def test_population_and_column_helpers():
    df = pl.DataFrame({"status": ["ok", "ok", "failed", "ok"], "converged": [True, False, False, None],
                       "hp.lr": [0.1, 0.2, 0.1, 0.2], "measure.a": [1.0, 2.0, 3.0, 4.0], "measure.b": ["x"] * 4,
                       "dataset": ["d1", "d1", "d2", None], "gap": [0.1] * 4})
    assert population(df).height == 1
    assert population(df, include_unconverged=True).height == 3  # a null `converged` is not converged
    assert population(df, include_unconverged=True, include_failed=True).height == 4
    assert axis_columns(df) == ["hp.lr"] and measure_columns(df) == ["measure.a"]  # text is no measure
    parts = split_datasets(df)
    assert [(name, part.height) for name, part in parts] == [("d1", 2), ("d2", 1), ("unknown", 1)]
    (name, whole), = split_datasets(df, dataset_axis=True)
    assert name == "d1+d2+unknown" and whole["hp.dataset"].to_list() == ["d1", "d1", "d2", "unknown"]


def test_rank_warns_on_a_small_study_and_prints_only_columns_with_values(tmp_path, capsys):
    df = synthetic_runs(4, 6, n_axes=2, n_values=2, seed=1)  # 4 networks, one seed
    write_run_files(df, tmp_path / "runs")
    out = tmp_path / "t.csv"
    code, stdout, err = run_cli(capsys, "rank", tmp_path / "runs", "--boots", 0, "--out", out)
    assert code == 0, err
    assert ("warning: dataset synthetic: too small to rank the measures with confidence: 4 networks are "
            "analysed (fewer than 20); 1 seed (fewer than 2)") in err
    header = next(line for line in stdout.splitlines() if line.startswith("measure")).split()
    assert header == ["measure", "n_models", "tau", "psi", "cmi", "cmi_set"]  # no intervals, repeats, environments
    assert pl.read_csv(out).columns == table_columns(["lr", "depth"])  # the file keeps every column
    code, _, err = run_cli(capsys, "rank", tmp_path / "runs", "--boots", 0, "-q")
    assert code == 0 and err == ""


def test_rank_warns_when_the_gap_is_mostly_seed_noise(tmp_path, capsys):
    df = synthetic_runs(27 * 4, 3, n_axes=3, n_values=3, seed=2)
    noise = np.random.default_rng(0).normal(0.0, 0.5, df.height)  # seeds disagree far more than configurations
    write_run_files(df.with_columns(gap=pl.col("gap") + pl.Series(noise)), tmp_path / "runs")
    code, stdout, err = run_cli(capsys, "rank", tmp_path / "runs", "--boots", 0)
    assert code == 0, err
    assert "too small" not in err
    assert "warning: dataset synthetic: the gap is mostly seed and test noise: ICC" in err
    assert "seeds per configuration" in err or "no number of seeds" in err
