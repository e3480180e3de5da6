"""The study end to end: rows, reruns, failures, and interruptions (SIGINT, SIGKILL)."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from study.executor import Executor
from study.jobs.run import run_study
from study.spec import load_study
from study.storage import Store
from tests.studyfiles import write_study


def run_files(out: Path, name="tiny") -> list[Path]:
    return sorted((out / name / "runs").glob("*"))


def test_serial_study_writes_one_whole_row_per_run(tmp_path):
    study = load_study(write_study(tmp_path))
    s = run_study(study, Executor(serial=True, progress=False))
    assert (s.ran, s.ok, s.failed) == (4, 4, 0)
    files = run_files(tmp_path / "out")
    assert sorted(f.stem for f in files) == sorted(r.run_id for r in study.runs())
    df = pl.read_parquet(tmp_path / "out" / "tiny" / "runs" / "*.parquet")
    for col in ("run_id", "study", "dataset", "model", "seed", "hp.width", "hp.lr", "hp.batch_size",
                "train_acc", "test_acc", "train_loss", "test_loss", "gap", "loss_gap", "converged",
                "diverged", "steps", "epochs", "train_seconds", "n_train", "n_test", "status", "error",
                "config", "versions", "device", "host", "started_at", "finished_at",
                "measure.params", "seconds.params", "measure.path_norm", "measure.step_size_sum"):
        assert col in df.columns, col
    assert df["hp.width"].dtype == pl.Int64 and df["hp.lr"].dtype == pl.Float64
    assert (df["gap"] - (df["train_acc"] - df["test_acc"])).abs().max() < 1e-12
    assert df["n_train"].unique().to_list() == [300]
    # trained to the target: the stop overshoots it by at most ~10% (checked every 1/10 epoch)
    conv = df.filter(pl.col("converged"))
    assert len(conv) >= 3
    assert (conv["train_loss"] <= 0.05).all() and (conv["train_loss"] >= 0.05 * 0.8).all()
    # a rerun trains nothing
    again = run_study(study, Executor(serial=True, progress=False))
    assert again.ran == 0 and again.stored_before == 4


def test_same_seed_same_result_on_cpu(tmp_path):
    rows = []
    for i in range(2):
        study = load_study(write_study(tmp_path, name=f"rep{i}",
                                       grid="width = [16]\nlr = [0.1]\nbatch_size = [64]"))
        run_study(study, Executor(serial=True, progress=False))
        rows.append(pl.read_parquet(tmp_path / "out" / f"rep{i}" / "runs" / "*.parquet"))
    cols = [c for c in rows[0].columns if c.startswith("measure.")] + ["train_loss", "test_acc", "steps"]
    a, b = rows[0].select(cols).row(0), rows[1].select(cols).row(0)
    assert all((x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def test_failed_and_diverged_runs_write_their_row(tmp_path):
    # lr 1e4 diverges
    study = load_study(write_study(tmp_path, grid="width = [16]\nlr = [10000.0]\nbatch_size = [64]"))
    s = run_study(study, Executor(serial=True, progress=False))
    assert s.diverged == 1
    row = pl.read_parquet(run_files(tmp_path / "out")[0])
    assert row["status"][0] == "diverged" and "NaN or infinite" in row["error"][0]
    assert math.isnan(row["measure.params"][0])
    # a rerun leaves it alone; --retry-failed runs it again
    assert run_study(study, Executor(serial=True, progress=False)).ran == 0
    assert run_study(study, Executor(serial=True, progress=False), retry_failed=True).ran == 1
    assert len(run_files(tmp_path / "out")) == 1
    # a dataset that is absent on the worker fails the run, and the row says how to get it
    p = write_study(tmp_path, name="absent", grid="width = [16]\nlr = [0.1]\nbatch_size = [64]")
    p.write_text(p.read_text().replace('"digits"', '"mnist"').replace(
        "[data]", f"[data]\nroot = \"{tmp_path / 'nodata'}\"\ndownload = false"))
    s = run_study(load_study(p), Executor(serial=True, progress=False))
    assert s.failed == 1 and "mnist" in s.failures[0]
    row = pl.read_parquet(run_files(tmp_path / "out", "absent")[0])
    assert row["status"][0] == "failed" and "DatasetUnavailable" in row["error"][0]


def test_ray_study_and_cli_status(tmp_path):
    p = write_study(tmp_path, seeds="[0, 1]")
    r = subprocess.run([sys.executable, "-m", "study", "run", str(p), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ran 8 (8 ok, 0 failed, 0 diverged)" in r.stdout and str(tmp_path / "out") in r.stdout
    assert len(run_files(tmp_path / "out")) == 8
    st = subprocess.run([sys.executable, "-m", "study", "status", str(p)], capture_output=True,
                        text=True, timeout=120)
    assert "8 runs: 8 done, 0 failed, 0 diverged, 0 left" in st.stdout
    assert "lr = 0.2" in st.stdout
    t0 = time.perf_counter()
    again = subprocess.run([sys.executable, "-m", "study", "run", str(p)], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert time.perf_counter() - t0 < 30
    c = subprocess.run([sys.executable, "-m", "study", "consolidate", str(p)], capture_output=True,
                       text=True, timeout=120)
    assert "8 rows consolidated" in c.stdout
    assert pq.read_table(tmp_path / "out" / "tiny" / "runs.parquet").num_rows == 8


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_study_resumes_with_every_run_once(tmp_path, sig):
    grid = "width = [8, 16, 24, 32]\nlr = [0.1, 0.2]\nbatch_size = [64]"
    p = write_study(tmp_path, grid=grid, seeds="[0]")  # 8 runs
    cmd = [sys.executable, "-m", "study", "run", str(p), "--no-progress", "--serial"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "out" / "tiny" / "runs"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(runs.glob("*.parquet"))) < 3:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in out
    # only whole files: every stored file reads, and none is a leftover temporary
    for f in runs.glob("*.parquet"):
        assert pq.read_table(f).num_rows == 1
    stored = len(list(runs.glob("*.parquet")))
    assert 3 <= stored < 8
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    study = load_study(p)
    files = sorted(runs.iterdir())
    assert sorted(f.name for f in files) == sorted(f"{s.run_id}.parquet" for s in study.runs())
    assert Store(str(tmp_path / "out"), "tiny").statuses() == {s.run_id: "ok" for s in study.runs()}
    assert f"ran {8 - stored} " in r.stdout
